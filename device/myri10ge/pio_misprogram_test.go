package myri10ge

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// Descriptors that change under the poller (issue 15, acceptance 5; the
// README's "Descriptors that change under the poller"). Where the order of
// the guest's stores and the poller's scan matters, the test holds the
// NIC's lock while it stores: the poller scans under that lock, so it sees
// the ring exactly as the test left it.

// sendDesc stores a one-descriptor packet of length bytes at addr into
// send ring slot k, flags last, through the mapping.
func (m *mmapRig) sendDesc(k int, addr uint64, length int) {
	d := sendDescOff(k)
	m.store32(d+abi.SendOffAddrHigh, uint32(addr>>32))
	m.store32(d+abi.SendOffAddrLow, uint32(addr))
	m.store32(d+abi.SendOffPseudoHdrOff, uint32(length))
	m.store32(d+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO)
}

// next returns the next frame the NIC sent, failing the test after a
// generous wait.
func (m *mmapRig) next(what string) []byte {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := m.port.Next(ctx)
	if err != nil {
		m.t.Fatalf("%s: no frame sent: %v", what, err)
	}
	return f
}

// txState reads the consumer index and send_done_count under the lock.
func (m *mmapRig) txState() (idx, done uint32) {
	m.nic.mu.Lock()
	defer m.nic.mu.Unlock()
	return m.nic.slices[0].txIdx, m.nic.slices[0].sendDone
}

// TestPIOMmapTornChain: a two-descriptor chain whose first flags word is
// stored before the continuation is written (a driver that posts in the
// wrong order, or no write barrier). The poller takes the first alone: a
// malformed chain, dropped and counted as a packet; the continuation,
// once it lands, is a descriptor without FIRST, skipped without counting.
// The ring goes on: the next packet is sent.
func TestPIOMmapTornChain(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	frame := m.stage(0x100000, testFrame("02:00:00:00:00:42", 60))

	m.store32(sendDescOff(0)+abi.SendOffAddrLow, 0x100000)
	m.store32(sendDescOff(0)+abi.SendOffPseudoHdrOff, 30)
	m.store32(sendDescOff(0)+abi.SendOffPad, 2<<16|abi.FlagFirst|abi.FlagNoTSO) // rdma_count 2, the continuation not there yet
	m.waitFor("torn chain's head consumed", func() bool { return m.nic.slices[0].txIdx == 1 })
	m.store32(sendDescOff(1)+abi.SendOffAddrLow, 0x100000+30)
	m.store32(sendDescOff(1)+abi.SendOffPseudoHdrOff, 30)
	m.store32(sendDescOff(1)+abi.SendOffPad, 2<<16|abi.FlagNoTSO) // the continuation, late
	m.waitFor("late continuation skipped", func() bool { return m.nic.slices[0].txIdx == 2 })
	m.sendDesc(2, 0x100000, len(frame))
	if got := m.next("the packet after"); !cmp.Equal(got, frame) {
		t.Fatalf("the packet after the torn chain: %x", got)
	}
	m.waitFor("three descriptors consumed", func() bool { return m.nic.slices[0].sendDone == 2 })
	st := m.nic.Stats()
	if st.GuestErrors != 2 || st.TxDropped != 1 || st.TxFrames != 1 || st.TxPackets != 2 {
		t.Errorf("guest errors %d, tx dropped %d, frames %d, packets %d; want 2, 1, 1, 2",
			st.GuestErrors, st.TxDropped, st.TxFrames, st.TxPackets)
	}
	for k := 0; k < 3; k++ {
		if w := binary.BigEndian.Uint32(m.guest[sendDescOff(k)+abi.SendOffPad:]); w != 0 {
			t.Errorf("descriptor %d not zeroed after it was consumed: flags word %#x", k, w)
		}
	}
}

// TestPIOMmapRewrittenDescriptor: a descriptor rewritten before the
// poller took it is sent as it is when taken (the device reads each
// descriptor once, then zeroes it); one rewritten behind the consumer
// index (a stale slot) is not taken until the ring wraps around to it.
func TestPIOMmapRewrittenDescriptor(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	a, b := m.stage(0x100000, testFrame("02:00:00:00:00:0a", 60)), m.stage(0x101000, testFrame("02:00:00:00:00:0b", 70))

	// Rewritten while posted, before any scan: b goes out, not a.
	m.nic.mu.Lock()
	m.sendDesc(0, 0x100000, len(a))
	m.sendDesc(0, 0x101000, len(b))
	m.nic.mu.Unlock()
	if got := m.next("rewritten descriptor"); !cmp.Equal(got, b) {
		t.Fatalf("rewritten descriptor sent %x, want the rewrite %x", got, b)
	}
	m.waitFor("slot 0 consumed", func() bool { return m.nic.slices[0].sendDone == 1 })

	// Rewritten behind the consumer: slot 0 again. Nothing is taken.
	m.sendDesc(0, 0x100000, len(a))
	m.nic.mu.Lock()
	m.nic.scanLocked() // one more scan at least, certainly after the store
	m.nic.mu.Unlock()
	if idx, done := m.txState(); idx != 1 || done != 1 {
		t.Fatalf("after a store behind the consumer: index %d, send_done_count %d; want 1, 1", idx, done)
	}
	// The next slot works as usual; the stale one waits for the wrap.
	m.sendDesc(1, 0x100000, len(a))
	if got := m.next("the next slot"); !cmp.Equal(got, a) {
		t.Fatalf("slot 1 sent %x", got)
	}
	m.waitFor("slot 1 consumed", func() bool { return m.nic.slices[0].sendDone == 2 })
	if w := binary.BigEndian.Uint32(m.guest[sendRingOff(0)+abi.SendOffPad:]); w == 0 {
		t.Error("the stale slot 0 was consumed before the ring wrapped")
	}
	if st := m.nic.Stats(); st.GuestErrors != 0 || st.TxDropped != 0 {
		t.Errorf("guest errors %d, tx dropped %d; want 0, 0 (nothing the device can tell from a good post)", st.GuestErrors, st.TxDropped)
	}
}

