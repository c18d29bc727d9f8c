package dma

import (
	"bytes"
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fault/faulttest"
)

// runFixture is accessFixture's shared maps, without the message map (a
// run is never begun over a map with one).
func runFixture(t *testing.T) (*Map, *dmatest.RAM) {
	t.Helper()
	m, ram, _ := accessFixture(t)
	if err := m.Remove(0x21000, 0x1000); err != nil {
		t.Fatal(err)
	}
	return m, ram
}

// observer is a Rewrapper in front of a Space that counts failed accesses,
// as serve's does.
type observer struct {
	Space
	failed *atomic.Int64
}

func (o *observer) Unwrap() Space            { return o.Space }
func (o *observer) Rewrap(inner Space) Space { return &observer{Space: inner, failed: o.failed} }
func (o *observer) note(err error) {
	if err != nil {
		o.failed.Add(1)
	}
}
func (o *observer) Store32(a uint64, v uint32) error {
	err := o.Space.Store32(a, v)
	o.note(err)
	return err
}

func (o *observer) ReadAt(p []byte, a uint64) (int, error) {
	n, err := o.Space.ReadAt(p, a)
	o.note(err)
	return n, err
}

func (o *observer) WriteAt(p []byte, a uint64) (int, error) {
	n, err := o.Space.WriteAt(p, a)
	o.note(err)
	return n, err
}

// Every access through a run does what the same access through the Map
// does: the same bytes moved, the same count, the same *Error.
func TestRunMatchesMap(t *testing.T) {
	type access struct {
		op    Op
		store bool // Store32 of 4 bytes (op Write)
		addr  uint64
		n     int
	}
	cases := []access{
		{Read, false, 0x10010, 64},
		{Write, false, 0x10010, 64},
		{Read, false, 0x13ff0, 0x20},  // across adjacent maps
		{Write, false, 0x13ff0, 0x20}, // across adjacent maps
		{Read, false, 0x17ff8, 0x10},  // runs into a hole
		{Write, false, 0x17ff8, 0x10},
		{Read, false, 0x1fff0, 0x20}, // starts in a hole
		{Write, false, 0x5000, 4},    // unmapped
		{Read, false, math.MaxUint64 - 1, 4},
		{Read, false, 0x20000, 16},   // read-only map
		{Write, false, 0x20ff0, 4},   // into the read-only map
		{Read, false, 0x22000, 4},    // write-only map
		{Write, false, 0x22000, 4},   // write-only map
		{Read, false, 0x20ff8, 0x10}, // read-only into a hole
		{Write, true, 0x10040, 4},    // aligned
		{Write, true, 0x10041, 4},    // unaligned
		{Write, true, 0x13ffe, 4},    // across adjacent maps
		{Write, true, 0x20010, 4},    // read-only
		{Write, true, 0x17ffe, 4},    // into a hole
		{Write, true, 0x22ffc, 4},    // the write-only map's last word
	}
	do := func(s Space, a access, p []byte) (int, error) {
		switch {
		case a.store:
			return 4, s.Store32(a.addr, 0xa1b2c3d4)
		case a.op == Read:
			return s.ReadAt(p, a.addr)
		}
		return s.WriteAt(p, a.addr)
	}
	for _, a := range cases {
		m1, ram1 := runFixture(t)
		m2, ram2 := runFixture(t)
		p1, p2 := pattern(a.n, 200), pattern(a.n, 200)
		n1, err1 := do(m1, a, p1)
		if a.store && err1 != nil {
			n1 = 0
		}
		var run Run
		s := run.Begin(m2)
		if s == Space(m2) {
			t.Fatal("no run begun over a map of shared maps")
		}
		n2, err2 := do(s, a, p2)
		run.End()
		if a.store && err2 != nil {
			n2 = 0
		}
		if n1 != n2 || !sameError(err1, err2) {
			t.Errorf("%v%s %d@%#x: map %d, %v; run %d, %v", a.op, map[bool]string{true: " (Store32)"}[a.store], a.n, a.addr, n1, err1, n2, err2)
		}
		if !bytes.Equal(p1, p2) || !bytes.Equal(ram1.Bytes(), ram2.Bytes()) {
			t.Errorf("%v %d@%#x: the run moved other bytes than the map", a.op, a.n, a.addr)
		}
	}
}

