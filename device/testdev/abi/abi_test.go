package abi

import "testing"

// The names are part of the log and error text users grep for.
func TestNames(t *testing.T) {
	tests := []struct {
		v    interface{ String() string }
		want string
	}{
		{Op(0), "Op(0)"},
		{OpCopy, "copy"},
		{OpFill, "fill"},
		{OpChecksum, "checksum"},
		{OpWindowToGuest, "window-to-guest"},
		{OpGuestToWindow, "guest-to-window"},
		{Op(6), "Op(6)"},
		{Op(0xffffffff), "Op(4294967295)"},
		{CauseNone, "none"},
		{CauseBadOp, "bad-op"},
		{CauseBadLength, "bad-length"},
		{CauseWindowRange, "window-range"},
		{CauseBusMaster, "bus-master-off"},
		{CauseUnmapped, "unmapped"},
		{CauseReadOnly, "read-only"},
		{CauseNotRegistered, "not-registered"},
		{CauseDMAFailed, "dma-failed"},
		{CauseNotReadable, "not-readable"},
		{Cause(10), "Cause(10)"},
		{Cause(255), "Cause(255)"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%T %d: String() = %q, want %q", tt.v, tt.v, got, tt.want)
		}
	}
}
