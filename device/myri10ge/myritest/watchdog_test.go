package myritest

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWatchdogTxStuck: a packet left uncompleted for two ticks makes the
// watchdog reset the NIC: close, adopt again, open (§7.4).
func TestWatchdogTxStuck(t *testing.T) {
	d, fd, _ := upDriver(t, fakeOpts{}, Options{})
	ctx := testCtx(t)
	fd.noTx = true
	if err := d.Xmit(0, FramePacket(testFrame(100))); err != nil {
		t.Fatal(err)
	}
	var ticks []bool
	for range 2 {
		r, err := d.WatchdogTick()
		if err != nil {
			t.Fatal(err)
		}
		ticks = append(ticks, r)
	}
	if diff := cmp.Diff([]bool{false, true}, ticks); diff != "" {
		t.Fatalf("reset needed per tick (-want +got):\n%s", diff)
	}
	fd.noTx = false
	fd.clearLogs()
	if err := d.WatchdogReset(ctx); err != nil {
		t.Fatal(err)
	}
	want := cat([]Cmd{CmdEthernetDown, CmdGetMaxTSO6HdrSize, CmdGetRxRingSize}, resetSeq, rxModeSeq, ringSeq, rxModeSeq)
	if diff := cmp.Diff(want, fd.commands()); diff != "" {
		t.Errorf("watchdog reset commands (-want +got):\n%s", diff)
	}
	if !slices.ContainsFunc(d.Complaints(), func(s string) bool { return s == "warn: slice 0: TX stuck false 1 0 1 0 0" }) {
		t.Errorf("complaints %q lack the TX stuck warning", d.Complaints())
	}
	if got := d.Stats().TxDropped; got != 1 {
		t.Errorf("TxDropped %d, want the stuck packet", got)
	}
}

// TestWatchdogRebooted: bus mastering off reads as a NIC that rebooted:
// REBOOT_STATUS through the vendor capability, close without
// ETHERNET_DOWN, Command restored, open again; only once.
func TestWatchdogRebooted(t *testing.T) {
	d, fd, _ := upDriver(t, fakeOpts{}, Options{})
	ctx := testCtx(t)
	fd.cfg[pciCommand] &^= pciCommandMaster
	if r, err := d.WatchdogTick(); err != nil || !r {
		t.Fatalf("tick with MASTER clear: reset %v, %v", r, err)
	}
	fd.clearLogs()
	if err := d.WatchdogReset(ctx); err != nil {
		t.Fatal(err)
	}
	if fd.cfg[0x60+0x10] != 3 || fd.cfg[0x60+0x18] != 0xf0 {
		t.Errorf("vendor window: mode %#x address %#x, want 3 and 0xfffffff0", fd.cfg[0x70], fd.cfg[0x78])
	}
	if fd.cfg[pciCommand]&pciCommandMaster == 0 {
		t.Error("Command.MASTER not restored")
	}
	if cmds := fd.commands(); cmds[0] != CmdGetMaxTSO6HdrSize {
		t.Errorf("first command after a reboot %s, want the adopt's GET_MAX_TSO6_HDR_SIZE (no ETHERNET_DOWN)", cmds[0])
	}
	fd.cfg[pciCommand] &^= pciCommandMaster
	fd.clearLogs()
	if err := d.WatchdogReset(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(fd.commands()); n != 0 {
		t.Errorf("second reboot: %d commands, want none (myri10ge_reset_recover spent)", n)
	}
}
