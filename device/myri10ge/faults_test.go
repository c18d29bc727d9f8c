package myri10ge

import (
	"encoding/binary"
	"testing"
	"time"

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
func (r *rig) cmdMayTimeOut(c Cmd) (uint32, Status) {
	r.t.Helper()
	binary.BigEndian.PutUint32(r.ram.Bytes()[respAddr+4:], uint32(StatusNoResponse))
	var blk [blockSize]byte
	binary.BigEndian.PutUint32(blk[cmdOffCmd:], uint32(c))
	binary.BigEndian.PutUint32(blk[cmdOffRespLo:], respAddr)
	for i := 0; i < blockSize; i += 8 {
		r.write(offCmd+uint64(i), blk[i:i+8])
	}
	return r.ramBE32(respAddr), Status(r.ramBE32(respAddr + 4))
}

func TestFWDoorCommands(t *testing.T) {
	tests := []struct {
		rule       string
		cmd        Cmd
		wantStatus Status
		wantReply  uint32
		checkReply bool
	}{
		{"r: fw.cmd=timeout; opcode=GET_RX_RING_SIZE", CmdGetRxRingSize, StatusNoResponse, 0, false},
		{"r: fw.cmd=error(range); opcode=MXGEFW_CMD_GET_RX_RING_SIZE", CmdGetRxRingSize, StatusErrorRange, 0, false},
		{"r: fw.cmd=error(unknown)", CmdGetRxRingSize, StatusUnknown, 0, false},
		{"r: fw.caps=lie(value=512)", CmdGetRxRingSize, StatusOK, 512, true},
		{"r: fw.dmatest=fail", CmdDMATest, StatusErrorBusy, 0, false},
		{"r: fw.cmd=timeout; opcode=SET_MTU", CmdGetRxRingSize, StatusOK, rxRingBytes, true}, // no match
	}
	for _, tt := range tests {
		r := newRig(t, 1)
		set := r.armFaults(tt.rule)
		reply, status := r.cmdMayTimeOut(tt.cmd)
		if status != tt.wantStatus || tt.checkReply && reply != tt.wantReply {
			t.Errorf("%s: %v reply %d, want %v reply %d", tt.rule, status, reply, tt.wantStatus, tt.wantReply)
		}
		if _, total := set.Recent(); (total == 1) == (tt.rule == "r: fw.cmd=timeout; opcode=SET_MTU") {
			t.Errorf("%s: %d firings", tt.rule, total)
		}
	}
}

// fw.cmd.slow: no response at first, the command's own after the delay.
func TestFWDoorSlowCommand(t *testing.T) {
	r := newRig(t, 1)
	r.armFaults("r: fw.cmd=slow(delay=50ms); once")
	if _, status := r.cmdMayTimeOut(CmdGetRxRingSize); status != StatusNoResponse {
		t.Fatalf("immediate status %v, want no response yet", status)
	}
	deadline := time.Now().Add(30 * time.Second)
	for Status(r.ramBE32(respAddr+4)) == StatusNoResponse && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s, d := Status(r.ramBE32(respAddr+4)), r.ramBE32(respAddr); s != StatusOK || d != rxRingBytes {
		t.Errorf("late response %v %d, want OK %d", s, d, rxRingBytes)
	}
}

// A slow response pending at detach never lands.
func TestFWDoorSlowCancelledByDetach(t *testing.T) {
	r := newRig(t, 1)
	r.armFaults("r: fw.cmd=slow(delay=30ms); once")
	r.cmdMayTimeOut(CmdGetRxRingSize)
	r.nic.Detach()
	time.Sleep(100 * time.Millisecond)
	if s := Status(r.ramBE32(respAddr + 4)); s != StatusNoResponse {
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
		var blk [blockSize]byte
		binary.BigEndian.PutUint32(blk[0:], 0)       // address high
		binary.BigEndian.PutUint32(blk[4:], confirm) // address low
		binary.BigEndian.PutUint32(blk[8:], 0xffffffff)
		for i := 0; i < blockSize; i += 8 {
			r.write(offDummyRDMA+uint64(i), blk[i:i+8])
		}
		got := r.ramBE32(confirm)
		if armed && got != 0 || !armed && got != 0xffffffff {
			t.Errorf("armed %v: confirmation word %#x", armed, got)
		}
	}
}
