package myri10ge

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"golang.org/x/sys/unix"
)

// mmapRig is a rig in PIOMmap mode with the guest's view of BAR0: the
// window's memfd mapped again, as QEMU maps it into the guest.
type mmapRig struct {
	*rig
	guest []byte
}

func newMmapRig(t *testing.T) *mmapRig {
	t.Helper()
	port := fabrictest.NewPort(1024)
	r := newRigOn(t, 1, port, testMAC, PIOMmap)
	r.port = port
	return &mmapRig{rig: r, guest: guestMap(t, r.nic)}
}

// guestMap maps a pio=mmap NIC's BAR0 memfd again, as QEMU maps it into
// the guest.
func guestMap(tb testing.TB, n *NIC) []byte {
	tb.Helper()
	win := n.Spec().BARs[0].Window
	if win == nil {
		tb.Fatal("pio=mmap: BAR0 has no window")
	}
	g, err := unix.Mmap(win.Fd(), 0, abi.BAR0Size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Munmap(g) })
	return g
}

// sendDescOff is where slot k of slice 0's send ring sits in BAR0; k
// wraps at the ring's size, as the driver's producer index does.
func sendDescOff(k int) uint64 {
	return sendRingOff(0) + uint64(k%sendRingEntries)*abi.SendDescSize
}

// stage puts frame f in guest RAM at addr, for a send descriptor to
// point at, and returns f.
func (m *mmapRig) stage(addr uint64, f []byte) []byte {
	copy(m.ram.Bytes()[addr:], f)
	return f
}

// store32 is a guest's 4-byte store of the big-endian v at off, through
// the mapping: no message, nobody told.
func (m *mmapRig) store32(off uint64, v uint32) { guestStore32(m.guest, off, v) }

func guestStore32(g []byte, off uint64, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&g[off])), binary.NativeEndian.Uint32(b[:]))
}

