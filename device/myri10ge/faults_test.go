package myri10ge

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/fault/faulttest"
)

// armFaults gives the rig's NIC a fault set with rules armed.
func (r *rig) armFaults(rules ...string) *fault.Set {
	r.t.Helper()
	set := faulttest.Set(r.t, 1, rules...)
	r.nic.mu.Lock()
	r.nic.host.Fault = set
	r.nic.mu.Unlock()
	return set
}

// cmdMayTimeOut issues a command as rig.cmd does but accepts no response.
func (r *rig) cmdMayTimeOut(c abi.Cmd) (uint32, abi.Status) {
	r.t.Helper()
	binary.BigEndian.PutUint32(r.ram.Bytes()[respAddr+4:], uint32(abi.StatusNoResponse))
	var blk [abi.BlockSize]byte
	binary.BigEndian.PutUint32(blk[abi.CmdOffCmd:], uint32(c))
	binary.BigEndian.PutUint32(blk[abi.CmdOffRespLo:], respAddr)
	for i := 0; i < abi.BlockSize; i += 8 {
		r.write(abi.OffCmd+uint64(i), blk[i:i+8])
	}
	return r.ramBE32(respAddr), abi.Status(r.ramBE32(respAddr + 4))
}

func TestFWDoorCommands(t *testing.T) {
	tests := []struct {
		rule   string
		cmd    abi.Cmd
		status abi.Status
		reply  uint32 // checked when status is OK
		fires  bool   // the rule matches the command
	}{
		{"r: fw.cmd=timeout; opcode=GET_RX_RING_SIZE", abi.CmdGetRxRingSize, abi.StatusNoResponse, 0, true},
		{"r: fw.cmd=error(range); opcode=MXGEFW_CMD_GET_RX_RING_SIZE", abi.CmdGetRxRingSize, abi.StatusErrorRange, 0, true},
		{"r: fw.cmd=error(unknown)", abi.CmdGetRxRingSize, abi.StatusUnknown, 0, true},
		{"r: fw.caps=lie(value=512)", abi.CmdGetRxRingSize, abi.StatusOK, 512, true},
		{"r: fw.dmatest=fail", abi.CmdDMATest, abi.StatusErrorBusy, 0, true},
		{"r: fw.cmd=timeout; opcode=SET_MTU", abi.CmdGetRxRingSize, abi.StatusOK, rxRingBytes, false},
	}
	for _, tt := range tests {
		r := newRig(t, 1)
		set := r.armFaults(tt.rule)
		reply, status := r.cmdMayTimeOut(tt.cmd)
		if status != tt.status || status == abi.StatusOK && reply != tt.reply {
			t.Errorf("%s: %v reply %d, want %v reply %d", tt.rule, status, reply, tt.status, tt.reply)
		}
		want := uint64(0)
		if tt.fires {
			want = 1
		}
		if _, total := set.Recent(); total != want {
			t.Errorf("%s: %d firings, want %d", tt.rule, total, want)
		}
	}
}

// fw.cmd.slow: no response at first, the command's own after the delay.
func TestFWDoorSlowCommand(t *testing.T) {
	r := newRig(t, 1)
	r.armFaults("r: fw.cmd=slow(delay=50ms); once")
	if _, status := r.cmdMayTimeOut(abi.CmdGetRxRingSize); status != abi.StatusNoResponse {
		t.Fatalf("immediate status %v, want no response yet", status)
	}
	deadline := time.Now().Add(30 * time.Second)
	for abi.Status(r.ramBE32(respAddr+4)) == abi.StatusNoResponse && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s, d := abi.Status(r.ramBE32(respAddr+4)), r.ramBE32(respAddr); s != abi.StatusOK || d != rxRingBytes {
		t.Errorf("late response %v %d, want OK %d", s, d, rxRingBytes)
	}
}

// A slow response pending at detach never lands.
func TestFWDoorSlowCancelledByDetach(t *testing.T) {
	r := newRig(t, 1)
	r.armFaults("r: fw.cmd=slow(delay=30ms); once")
	r.cmdMayTimeOut(abi.CmdGetRxRingSize)
	r.nic.Detach()
	time.Sleep(100 * time.Millisecond)
	if s := abi.Status(r.ramBE32(respAddr + 4)); s != abi.StatusNoResponse {
		t.Errorf("response %v landed after detach", s)
	}
}

// dma.confirm.missing: the dummy RDMA confirmation word never lands.
func TestDMADoorConfirmMissing(t *testing.T) {
	for _, armed := range []bool{false, true} {
		r := newRig(t, 1)
		if armed {
			r.armFaults("r: dma.confirm=missing; once")
		}
		const confirm = 0x3000
		binary.BigEndian.PutUint32(r.ram.Bytes()[confirm:], 0)
		var blk [abi.BlockSize]byte
		binary.BigEndian.PutUint32(blk[0:], 0)       // address high
		binary.BigEndian.PutUint32(blk[4:], confirm) // address low
		binary.BigEndian.PutUint32(blk[8:], 0xffffffff)
		for i := 0; i < abi.BlockSize; i += 8 {
			r.write(abi.OffDummyRDMA+uint64(i), blk[i:i+8])
		}
		got := r.ramBE32(confirm)
		if armed && got != 0 || !armed && got != 0xffffffff {
			t.Errorf("armed %v: confirmation word %#x", armed, got)
		}
	}
}

