package myri10ge

import "testing"

// The Status names are the firmware's (MXGEFW_CMD_*), as the driver's
// messages and our logs print them; a value without one prints as Status(n).
func TestStatusNames(t *testing.T) {
	for v, want := range []string{"OK", "UNKNOWN", "ERROR_RANGE", "ERROR_BUSY", "ERROR_EMPTY", "ERROR_CLOSED",
		"ERROR_HASH_ERROR", "ERROR_BAD_PORT", "ERROR_RESOURCES", "ERROR_MULTICAST", "ERROR_UNALIGNED", "Status(11)"} {
		if got := Status(v).String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", v, got, want)
		}
	}
	if got := StatusNoResponse.String(); got != "Status(4294967295)" {
		t.Errorf("StatusNoResponse.String() = %q", got)
	}
}