// waitFor polls cond (under the NIC's lock) for a generous while.
func (m *mmapRig) waitFor(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m.nic.mu.Lock()
		ok := cond()
		m.nic.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("pio=mmap: %s: not seen by the poller", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPIOMmapAreas(t *testing.T) {
	m := newMmapRig(t)
	got := m.nic.Spec().BARs[0].Window.Areas()
	type area struct{ Offset, Size uint64 }
	want := []area{{sendRingOff(0), sendRingBytes}, {smallRingOff(0), rxRingBytes}, {bigRingOff(0), rxRingBytes}}
	if len(got) != len(want) {
		t.Fatalf("areas %+v, want the three rings %+v", got, want)
	}
	for i := range got {
		if got[i].Offset != want[i].Offset || got[i].Size != want[i].Size {
			t.Errorf("area %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// Trapped and mapped accesses see one memory.
	m.store32(sendRingOff(0), 0x11223344)
	if v := m.read32(sendRingOff(0)); v != 0x11223344 {
		t.Errorf("ReadBAR after a mapped store: %#x", v)
	}
}

// TestPIOMmapSendAndPost: the fake driver writes send descriptors and
// receive postings through the mapping only; the poller finds them.
func TestPIOMmapSendAndPost(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500) // commands trapped, rings posted by trapped stores (mmap off)

	// Send: a descriptor with flags 0, then its flags word, as the driver.
	frame := m.stage(0x100000, testFrame("02:00:00:00:00:42", 60))
	for k := 0; k < 3; k++ { // three packets, the poller's consumer index moving
		d := sendDescOff(k)
		m.store32(d+abi.SendOffAddrHigh, 0)
		m.store32(d+abi.SendOffAddrLow, 0x100000)
		m.store32(d+abi.SendOffPseudoHdrOff, uint32(len(frame)))
		m.store32(d+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO) // rdma_count 1, flags last
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got, err := m.port.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("packet %d: not sent: %v", k, err)
		}
		if !cmp.Equal(got, frame) {
			t.Fatalf("packet %d: sent %x, want %x", k, got, frame)
		}
	}
	m.waitFor("send completion", func() bool { return m.nic.slices[0].sendDone == 3 })

	// Receive: use up small group 0, then repost it through the mapping
	// with the very same buffer addresses.
	for range abi.RecvGroup {
		m.port.Inject(testFrame(testMAC, 60))
	}
	m.waitFor("eight frames received", func() bool { return m.nic.stats.RxFrames == abi.RecvGroup })
	first := smallRingOff(0)
	if v := binary.BigEndian.Uint32(m.guest[first+abi.RecvOffAddrLow:]); v != abi.RecvInvalidLow {
		t.Fatalf("used group 0's first addr_low %#x, want the invalid mark", v)
	}
	m.nic.mu.Lock()
	before := m.nic.slices[0].rx[ringSmall].posted
	m.nic.mu.Unlock()
	m.postSmallGroup(first)
	m.waitFor("group 0 reposted", func() bool { return m.nic.slices[0].rx[ringSmall].posted == before+abi.RecvGroup })
	if st := m.nic.Stats(); st.GuestErrors != 0 || st.RxDropped != 0 {
		t.Errorf("guest errors %d, rx dropped %d", st.GuestErrors, st.RxDropped)
	}
}

// TestPIOMmapPollerLifetime: the poller runs only while a client is
// attached, and Detach joins it (leaktest would catch a leak).
func TestPIOMmapPollerLifetime(t *testing.T) {
	m := newMmapRig(t)
	m.nic.mu.Lock()
	running := m.nic.pio.poller != nil
	m.nic.mu.Unlock()
	if !running {
		t.Fatal("attached NIC in pio=mmap has no poller")
	}
	m.nic.Detach()
	m.nic.mu.Lock()
	running = m.nic.pio.poller != nil
	m.nic.mu.Unlock()
	if running {
		t.Fatal("poller still running after Detach")
	}
	// A mapped store while detached is taken by nobody.
	m.store32(sendRingOff(0)+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO)
	time.Sleep(10 * time.Millisecond)
	if st := m.nic.Stats(); st.TxPackets != 0 {
		t.Errorf("detached NIC took %d packets", st.TxPackets)
	}
}

// TestPIOMmapMisprogrammed: descriptors the poller may see half-written or
// out of order have the documented trapped-path outcome (README, Guest
// mistakes): consumed, dropped, counted, and the ring goes on.
func TestPIOMmapMisprogrammed(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	frame := m.stage(0x100000, testFrame("02:00:00:00:00:42", 60))

	// Torn: the flags word lands before the length (a driver without its
	// write barrier). The poller takes a 0-byte frame: a malformed chain.
	m.store32(sendDescOff(0)+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO)
	m.waitFor("torn descriptor consumed", func() bool { return m.nic.slices[0].txIdx == 1 })
	// A stray descriptor without FIRST at the consumer index: skipped.
	m.store32(sendDescOff(1)+abi.SendOffPad, 1<<16|abi.FlagNoTSO)
	m.waitFor("stray descriptor skipped", func() bool { return m.nic.slices[0].txIdx == 2 })
	// A producer ahead of the consumer, with a gap: descriptor 3 posted,
	// 2 not. Nothing is taken until 2 is; then both go out in order.
	m.store32(sendDescOff(3)+abi.SendOffAddrLow, 0x100000)
	m.store32(sendDescOff(3)+abi.SendOffPseudoHdrOff, uint32(len(frame)))
	m.store32(sendDescOff(3)+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO)
	time.Sleep(20 * time.Millisecond) // not a timing assertion: nothing may happen
	m.nic.mu.Lock()
	idx := m.nic.slices[0].txIdx
	m.nic.mu.Unlock()
	if idx != 2 {
		t.Fatalf("consumer index %d after a posting past a gap, want 2", idx)
	}
	m.store32(sendDescOff(2)+abi.SendOffAddrLow, 0x100000)
	m.store32(sendDescOff(2)+abi.SendOffPseudoHdrOff, uint32(len(frame)))
	m.store32(sendDescOff(2)+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO)
	for k := 2; k <= 3; k++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got, err := m.port.Next(ctx)
		cancel()
		if err != nil || !cmp.Equal(got, frame) {
			t.Fatalf("packet %d: %x, %v", k, got, err)
		}
	}
	m.waitFor("all four consumed", func() bool { return m.nic.slices[0].txIdx == 4 })
	st := m.nic.Stats()
	if st.GuestErrors != 2 || st.TxDropped != 1 || st.TxFrames != 2 {
		t.Errorf("guest errors %d, tx dropped %d, tx frames %d; want 2, 1, 2", st.GuestErrors, st.TxDropped, st.TxFrames)
	}
	m.nic.mu.Lock()
	done := m.nic.slices[0].sendDone
	m.nic.mu.Unlock()
	if done != 3 { // the stray descriptor is not a packet
		t.Errorf("send_done_count %d, want 3", done)
	}
}

// TestPIOMmapRefillSeenOnArrival: a frame that finds its ring empty looks
// at the ring before it is dropped, so buffers the driver reposted through
// the mapping while the poller slept (stopped here) still take it.
func TestPIOMmapRefillSeenOnArrival(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	m.nic.stopPoller() // nothing polls: only an arrival can see the reposting
	m.nic.mu.Lock()
	avail := m.nic.slices[0].rx[ringSmall].avail()
	m.nic.mu.Unlock()
	for range avail {
		m.port.Inject(testFrame(testMAC, 60))
	}
	m.waitFor("the small ring used up", func() bool { return m.nic.stats.RxFrames == uint64(avail) })

	first := smallRingOff(0) + uint64(m.nic.slices[0].rx[ringSmall].consumed%rxRingEntries)*abi.RecvDescSize
	m.postSmallGroup(first)
	m.port.Inject(testFrame(testMAC, 60))
	m.waitFor("the frame after the reposting", func() bool {
		return m.nic.stats.RxFrames == uint64(avail)+1 || m.nic.stats.RxDropped > 0
	})
	if st := m.nic.Stats(); st.RxDropped != 0 || st.GuestErrors != 0 {
		t.Errorf("rx dropped %d, guest errors %d: the reposted group was not seen", st.RxDropped, st.GuestErrors)
	}
	m.nic.mu.Lock()
	late := m.nic.pio.lateRefills
	m.nic.mu.Unlock()
	if late != 1 {
		t.Errorf("late refills %d, want 1", late)
	}
}

// postSmallGroup posts slice 0's first eight small buffers as the group
// whose first descriptor is at BAR0 offset first, through the mapping and
// in the driver's order: the first addr_low last, so the group turns valid
// with one store (§5.2).
func (m *mmapRig) postSmallGroup(first uint64) {
	for i := range abi.RecvGroup {
		a := bufAddr(0, false, i)
		e := first + uint64(i)*abi.RecvDescSize
		m.store32(e+abi.RecvOffAddrHigh, uint32(a>>32))
		if i > 0 {
			m.store32(e+abi.RecvOffAddrLow, uint32(a))
		}
	}
	m.store32(first+abi.RecvOffAddrLow, uint32(bufAddr(0, false, 0)))
}

// TestPIOMmapHeldFramesLandOnPosting: frames that found the ring empty
// wait in the slice's FIFO; the ring poller, finding the group the driver
// then posts through the mapping, lets them land in order and raises the
// interrupt, with nothing dropped.
func TestPIOMmapHeldFramesLandOnPosting(t *testing.T) {
	m := newMmapRig(t)
	m.open(1500)
	const avail = rxRingEntries
	m.receiveSmall(avail) // the small ring used up
	m.irq.Take()
	var waiting [][]byte
	for i := range 3 {
		f := testFrame(testMAC, 60)
		f[20] = byte(i)
		waiting = append(waiting, f)
		m.port.Inject(f)
	}
	m.waitFor("three frames held", func() bool { return m.nic.slices[0].hold.n == 3 })
	if got, _ := m.irq.Take(); len(got) != 0 {
		t.Errorf("frames that only wait raised %v", got)
	}

	m.nic.mu.Lock()
	consumed := m.nic.slices[0].rx[ringSmall].consumed
	m.nic.mu.Unlock()
	m.postSmallGroup(smallRingOff(0) + uint64(consumed%rxRingEntries)*abi.RecvDescSize)
	m.waitFor("the held frames landed", func() bool { return m.nic.stats.RxFrames == uint64(avail)+3 })
	if got, _ := m.irq.Take(); !cmp.Equal(got, []int{0}) {
		t.Errorf("landing raised %v, want [0]", got)
	}
	for i, f := range waiting {
		slot := int(avail) + i
		if _, n := m.slot(0, slot); int(n) != len(f) {
			t.Errorf("rx_done slot %d has length %d, want %d", slot, n, len(f))
		}
		a := bufAddr(0, false, i)
		if got := m.ram.Bytes()[a+abi.RxPad : a+abi.RxPad+uint64(len(f))]; !cmp.Equal(got, f) {
			t.Errorf("frame %d is not in buffer %d", i, i)
		}
	}
	if st := m.nic.Stats(); st.RxDropped != 0 || st.RxHeld != 3 || st.GuestErrors != 0 {
		t.Errorf("rx dropped %d, held %d, guest errors %d; want 0, 3, 0", st.RxDropped, st.RxHeld, st.GuestErrors)
	}
}
