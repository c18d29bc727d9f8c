package myri10ge

import (
	"encoding/binary"
	"net"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/fabric"
	"github.com/sirupsen/logrus"
)

// The device's own packet rate (issue 15): frames go from NIC A's send
// ring through a fabric.Switch into NIC B's receive ring, with every store
// the driver makes (descriptors and doorbells, receive postings, claims),
// the completions, the interrupt blocks and the vectors. No guest, no
// socket: BAR0 stores are WriteBAR calls, so this is the device's cost
// alone, what a polled mmapped BAR0 would leave of a transfer.

const (
	rateMACA  = "02:60:dd:00:00:0a"
	rateMACB  = "02:60:dd:00:00:0b"
	rateTxBuf = 0x100000 // the frame A sends, in A's guest RAM
)

// rateFrame is a frame of size bytes from A to B.
func rateFrame(size int) []byte {
	f := make([]byte, size)
	b, _ := net.ParseMAC(rateMACB)
	a, _ := net.ParseMAC(rateMACA)
	copy(f, b)
	copy(f[6:], a)
	binary.BigEndian.PutUint16(f[12:], 0x88B5) // local experimental
	for i := 14; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

// ratePair is two opened NICs on one switch, driven by a fake driver on
// the benchmark's goroutine.
type ratePair struct {
	a, b   *rig
	kickB  <-chan struct{}
	txIdx  uint32 // A's send ring producer index
	rxIdx  uint32 // B's next rx_done slot
	used   [2]int // B's buffers consumed per ring, not yet reposted
	posted [2]int // B's groups posted so far per ring (mod ring)
	need   int    // B buffers per frame
	ring   int    // B ring the frames land in
	// In pio=mmap, the guest's mappings of A's and B's BAR0: descriptors
	// and postings go through them, claims stay trapped.
	gA, gB []byte
}

func newRatePair(tb testing.TB, size int, pio PIOMode) *ratePair {
	tb.Helper()
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	sw := fabric.NewSwitch(logrus.NewEntry(l))
	tb.Cleanup(sw.Close)
	mtu := 1500
	if size > 1514 {
		mtu = 9000
	}
	p := &ratePair{
		a: newRigOn(tb, 1, sw.NewPort("a"), rateMACA, pio),
		b: newRigOn(tb, 1, sw.NewPort("b"), rateMACB, pio),
	}
	if pio == PIOMmap {
		p.gA, p.gB = guestMap(tb, p.a.nic), guestMap(tb, p.b.nic)
	}
	for _, r := range []*rig{p.a, p.b} {
		r.open(mtu)
		r.claim(0, false) // the RX token too: the link-up block kept it
	}
	p.posted = [2]int{rxRingEntries / abi.RecvGroup, rxRingEntries / abi.RecvGroup}
	small, big := 128-abi.RxPad, 2048
	if mtu > 1500 {
		small, big = 1518, 4096
	}
	p.ring, p.need = ringSmall, 1
	if size > small {
		p.ring, p.need = ringBig, (size+abi.RxPad+big-1)/big
	}
	p.kickB = p.b.irq.KickOnly()
	p.a.irq.KickOnly()
	copy(p.a.ram.Bytes()[rateTxBuf:], rateFrame(size))
	return p
}

// send posts one single-descriptor frame on A the driver's way: the
// descriptor with flags 0, then its last word with the flags (the
// doorbell, which transmits it).
func (p *ratePair) send(size int) {
	var d [abi.SendDescSize]byte
	be := binary.BigEndian
	be.PutUint32(d[abi.SendOffAddrLow:], rateTxBuf)
	be.PutUint16(d[abi.SendOffLength:], uint16(size))
	d[abi.SendOffRDMACount] = 1
	off := sendRingOff(0) + uint64(p.txIdx%sendRingEntries)*abi.SendDescSize
	p.txIdx++
	if p.gA != nil {
		guestStore32(p.gA, off+abi.SendOffAddrLow, rateTxBuf)
		guestStore32(p.gA, off+abi.SendOffPseudoHdrOff, uint32(size))
		guestStore32(p.gA, off+abi.SendOffPad, 1<<16|abi.FlagFirst|abi.FlagNoTSO)
		return
	}
	p.store(p.a, off, d[:8])
	p.store(p.a, off+8, d[8:12])
	d[abi.SendOffFlags] = abi.FlagFirst | abi.FlagNoTSO
	p.store(p.a, off+12, d[12:16])
}

// store is a trapped store into r's BAR0 (WriteBAR). The rig's own
// helpers call t.Helper, which costs more than the device.
func (p *ratePair) store(r *rig, off uint64, b []byte) {
	if err := r.nic.WriteBAR(0, off, b); err != nil {
		r.t.Fatal(err)
	}
}

// claim hands a token of slice 0 back: the RX token (word 0) or the IRQ
// token (word 1), as rig.claim does.
func (p *ratePair) claim(r *rig, irqWord bool) {
	off := uint64(irqAckBase)
	if irqWord {
		off += 4
	}
	p.store(r, off, []byte{0, 0, 0, 3})
}

// completeA is A's interrupt handler: it reads send_done_count and hands
// the IRQ token back (A never receives, so it keeps no RX token).
func (p *ratePair) completeA() uint32 {
	b := p.a.ram.Bytes()
	flags := statsAddr0 + abi.IRQOffFlagsWord + 3
	if b[flags] == 0 {
		return binary.BigEndian.Uint32(b[statsAddr0+abi.IRQOffSendDoneCount:])
	}
	b[flags] = 0
	done := binary.BigEndian.Uint32(b[statsAddr0+abi.IRQOffSendDoneCount:])
	p.claim(p.a, true)
	return done
}

// receiveB is B's interrupt handler and NAPI poll: it takes every filled
// rx_done slot, reposts buffers in groups of 8 and hands both tokens back.
// It returns the frames taken.
func (p *ratePair) receiveB() int {
	b := p.b.ram.Bytes()
	flags := statsAddr0 + abi.IRQOffFlagsWord + 3
	if b[flags] == 0 {
		return 0
	}
	b[flags] = 0
	got := 0
	for {
		slot := rxDoneAddr0 + uint64(p.rxIdx%(2*rxRingEntries))*abi.SlotSize
		if binary.BigEndian.Uint16(b[slot+2:]) == 0 {
			break
		}
		clear(b[slot : slot+abi.SlotSize])
		p.rxIdx++
		got++
		p.used[p.ring] += p.need
	}
	for p.used[p.ring] >= abi.RecvGroup {
		p.post(p.posted[p.ring] % (rxRingEntries / abi.RecvGroup))
		p.posted[p.ring]++
		p.used[p.ring] -= abi.RecvGroup
	}
	p.claim(p.b, false)
	p.claim(p.b, true)
	return got
}

// post reposts B's group g of the ring in use, the driver's way.
func (p *ratePair) post(g int) {
	big := p.ring == ringBig
	base := smallRingOff(0)
	if big {
		base = bigRingOff(0)
	}
	first := base + uint64(g)*abi.RecvGroup*abi.RecvDescSize
	if p.gB == nil {
		// As rig.postGroup: the group with the first addr_low invalid in
		// 8-byte stores, then the real addr_low.
		var grp [abi.RecvGroup * abi.RecvDescSize]byte
		for i := range abi.RecvGroup {
			a := bufAddr(0, big, g*abi.RecvGroup+i)
			binary.BigEndian.PutUint32(grp[i*8:], uint32(a>>32))
			binary.BigEndian.PutUint32(grp[i*8+4:], uint32(a))
		}
		var low [4]byte
		copy(low[:], grp[4:8])
		binary.BigEndian.PutUint32(grp[4:], abi.RecvInvalidLow)
		for i := 0; i < len(grp); i += 8 {
			p.store(p.b, first+uint64(i), grp[i:i+8])
		}
		p.store(p.b, first+4, low[:])
		return
	}
	for i := range abi.RecvGroup {
		a := bufAddr(0, big, g*abi.RecvGroup+i)
		e := first + uint64(i)*abi.RecvDescSize
		guestStore32(p.gB, e+abi.RecvOffAddrHigh, uint32(a>>32))
		if i > 0 {
			guestStore32(p.gB, e+abi.RecvOffAddrLow, uint32(a))
		}
	}
	guestStore32(p.gB, first+abi.RecvOffAddrLow, uint32(bufAddr(0, big, g*abi.RecvGroup)))
}

// run moves n frames of size bytes from A to B, keeping no more in flight
// than B has buffers for, and fails on any drop.
func (p *ratePair) run(tb testing.TB, n, size int) {
	window := (rxRingEntries - 2*abi.RecvGroup) / p.need
	sent, recv := 0, 0
	for recv < n {
		for sent < n && sent-recv < window {
			p.send(size)
			sent++
		}
		p.completeA()
		if got := p.receiveB(); got > 0 {
			recv += got
			continue
		}
		if p.gA != nil && sent > recv {
			// The poller may not have taken what was posted yet, and
			// nothing trapped will tell it: let it run.
			runtime.Gosched()
			continue
		}
		<-p.kickB
	}
	// A block still unclaimed is claimed first; the block then written
	// (or, with the token home, the last one) has the final count.
	p.completeA()
	if done := p.completeA(); done != p.txIdx {
		tb.Fatalf("send_done_count %d, posted %d", done, p.txIdx)
	}
	if st := p.b.nic.Stats(); st.RxDropped != 0 || p.a.nic.Stats().TxDropped != 0 {
		tb.Fatalf("drops: B rx %d, A tx %d", st.RxDropped, p.a.nic.Stats().TxDropped)
	}
}

// BenchmarkDeviceRate is acceptance 4 of issue 15. impl=baseline is what
// any path must do per frame (a copy into a pooled buffer and a channel
// hand-off to another goroutine); impl=ours is the whole device path.
// Metrics: frames/s, and allocs/op is allocations per frame.
func BenchmarkDeviceRate(b *testing.B) {
	for _, size := range []int{64, 1514, 9014} {
		name := "size=" + strconv.Itoa(size)
		f := rateFrame(size)
		b.Run(name+"/impl=baseline", func(b *testing.B) {
			pool := sync.Pool{New: func() any { return new([fabric.MaxFrame]byte) }}
			ch := make(chan *[fabric.MaxFrame]byte, 512)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < b.N; i++ {
					pool.Put(<-ch)
				}
			}()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := 0; i < b.N; i++ {
				c := pool.Get().(*[fabric.MaxFrame]byte)
				copy(c[:], f)
				ch <- c
			}
			wg.Wait()
			reportRate(b, cpu)
		})
		for _, impl := range []struct {
			name string
			pio  PIOMode
		}{{"ours", PIOTrap}, {"ours-mmap", PIOMmap}} {
			b.Run(name+"/impl="+impl.name, func(b *testing.B) {
				p := newRatePair(b, size, impl.pio)
				p.run(b, 2*rxRingEntries, size) // warm: pools, rings wrapped once
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				cpu := cpuTime(b)
				p.run(b, b.N, size)
				b.StopTimer()
				reportRate(b, cpu)
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports frames/s of wall time and the process's CPU time per
// frame since start (every goroutine, GC included): on a machine shared
// with other loads the wall rate says more about them than about us, and
// cpu-ns/frame converts to the rate one idle core would give
// (1e9/cpu-ns = frames/s per core).
func reportRate(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/frame")
}

// TestDeviceRatePath runs the benchmark's path briefly, so that a change
// that breaks it (a drop, a lost completion) fails the unit tests.
func TestDeviceRatePath(t *testing.T) {
	for _, pio := range []PIOMode{PIOTrap, PIOMmap} {
		for _, size := range []int{64, 1514, 9014} {
			p := newRatePair(t, size, pio)
			p.run(t, 3*rxRingEntries, size)
			if got := p.b.nic.Stats().RxFrames; got != 3*rxRingEntries {
				t.Errorf("pio=%v size %d: B received %d frames, want %d", pio, size, got, 3*rxRingEntries)
			}
		}
	}
}