// TestPIOMmapProducerPastConsumer: the guest posts a ring and four more
// before the poller looks (a driver that ignores send_done_count), so
// slots 0-3 are overwritten before they were taken. The device takes each
// slot as it finds it, one ring's worth, and stops at the slot it zeroed:
// 256 packets, the first four the overwriting ones; the four overwritten
// are lost, and send_done_count says 256 (a driver counting 260 finds out
// from it). Then the ring goes on from slot 0.
func TestPIOMmapProducerPastConsumer(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	small, big := m.stage(0x100000, testFrame("02:00:00:00:00:0a", 60)), m.stage(0x101000, testFrame("02:00:00:00:00:0b", 100))
	m.nic.mu.Lock()
	for k := 0; k < sendRingEntries+4; k++ {
		if k < sendRingEntries {
			m.sendDesc(k, 0x100000, len(small))
		} else {
			m.sendDesc(k, 0x101000, len(big))
		}
	}
	m.nic.mu.Unlock()
	for k := 0; k < sendRingEntries; k++ {
		want := small
		if k < 4 {
			want = big
		}
		if got := m.next(fmt.Sprintf("packet %d", k)); !cmp.Equal(got, want) {
			t.Fatalf("packet %d: %d bytes, want %d", k, len(got), len(want))
		}
	}
	m.waitFor("a ring's worth completed", func() bool { return m.nic.slices[0].sendDone == sendRingEntries })
	m.nic.mu.Lock()
	m.nic.scanLocked()
	m.nic.mu.Unlock()
	if idx, done := m.txState(); idx != sendRingEntries || done != sendRingEntries {
		t.Fatalf("index %d, send_done_count %d; want %d, %d", idx, done, sendRingEntries, sendRingEntries)
	}
	if st := m.nic.Stats(); st.TxFrames != sendRingEntries || st.TxDropped != 0 {
		t.Errorf("frames %d, dropped %d; want %d, 0", st.TxFrames, st.TxDropped, sendRingEntries)
	}
	m.sendDesc(sendRingEntries, 0x100000, len(small))
	if got := m.next("after the wrap"); !cmp.Equal(got, small) {
		t.Fatalf("after the wrap: %x", got)
	}
}

// TestPIOMmapRecvOutOfOrder: a receive group posted out of order through
// the mapping gets the trapped path's answer: a guest error, and the group
// is not taken (the device marks it unposted, so it is reported once). The
// groups posted in order afterwards are taken.
func TestPIOMmapRecvOutOfOrder(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	for range 2 * abi.RecvGroup { // use up small groups 0 and 1
		m.port.Inject(testFrame(testMAC, 60))
	}
	m.waitFor("two groups used", func() bool { return m.nic.stats.RxFrames == 2*abi.RecvGroup })
	post := func(g int) {
		first := smallRingOff(0) + uint64(g)*abi.RecvGroup*abi.RecvDescSize
		for i := range abi.RecvGroup {
			a := bufAddr(0, false, g*abi.RecvGroup+i)
			e := first + uint64(i)*abi.RecvDescSize
			m.store32(e+abi.RecvOffAddrHigh, uint32(a>>32))
			if i > 0 {
				m.store32(e+abi.RecvOffAddrLow, uint32(a))
			}
		}
		m.store32(first+abi.RecvOffAddrLow, uint32(bufAddr(0, false, g*abi.RecvGroup)))
	}
	posted := func() uint32 {
		m.nic.mu.Lock()
		defer m.nic.mu.Unlock()
		return m.nic.slices[0].rx[ringSmall].posted
	}
	before := posted()
	post(1) // group 0 expected
	m.waitFor("group 1 refused", func() bool { return m.nic.stats.GuestErrors == 1 })
	m.nic.mu.Lock()
	m.nic.scanLocked()
	m.nic.mu.Unlock()
	if got := posted(); got != before {
		t.Fatalf("posted %d after an out-of-order group, want %d", got, before)
	}
	if v := binary.BigEndian.Uint32(m.guest[smallRingOff(0)+abi.RecvGroup*abi.RecvDescSize+abi.RecvOffAddrLow:]); v != abi.RecvInvalidLow {
		t.Errorf("refused group 1's first addr_low %#x, want the invalid mark", v)
	}
	if st := m.nic.Stats(); st.GuestErrors != 1 {
		t.Errorf("guest errors %d, want 1 (reported once)", st.GuestErrors)
	}
	post(0)
	post(1)
	m.waitFor("groups 0 and 1 taken", func() bool { return m.nic.slices[0].rx[ringSmall].posted == before+2*abi.RecvGroup })
	if st := m.nic.Stats(); st.GuestErrors != 1 {
		t.Errorf("guest errors %d after posting in order, want still 1", st.GuestErrors)
	}
}
