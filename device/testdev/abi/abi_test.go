package abi

import "testing"

// The names are part of the log and error text users grep for; a value
// without one prints as Type(n).
func TestNames(t *testing.T) {
	for v, want := range []string{"Op(0)", "copy", "fill", "checksum", "window-to-guest", "guest-to-window", "Op(6)"} {
		if got := Op(v).String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", v, got, want)
		}
	}
	if got := Op(0xffffffff).String(); got != "Op(4294967295)" {
		t.Errorf("Op(0xffffffff).String() = %q", got)
	}
	for v, want := range []string{"none", "bad-op", "bad-length", "window-range", "bus-master-off",
		"unmapped", "read-only", "not-registered", "dma-failed", "not-readable", "Cause(10)"} {
		if got := Cause(v).String(); got != want {
			t.Errorf("Cause(%d).String() = %q, want %q", v, got, want)
		}
	}
	if got := Cause(255).String(); got != "Cause(255)" {
		t.Errorf("Cause(255).String() = %q", got)
	}
}
