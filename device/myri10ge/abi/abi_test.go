package abi

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

// The command numbers follow the driver's enum from NONE = 0; a few of them
// pinned from the reference, so an entry added or dropped in the middle
// of the list shows.
func TestCmdNumbers(t *testing.T) {
	for _, tt := range []struct {
		c    Cmd
		num  uint32
		name string
	}{
		{CmdReset, 1, "RESET"}, {CmdSetMTU, 16, "SET_MTU"}, {CmdDMATest, 25, "DMA_TEST"},
		{CmdSetStatsDMAV2, 31, "SET_STATS_DMA_V2"}, {CmdSetTSOMode, 45, "SET_TSO_MODE"},
		{CmdGetDCAOffset, 56, "GET_DCA_OFFSET"}, {57, 57, "CMD_57"},
	} {
		if uint32(tt.c) != tt.num || tt.c.String() != tt.name {
			t.Errorf("%v = %d, want %s = %d", tt.c, uint32(tt.c), tt.name, tt.num)
		}
	}
}
