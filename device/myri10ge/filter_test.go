package myri10ge

import (
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// TestRxFilterView: RxFilter shows what the filter commands left, as
// query-rx-filter reports it: allmulti after reset, then the driver's
// set_rx_mode sequence (ALLMULTI on, LEAVE_ALL, JOIN each, ALLMULTI off).
func TestRxFilterView(t *testing.T) {
	r := newRig(t, 1)
	f := r.nic.RxFilter()
	if !f.AllMulti || f.Promisc || len(f.Multicast) != 0 || f.MAC.String() != testMAC {
		t.Errorf("after reset: %+v, want allmulti, no groups, MAC %s", f, testMAC)
	}
	r.mustCmd(abi.CmdEnableAllMulti, 0, 0, 0)
	r.mustCmd(abi.CmdJoinMulticastGroup, 0x33330000, 0x00010000, 0) // joined before LEAVE_ALL: forgotten
	r.mustCmd(abi.CmdLeaveAllMulticast, 0, 0, 0)
	for _, g := range [][2]uint32{{0x3333ff00, 0x00020000}, {0x01005e00, 0x00010000}, {0x33330000, 0x00010000}} {
		r.mustCmd(abi.CmdJoinMulticastGroup, g[0], g[1], 0)
	}
	r.mustCmd(abi.CmdLeaveMulticastGroup, 0x33330000, 0x00010000, 0)
	r.mustCmd(abi.CmdDisableAllMulti, 0, 0, 0)
	r.mustCmd(abi.CmdEnablePromisc, 0, 0, 0)
	f = r.nic.RxFilter()
	if got, want := fmt.Sprint(f.Multicast), "[01:00:5e:00:00:01 33:33:ff:00:00:02]"; got != want || f.AllMulti || !f.Promisc {
		t.Errorf("groups %s allmulti %v promisc %v, want %s, false, true", got, f.AllMulti, f.Promisc, want)
	}
	// A copy: the caller's edits do not reach the NIC.
	f.Multicast[0][0] = 0xFF
	f.MAC[0] = 0xFF
	if g := r.nic.RxFilter(); g.Multicast[0][0] != 0x01 || g.MAC.String() != testMAC {
		t.Errorf("RxFilter shares memory with the NIC: %+v", g)
	}
}
