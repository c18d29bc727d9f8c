package myri10ge

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// pauseFrame is a PAUSE from the link partner asking for quanta.
func pauseFrame(quanta uint16) []byte {
	f := make([]byte, 60)
	copy(f, []byte{0x01, 0x80, 0xc2, 0x00, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0xfe})
	binary.BigEndian.PutUint16(f[12:], etherTypeMACControl)
	binary.BigEndian.PutUint16(f[14:], macControlPause)
	binary.BigEndian.PutUint16(f[16:], quanta)
	return f
}

// sendOne posts one 60-byte frame at the send ring's index i and rings
// its doorbell, the driver's way.
func (r *rig) sendOne(i int) {
	r.t.Helper()
	const buf = 0x100000
	var d [abi.SendDescSize]byte
	binary.BigEndian.PutUint32(d[abi.SendOffAddrLow:], buf)
	binary.BigEndian.PutUint16(d[abi.SendOffLength:], 60)
	d[abi.SendOffRDMACount] = 1
	off := sendRingOff(0) + uint64(i%sendRingEntries)*abi.SendDescSize
	r.write(off, d[:12])
	d[abi.SendOffFlags] = abi.FlagFirst | abi.FlagNoTSO
	r.write(off+12, d[12:16])
}

func (r *rig) sent(within time.Duration) bool {
	select {
	case <-r.port.Sent:
		return true
	case <-time.After(within):
		return false
	}
}

// PAUSE frames are counted in dropped_pause, reported in slice 0's
// interrupt block at once; with flow control on they hold transmission
// for their quanta (quanta 0 resumes it), with it off they do not.
func TestFlowControlPause(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.mustCmd(abi.CmdEnableFlowControl, 0, 0, 0)
	r.nic.Deliver([][]byte{pauseFrame(0xffff)})
	if got := r.ramBE32(statsAddr0 + abi.IRQOffDroppedPause); got != 1 {
		t.Errorf("dropped_pause %d in the block, want 1", got)
	}
	r.claim(0, true)
	// Hold the pause for good, so the test does not race its 3.3 ms.
	r.nic.mu.Lock()
	paused := r.nic.fw.txPaused
	r.nic.fw.pauseUntil = time.Now().Add(time.Hour)
	r.nic.mu.Unlock()
	if !paused {
		t.Fatal("a PAUSE with flow control on did not pause transmission")
	}
	r.sendOne(0)
	if r.sent(50*time.Millisecond) || r.nic.Stats().TxPackets != 0 {
		t.Fatal("a packet left while paused")
	}
	r.nic.Deliver([][]byte{pauseFrame(0)})
	if !r.sent(30 * time.Second) {
		t.Fatal("the packet posted while paused did not leave after a PAUSE of 0 quanta")
	}
	// A pause that runs out by itself.
	r.nic.Deliver([][]byte{pauseFrame(0xffff)})
	r.sendOne(1)
	if !r.sent(30 * time.Second) {
		t.Fatal("transmission did not resume when the pause ran out")
	}
	// Flow control off: counted, not honoured.
	r.mustCmd(abi.CmdDisableFlowControl, 0, 0, 0)
	r.nic.Deliver([][]byte{pauseFrame(0xffff)})
	r.nic.mu.Lock()
	paused = r.nic.fw.txPaused
	r.nic.mu.Unlock()
	if paused {
		t.Error("paused with flow control off")
	}
	if c := r.nic.Counters(); c.Drops.Pause != 4 || c.Stats.TxPackets != 2 {
		t.Errorf("pause count %d, tx packets %d; want 4 and 2", c.Drops.Pause, c.Stats.TxPackets)
	}
}
