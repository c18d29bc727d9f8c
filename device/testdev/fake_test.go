package testdev

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/pci/pcitest"
	"github.com/sirupsen/logrus"
)

// fakeMem is a dma.Space over one slice. [lo, hi) of the slice is mapped at
// IOVA base+lo; the rest is canary space no access may touch. Pages can be
// unmapped or made read-only, bus mastering switched off, and every access
// held at a gate.
type fakeMem struct {
	base uint64
	lo   uint64 // offsets into mem
	hi   uint64

	mu        sync.Mutex
	mem       []byte
	holes     map[uint64]bool // page IOVAs not mapped
	readOnly  map[uint64]bool // page IOVAs mapped read-only
	busMaster bool
	hook      dma.Hook

	gate    chan struct{} // if set, each access first receives from it
	entered chan struct{} // if set, each access signals it (non-blocking)
	n       atomic.Int64  // accesses
}

// newFakeMem maps size bytes at IOVA base, with a page of canary on each
// side, bus mastering on.
func newFakeMem(base uint64, size int) *fakeMem {
	m := &fakeMem{
		base:      base - pageSize,
		lo:        pageSize,
		hi:        pageSize + uint64(size),
		mem:       make([]byte, size+2*pageSize),
		holes:     map[uint64]bool{},
		readOnly:  map[uint64]bool{},
		busMaster: true,
	}
	for i := range m.mem {
		m.mem[i] = canary(i)
	}
	return m
}

func canary(i int) byte { return byte(0xa5 ^ i) }

// hold makes every access wait at gate until the test sends on it (one
// access passes) or closes it (all pass). An access about to wait signals
// entered first, without blocking: at most one signal is queued.
func (m *fakeMem) hold() (gate chan<- struct{}, entered <-chan struct{}) {
	g, e := make(chan struct{}), make(chan struct{}, 1)
	m.gate, m.entered = g, e
	return g, e
}

// checkCanaries fails the test if a byte outside the mapped range changed.
func (m *fakeMem) checkCanaries(tb testing.TB) {
	tb.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, b := range m.mem {
		if (uint64(i) < m.lo || uint64(i) >= m.hi) && b != canary(i) {
			tb.Fatalf("byte %#x outside the mapped range changed: %#x", m.base+uint64(i), b)
		}
	}
}

// bytes returns a copy of n mapped bytes at iova.
func (m *fakeMem) bytes(iova uint64, n int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	off := iova - m.base
	return append([]byte(nil), m.mem[off:off+uint64(n)]...)
}

func (m *fakeMem) set(iova uint64, p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.mem[iova-m.base:], p)
}

func (m *fakeMem) setBusMaster(on bool) { m.mu.Lock(); m.busMaster = on; m.mu.Unlock() }

func (m *fakeMem) ReadAt(p []byte, addr uint64) (int, error) {
	return m.access(dma.Read, p, addr)
}

func (m *fakeMem) WriteAt(p []byte, addr uint64) (int, error) {
	return m.access(dma.Write, p, addr)
}

func (m *fakeMem) Store32(addr uint64, v uint32) error {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	_, err := m.WriteAt(b[:], addr)
	return err
}

// access follows dma.Space: bytes before the first bad one are copied.
func (m *fakeMem) access(op dma.Op, p []byte, addr uint64) (int, error) {
	m.n.Add(1)
	if m.entered != nil {
		select {
		case m.entered <- struct{}{}:
		default:
		}
	}
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(n int, err error) (int, error) {
		return n, &dma.Error{Op: op, Addr: addr, Len: len(p), Err: err}
	}
	if !m.busMaster {
		return fail(0, dma.ErrBusMasterOff)
	}
	if m.hook != nil {
		if err := m.hook.BeforeDMA(op, addr, len(p)); err != nil {
			return fail(0, err)
		}
	}
	for i := range p {
		a := addr + uint64(i)
		page := a &^ (pageSize - 1)
		if a < addr || a < m.base+m.lo || a >= m.base+m.hi || m.holes[page] {
			return fail(i, dma.ErrUnmapped)
		}
		if op == dma.Write && m.readOnly[page] {
			return fail(i, dma.ErrReadOnly)
		}
		if op == dma.Read {
			p[i] = m.mem[a-m.base]
		} else {
			m.mem[a-m.base] = p[i]
		}
	}
	return len(p), nil
}