// dma.write=drop; region=rx_done; slice=0 loses one receive completion:
// the frame's data lands, its rx_done slot stays empty (the driver stops
// there), the next frame's completion lands in the next slot. The buffer
// writes are not rx_done writes, and a rule for slice 1 never matches.
func TestDMADoorRxDoneDrop(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	set := r.armFaults("lost: dma.write=drop; region=rx_done; slice=0; once",
		"other: dma.write=drop; region=rx_done; slice=1")
	r.nic.mu.Lock()
	r.nic.host.Mem = dma.WithFaults(r.mem, set, "myri0")
	r.nic.mu.Unlock()
	r.nic.Deliver([][]byte{testFrame(testMAC, 100)})
	r.nic.Deliver([][]byte{testFrame(testMAC, 200)})
	if _, l := r.slot(0, 0); l != 0 {
		t.Errorf("slot 0 length %d, want 0 (its completion was dropped)", l)
	}
	if _, l := r.slot(0, 1); l != 200 {
		t.Errorf("slot 1 length %d, want 200", l)
	}
	if got := r.ram.Bytes()[bufAddr(0, false, 0)+abi.RxPad+14]; got != testFrame(testMAC, 100)[14] {
		t.Errorf("the first frame's data did not land")
	}
	want := []fault.RuleStatus{
		{ID: "lost", Rule: "lost: dma.write=drop; slice=0; region=rx_done; times=1", Matched: 2, Fired: 1, Left: 0},
		{ID: "other", Rule: "other: dma.write=drop; slice=1; region=rx_done", Matched: 0, Fired: 0, Left: -1},
	}
	if diff := cmp.Diff(want, set.Rules()); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if s := r.nic.Stats(); s.RxFrames != 2 || s.DMAErrors != 0 {
		t.Errorf("stats %+v: want 2 frames received, no DMA error (a dropped write is reported done)", s)
	}
}

// The error sink hears a slice halt (with the DMA and its error) once per
// halt, and a guest protocol violation with its value.
func TestErrorSink(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	var got []ErrorEvent
	r.nic.SetErrorSink(func(e ErrorEvent) { got = append(got, e) })
	r.postGroup(0, false, 5) // out of order: group 0 is next
	r.mem.SetBusMaster(false)
	r.nic.Deliver([][]byte{testFrame(testMAC, 100)})
	r.nic.Deliver([][]byte{testFrame(testMAC, 100)}) // the slice is halted: no second report
	r.mem.SetBusMaster(true)
	r.nic.SetErrorSink(nil)
	if len(got) != 2 {
		t.Fatalf("events %+v, want a guest error and a halt", got)
	}
	if e := got[0]; e.Kind != "guest-error" || e.Slice != -1 || e.What != "receive buffers posted out of order" || e.Detail != "group=5" {
		t.Errorf("guest error event %+v", e)
	}
	if e := got[1]; e.Kind != "slice-halt" || e.Slice != 0 || e.What != "receive buffer" || e.Detail == "" {
		t.Errorf("halt event %+v", e)
	}
	c := r.nic.Counters()
	if len(c.Slices) != 1 || !c.Slices[0].Halted || c.Stats.DMAErrors != 1 || c.Stats.GuestErrors != 1 {
		t.Errorf("counters %+v", c)
	}
}

// Counters reports the drop counters and each slice's indices.
func TestCountersPerSlice(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.nic.Deliver([][]byte{testFrame(testMAC, 100), testFrame("02:00:00:00:00:77", 100)})
	c := r.nic.Counters()
	want := SliceCounters{Slice: 0, SmallPosted: rxRingEntries, SmallFilled: 1, BigPosted: rxRingEntries,
		RxDone: 1, IRQTokenHome: false, RxTokenHome: false, RxDoneAnnounce: false}
	if diff := cmp.Diff([]SliceCounters{want}, c.Slices); diff != "" {
		t.Errorf("slices (-want +got):\n%s", diff)
	}
	if c.Drops.UnicastFiltered != 1 || c.Stats.RxFrames != 1 {
		t.Errorf("drops %+v, stats %+v", c.Drops, c.Stats)
	}
}

// fw.header.bad: the header written at the next power-on (or seen by the
// next client) claims another firmware type; the one after is good again.
func TestFWDoorHeaderBad(t *testing.T) {
	r := newRig(t, 1)
	set := r.armFaults("r: fw.header=bad; once")
	if got := r.read32(offHeader + abi.HdrOffType); got != abi.MCPTypeETH {
		t.Fatalf("mcp_type %#x before any power-on, want ETH", got)
	}
	r.nic.Reset()
	if got := r.read32(offHeader + abi.HdrOffType); got != mcpTypeBad {
		t.Errorf("mcp_type %#x after the power-on, want %#x", got, mcpTypeBad)
	}
	r.nic.Reset()
	if got := r.read32(offHeader + abi.HdrOffType); got != abi.MCPTypeETH {
		t.Errorf("mcp_type %#x after the next power-on, want ETH", got)
	}
	if _, total := set.Recent(); total != 1 {
		t.Errorf("%d firings, want 1", total)
	}
}