// sameError: both nil, or both *Errors with the same fields and cause.
func sameError(a, b error) bool {
	var da, db *Error
	if !errors.As(a, &da) || !errors.As(b, &db) {
		return a == nil && b == nil
	}
	return *da == *db
}

// A DMA_UNMAP waits for the run to end, and no access after its answer
// reaches the removed map.
func TestRunHoldsOffUnmap(t *testing.T) {
	m, _ := runFixture(t)
	var run Run
	s := run.Begin(m)
	removed := make(chan error, 1)
	go func() { removed <- m.Remove(0x10000, 0x4000) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) while a run was begun", err)
	default:
	}
	var p [8]byte
	if _, err := s.ReadAt(p[:], 0x10000); err != nil {
		t.Fatalf("read inside the run while the unmap waits: %v", err)
	}
	run.End()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Remove still waits after End")
	}
	s = run.Begin(m)
	if _, err := s.ReadAt(p[:], 0x10000); !errors.Is(err, ErrUnmapped) {
		t.Errorf("read of the removed map in a new run: %v, want ErrUnmapped", err)
	}
	run.End()
}

// A run passes every door in front of the map: the fault door fires and
// an observer sees the failure, and MapOf still finds the map.
func TestRunPassesDoors(t *testing.T) {
	m, _ := runFixture(t)
	var failed atomic.Int64
	mem := &observer{Space: WithFaults(m, faulttest.Set(t, 1, "r: dma.read=fail; once"), "d"), failed: &failed}
	var run Run
	s := run.Begin(mem)
	defer run.End()
	if s == Space(mem) {
		t.Fatal("no run begun over a chain of Rewrappers")
	}
	if MapOf(s) != m {
		t.Error("MapOf does not find the map under a run's chain")
	}
	var p [8]byte
	if _, err := s.ReadAt(p[:], 0x10000); !errors.Is(err, ErrInjected) {
		t.Errorf("read through the run: %v, want the fault door's ErrInjected", err)
	}
	if failed.Load() != 1 {
		t.Errorf("observer saw %d failures, want 1", failed.Load())
	}
	if _, err := s.ReadAt(p[:], 0x10000); err != nil {
		t.Errorf("second read: %v", err)
	}
	if s2 := run.Begin(mem); s2 != s {
		t.Error("Begin over the same Space during a run built another chain")
	}
}

// Where a run cannot be had Begin hands back the Space itself and holds no
// lock: a door it cannot copy, a message map.
func TestRunFallsBack(t *testing.T) {
	removes := func(t *testing.T, m *Map, iova uint64) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- m.Remove(iova, 0x1000) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Remove waits for a run that should hold no lock")
		}
	}
	for _, door := range []func(Space) Space{
		func(s Space) Space { return wrapped{s} },
		func(s Space) Space { return &observer{Space: wrapped{s}} },
	} {
		m, _ := runFixture(t)
		s := door(m)
		var run Run
		if got := run.Begin(s); got != s {
			t.Errorf("Begin(%T) = %T, want the Space itself", s, got)
		}
		removes(t, m, 0x22000)
		run.End()
	}

	m, _ := runFixture(t)
	if err := m.Add(Mapping{IOVA: 0x21000, Size: 0x1000, Fd: -1, Prot: rw}); err != nil {
		t.Fatal(err)
	}
	var run Run
	if got := run.Begin(m); got != Space(m) {
		t.Errorf("Begin over a map with a message map = %T, want the map", got)
	}
	removes(t, m, 0x21000)
	run.End()
	if got := run.Begin(m); got == Space(m) {
		t.Error("no run once the message map is gone")
	}
	run.End()
}

// A run costs no allocation once its chain is built.
func TestRunAllocs(t *testing.T) {
	m, _ := runFixture(t)
	mem := WithFaults(m, faulttest.Set(t, 1, "r: dma.read=fail; iova=0x9990000..0x9990fff"), "d")
	var run Run
	var p [64]byte
	run.Begin(mem)
	run.End()
	allocs := testing.AllocsPerRun(100, func() {
		s := run.Begin(mem)
		if _, err := s.ReadAt(p[:], 0x10000); err != nil {
			t.Fatal(err)
		}
		if err := s.Store32(0x10040, 1); err != nil {
			t.Fatal(err)
		}
		run.End()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}
