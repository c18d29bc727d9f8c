package myri10ge

import "testing"

// The Status names are the firmware's (MXGEFW_CMD_*), as the driver's
// messages and our logs print them.
func TestStatusNames(t *testing.T) {
	tests := []struct {
		s    Status
		want string
	}{
		{StatusOK, "OK"},
		{StatusUnknown, "UNKNOWN"},
		{StatusErrorRange, "ERROR_RANGE"},
		{StatusErrorBusy, "ERROR_BUSY"},
		{StatusErrorEmpty, "ERROR_EMPTY"},
		{StatusErrorClosed, "ERROR_CLOSED"},
		{StatusErrorHash, "ERROR_HASH_ERROR"},
		{StatusErrorBadPort, "ERROR_BAD_PORT"},
		{StatusErrorResources, "ERROR_RESOURCES"},
		{StatusErrorMulticast, "ERROR_MULTICAST"},
		{StatusErrorUnaligned, "ERROR_UNALIGNED"},
		{Status(11), "Status(11)"},
		{StatusNoResponse, "Status(4294967295)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Status(%d).String() = %q, want %q", uint32(tt.s), got, tt.want)
		}
	}
}
