package myritest

import "testing"

// The name tables are indexed by number: a name missing or added in the
// middle shifts every later one, which the last entries of each table and
// the first numbers past them show.
func TestABINames(t *testing.T) {
	tests := []struct {
		v    interface{ String() string }
		want string
	}{
		{CmdReset, "RESET"},
		{Cmd(2), "GET_MCP_VERSION"}, // never sent by the driver
		{CmdSetStatsDMAObsolete, "SET_STATS_DMA_OBSOLETE"},
		{CmdLeaveAllMulticast, "LEAVE_ALL_MULTICAST_GROUPS"},
		{CmdSetRSSMCPSlotType, "SET_RSS_MCP_SLOT_TYPE"},
		{CmdGetDCAOffset, "GET_DCA_OFFSET"},
		{Cmd(64), "RELAX_RXBUFFER_ALIGNMENT"},
		{Cmd(65), "CMD_65"},
		{StatusOK, "OK"},
		{StatusErrorMulticast, "ERROR_MULTICAST"},
		{StatusErrorUnaligned, "ERROR_UNALIGNED"},
		{Status(14), "ERROR_BAD_PCIE_LINK"},
		{Status(15), "Status(15)"},
		{StatusNoResponse, "NO_RESPONSE"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%T %d is %q, want %q", tt.v, tt.v, got, tt.want)
		}
	}
}