// fakeWindow is the window as plain memory. Watch records the callback;
// tests ring it with ring. Start and Stop count calls.
type fakeWindow struct {
	mu     sync.Mutex
	mem    [abi.WindowSize]byte
	watch  func(uint32)
	starts int
	stops  int
}

func (w *fakeWindow) ReadAt(p []byte, off uint64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off > abi.WindowSize || uint64(len(p)) > abi.WindowSize-off {
		return 0, io.EOF
	}
	return copy(p, w.mem[off:]), nil
}

func (w *fakeWindow) WriteAt(p []byte, off uint64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off > abi.WindowSize || uint64(len(p)) > abi.WindowSize-off {
		return 0, io.EOF
	}
	return copy(w.mem[off:], p), nil
}

func (w *fakeWindow) Load32(off uint64) uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return binary.LittleEndian.Uint32(w.mem[off:])
}

func (w *fakeWindow) Store32(off uint64, v uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	binary.LittleEndian.PutUint32(w.mem[off:], v)
}

func (w *fakeWindow) Watch(off uint64, fn func(uint32)) {
	if off != abi.WinDBDoorbell {
		panic(fmt.Sprintf("watch at %#x", off))
	}
	w.watch = fn
}

func (w *fakeWindow) Start() { w.mu.Lock(); w.starts++; w.mu.Unlock() }
func (w *fakeWindow) Stop()  { w.mu.Lock(); w.stops++; w.mu.Unlock() }

// ring stores v in the doorbell word and runs the watch callback as the
// poller would.
func (w *fakeWindow) ring(v uint32) {
	w.Store32(abi.WinDBDoorbell, v)
	w.watch(v)
}

// rig is a device attached to fakes.
type rig struct {
	d   *Device
	mem *fakeMem
	irq *pcitest.Raiser
	win *fakeWindow
}

const (
	ramIOVA = 0x100000
	ramSize = 64 << 10
)

// newRig returns an attached device with ramSize bytes of fake RAM at
// ramIOVA; it is detached at the end of the test (or subtest), which then
// fails if a goroutine leaked.
func newRig(tb testing.TB) *rig {
	tb.Helper()
	leaktest.Check(tb)
	r := &rig{mem: newFakeMem(ramIOVA, ramSize), irq: pcitest.NewRaiser(msi.ModeMSIX), win: &fakeWindow{}}
	r.d = newDevice("td0", r.win, testLog(tb))
	if err := r.d.Attach(pci.Host{Mem: r.mem, IRQ: r.irq, Log: testLog(tb)}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.d.Detach)
	return r
}

// testLog discards log output unless -v.
func testLog(tb testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(tbWriter{tb})
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) { w.tb.Log(string(p)); return len(p), nil }

func (r *rig) read(tb testing.TB, reg uint64) uint32 {
	tb.Helper()
	var b [4]byte
	if err := r.d.ReadBAR(abi.RegsBAR, reg, b[:]); err != nil {
		tb.Fatalf("read %#x: %v", reg, err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) write(tb testing.TB, reg uint64, v uint32) {
	tb.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := r.d.WriteBAR(abi.RegsBAR, reg, b[:]); err != nil {
		tb.Fatalf("write %#x: %v", reg, err)
	}
}

// program writes an op's registers (not the doorbell).
func (r *rig) program(tb testing.TB, op abi.Op, src, dst uint64, n, pattern uint32) {
	tb.Helper()
	r.write(tb, abi.RegDMASrcLo, uint32(src))
	r.write(tb, abi.RegDMASrcHi, uint32(src>>32))
	r.write(tb, abi.RegDMADstLo, uint32(dst))
	r.write(tb, abi.RegDMADstHi, uint32(dst>>32))
	r.write(tb, abi.RegDMALen, n)
	r.write(tb, abi.RegDMAOp, uint32(op))
	r.write(tb, abi.RegDMAPattern, pattern)
}

// waitIdle polls DMAStatus until Busy clears and returns it.
func (r *rig) waitIdle(tb testing.TB) uint32 {
	tb.Helper()
	return waitStatus(tb, func() uint32 { return r.read(tb, abi.RegDMAStatus) })
}

// waitStatus polls status until Busy clears, for at most 10 s.
func waitStatus(tb testing.TB, status func() uint32) uint32 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		s := status()
		if s&abi.StatusBusy == 0 {
			return s
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("DMA still busy after 10 s: status %#x", s)
		case <-time.After(100 * time.Microsecond):
		}
	}
}
