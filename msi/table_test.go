package msi

import (
	"context"
	"errors"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/msi/msitest"
)

const (
	trigEventfd = DataEventfd | ActionTrigger // 0x24
	trigNone    = DataNone | ActionTrigger    // 0x21
	trigBool    = DataBool | ActionTrigger
	unmaskNone  = DataNone | ActionUnmask // 0x11
	maskNone    = DataNone | ActionMask   // 0x09
)

// testCounts: INTx 1, MSI 2, MSI-X 4, ERR 1, REQ 0.
var testCounts = [NumIndexes]int{1, 2, 4, 1, 0}

func fdClosed(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == unix.EBADF
}

func countFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func mustSet(t *testing.T, tb *Table, index Index, flags, start, count uint32, fds []int, data []byte) {
	t.Helper()
	if err := tb.SetIRQs(index, flags, start, count, fds, data); err != nil {
		t.Fatal(err)
	}
}

// state is what SetIRQs may change, for "an error changes nothing".
type state struct {
	Mode     Mode
	Assigned []bool
	Pending  []bool
}

func stateOf(tb *Table) state {
	s := state{Mode: tb.Mode()}
	for _, st := range tb.Stats() {
		s.Assigned = append(s.Assigned, st.Assigned)
		s.Pending = append(s.Pending, st.Pending)
	}
	return s
}

func TestSetIRQsInvalid(t *testing.T) {
	tests := []struct {
		name         string
		index        Index
		flags        uint32
		start, count uint32
		fds          int // how many eventfds to pass
		data         []byte
		setup        func(t *testing.T, tb *Table)
	}{
		{name: "unknown flag bit", index: MSIX, flags: trigEventfd | 0x40, count: 1, fds: 1},
		{name: "two data types", index: MSIX, flags: DataNone | DataBool | ActionTrigger, count: 1},
		{name: "no action", index: MSIX, flags: DataEventfd, count: 1, fds: 1},
		{name: "two actions", index: INTx, flags: DataNone | ActionMask | ActionUnmask, count: 1},
		{name: "no flags", index: INTx, flags: 0, count: 1},
		{name: "index past REQ", index: NumIndexes, flags: trigEventfd, count: 1, fds: 1},
		{name: "huge index", index: math.MaxUint32, flags: trigNone, count: 0},
		{name: "fds without DATA_EVENTFD", index: MSIX, flags: trigNone, count: 1, fds: 1},
		{name: "range past the vectors", index: MSIX, flags: trigEventfd, start: 3, count: 2, fds: 2},
		{name: "start wraps uint32", index: MSIX, flags: trigEventfd, start: math.MaxUint32, count: 2, fds: 1},
		{name: "count 0 with eventfds", index: MSIX, flags: trigEventfd, count: 0, fds: 1},
		{name: "count 0 mask", index: INTx, flags: maskNone, count: 0},
		{name: "more fds than vectors", index: MSIX, flags: trigEventfd, start: 1, count: 1, fds: 2},
		{name: "bool data short", index: MSIX, flags: trigBool, count: 3, data: []byte{1, 1}, setup: enableMSIX},
		{name: "mask MSI-X", index: MSIX, flags: maskNone, count: 1, setup: enableMSIX},
		{name: "unmask MSI", index: MSI, flags: unmaskNone, count: 1},
		{name: "mask with eventfd", index: INTx, flags: DataEventfd | ActionMask, count: 1, fds: 1},
		{name: "fire a disabled index", index: MSI, flags: trigNone, count: 1},
		{name: "same fd twice", index: MSIX, flags: trigEventfd, count: 2, fds: -2},
		{name: "index without vectors", index: REQ, flags: trigEventfd, count: 1, fds: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTable(testCounts, nil)
			defer tb.Reset()
			if tt.setup != nil {
				tt.setup(t, tb)
			}
			var fds []int
			if tt.fds < 0 { // the same fd number, -fds times
				fd := msitest.NewEventFD(t).Fd()
				for range -tt.fds {
					fds = append(fds, fd)
				}
			}
			for range max(tt.fds, 0) {
				fds = append(fds, msitest.NewEventFD(t).Fd())
			}
			before := stateOf(tb)
			err := tb.SetIRQs(tt.index, tt.flags, tt.start, tt.count, fds, tt.data)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("err = %v, want EINVAL", err)
			}
			for _, fd := range fds {
				if !fdClosed(fd) {
					t.Errorf("fd %d passed to a failing SetIRQs is still open", fd)
				}
			}
			if diff := cmp.Diff(before, stateOf(tb)); diff != "" {
				t.Errorf("failed SetIRQs changed the table -before +after:\n%s", diff)
			}
		})
	}
}

func enableMSIX(t *testing.T, tb *Table) { mustSet(t, tb, MSIX, trigEventfd, 0, 1, nil, nil) }

// Requests that are legal though they do nothing visible.
func TestSetIRQsAccepted(t *testing.T) {
	tb := NewTable(testCounts, nil)
	for _, r := range []struct {
		name  string
		index Index
		flags uint32
		start uint32
	}{
		{"disable a never enabled index", MSIX, trigNone, 0},
		{"disable ignores start", MSI, trigNone, 99},
		{"disable an index without vectors", REQ, trigNone, 0},
	} {
		if err := tb.SetIRQs(r.index, r.flags, r.start, 0, nil, nil); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	}
	if tb.Mode() != ModeNone {
		t.Errorf("Mode = %v, want none", tb.Mode())
	}
}

// The MSI-X life cycle QEMU drives (vfio-user-notes 5.2), step by step.
func TestMSIXLifecycle(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	ev := [4]*msitest.EventFD{msitest.NewEventFD(t), msitest.NewEventFD(t), msitest.NewEventFD(t), msitest.NewEventFD(t)}
	counts := func() [4]uint64 { return [4]uint64{ev[0].Count(), ev[1].Count(), ev[2].Count(), ev[3].Count()} }
	check := func(step string, want [4]uint64, pending [4]bool) {
		t.Helper()
		if got := counts(); got != want {
			t.Errorf("%s: signals per vector = %v, want %v", step, got, want)
		}
		var got [4]bool
		for v := range got {
			got[v] = tb.Pending(MSIX, v)
		}
		if got != pending {
			t.Errorf("%s: pending = %v, want %v", step, got, pending)
		}
	}

	tb.Raise(0)
	if tb.Unrouted() != 1 || tb.Mode() != ModeNone {
		t.Errorf("raise with nothing enabled: unrouted %d, mode %v; want 1, none", tb.Unrouted(), tb.Mode())
	}

	// "MSI-X enable, all vectors masked": count 1, no fd.
	mustSet(t, tb, MSIX, trigEventfd, 0, 1, nil, nil)
	if tb.Mode() != ModeMSIX {
		t.Fatalf("Mode = %v, want MSI-X", tb.Mode())
	}
	tb.Raise(1)
	tb.Raise(1)
	tb.Raise(3)
	check("raised while de-assigned", [4]uint64{}, [4]bool{false, true, false, true})

	// The guest unmasks vector 1: the pending interrupt goes out at once, once.
	mustSet(t, tb, MSIX, trigEventfd, 1, 1, []int{ev[1].Fd()}, nil)
	check("vector 1 assigned", [4]uint64{0, 1, 0, 0}, [4]bool{false, false, false, true})
	tb.Raise(1)
	check("raise on assigned vector", [4]uint64{0, 2, 0, 0}, [4]bool{false, false, false, true})

	// All four assigned in one message; the earlier fd of vector 1 is replaced and closed.
	old := ev[1].Fd()
	mustSet(t, tb, MSIX, trigEventfd, 1, 1, []int{old}, nil)
	fds := []int{ev[0].Fd(), ev[1].Fd(), ev[2].Fd(), ev[3].Fd()}
	mustSet(t, tb, MSIX, trigEventfd, 0, 4, fds, nil)
	if !fdClosed(old) {
		t.Errorf("replaced fd %d still open", old)
	}
	check("all assigned", [4]uint64{0, 2, 0, 1}, [4]bool{})

	// Fire from the client: DATA_NONE fires the range, DATA_BOOL the set bytes.
	mustSet(t, tb, MSIX, trigNone, 2, 2, nil, nil)
	mustSet(t, tb, MSIX, trigBool, 0, 4, nil, []byte{1, 0, 0, 7})
	check("client fired", [4]uint64{1, 2, 1, 3}, [4]bool{})

	// The guest masks vectors 2 and 3 (QEMU de-assigns them: count 2, no fds).
	mustSet(t, tb, MSIX, trigEventfd, 2, 2, nil, nil)
	for _, fd := range fds[2:] {
		if !fdClosed(fd) {
			t.Errorf("de-assigned fd %d still open", fd)
		}
	}
	tb.Raise(2)
	tb.Raise(0)
	check("2 and 3 de-assigned", [4]uint64{2, 2, 1, 3}, [4]bool{false, false, true, false})

	// Out of range vectors are counted, not delivered.
	tb.Raise(4)
	tb.Raise(-1)
	if got := tb.Unrouted(); got != 3 {
		t.Errorf("unrouted = %d, want 3", got)
	}

	// Disable: every fd closed, pending forgotten, raises unrouted.
	mustSet(t, tb, MSIX, trigNone, 0, 0, nil, nil)
	for _, fd := range fds[:2] {
		if !fdClosed(fd) {
			t.Errorf("fd %d open after disable", fd)
		}
	}
	tb.Raise(0)
	check("disabled", [4]uint64{2, 2, 1, 3}, [4]bool{})
	if tb.Mode() != ModeNone || tb.Unrouted() != 4 {
		t.Errorf("after disable: mode %v unrouted %d, want none, 4", tb.Mode(), tb.Unrouted())
	}

	want := []VectorStats{
		{Index: MSIX, Vector: 0, Raised: 1, Delivered: 2},
		{Index: MSIX, Vector: 1, Raised: 3, Delivered: 2},
		{Index: MSIX, Vector: 2, Raised: 1, Delivered: 1},
		{Index: MSIX, Vector: 3, Raised: 1, Delivered: 3},
	}
	var got []VectorStats
	for _, s := range tb.Stats() {
		if s.Index == MSIX {
			got = append(got, s)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats -want +got:\n%s", diff)
	}
}

func TestModePriority(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	intx, msiEv, msix := msitest.NewEventFD(t), msitest.NewEventFD(t), msitest.NewEventFD(t)
	steps := []struct {
		name  string
		index Index
		flags uint32
		count uint32
		fds   []int
		want  Mode
	}{
		{"INTx enabled", INTx, trigEventfd, 1, []int{intx.Fd()}, ModeINTx},
		{"MSI enabled over INTx", MSI, trigEventfd, 1, []int{msiEv.Fd()}, ModeMSI},
		{"MSI-X enabled over MSI", MSIX, trigEventfd, 1, []int{msix.Fd()}, ModeMSIX},
		{"ERR does not change the mode", ERR, trigEventfd, 1, []int{msitest.NewEventFD(t).Fd()}, ModeMSIX},
		{"MSI disabled under MSI-X", MSI, trigNone, 0, nil, ModeMSIX},
		{"MSI-X disabled: back to INTx", MSIX, trigNone, 0, nil, ModeINTx},
		{"INTx disabled", INTx, trigNone, 0, nil, ModeNone},
	}
	for _, s := range steps {
		mustSet(t, tb, s.index, s.flags, 0, s.count, s.fds, nil)
		if got := tb.Mode(); got != s.want {
			t.Errorf("%s: Mode = %v, want %v", s.name, got, s.want)
		}
	}
}

// INTx is a level: automask on signal, re-signal on UNMASK while asserted,
// INTX_DISABLE gates it (vfio-user-notes 5.3).
func TestINTx(t *testing.T) {
	type step struct {
		do       string
		signals  uint64 // total eventfd signals after the step
		asserted bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"automask and unmask", []step{
			{"enable", 0, false},
			{"raise", 1, true},
			{"raise", 1, true},  // masked: no second edge
			{"unmask", 2, true}, // still asserted: signal again
			{"lower", 2, false},
			{"unmask", 2, false}, // deasserted: nothing
			{"raise", 3, true},
		}},
		{"INTX_DISABLE", []step{
			{"enable", 0, false},
			{"disable-intx", 0, false},
			{"raise", 0, true},
			{"unmask", 0, true},
			{"enable-intx", 1, true}, // the pin comes back asserted
			{"raise", 1, true},
		}},
		{"client mask", []step{
			{"enable", 0, false},
			{"mask", 0, false},
			{"raise", 0, true},
			{"mask-bool-0", 0, true}, // a zero byte changes nothing
			{"unmask-bool-0", 0, true},
			{"unmask-bool-1", 1, true},
		}},
		{"enabled without fd, fd later", []step{
			{"enable-nofd", 0, false},
			{"raise", 0, true},
			{"assign", 1, true},
			{"raise", 1, true},
		}},
		{"lowered before the fd comes", []step{
			{"enable-nofd", 0, false},
			{"raise", 0, true},
			{"lower", 0, false},
			{"assign", 0, false},
		}},
		{"client fire", []step{
			{"enable", 0, false},
			{"fire", 1, false}, // DATA_NONE|TRIGGER signals, no line state
			{"raise", 2, true},
			{"fire", 3, true},
		}},
		{"re-enable unmasks", []step{
			{"enable", 0, false},
			{"raise", 1, true},
			{"disable", 1, true},
			{"enable", 2, true}, // fresh enable, not masked, still asserted
		}},
		{"MSI-X takes over", []step{
			{"enable", 0, false},
			{"msix", 0, false},
			{"raise", 0, false}, // goes to MSI-X vector 0 (pending: no fd)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTable(testCounts, nil)
			defer tb.Reset()
			ev := msitest.NewEventFD(t)
			for i, s := range tt.steps {
				var err error
				switch s.do {
				case "enable":
					err = tb.SetIRQs(INTx, trigEventfd, 0, 1, []int{ev.Fd()}, nil)
				case "enable-nofd":
					err = tb.SetIRQs(INTx, trigEventfd, 0, 1, nil, nil)
				case "assign":
					err = tb.SetIRQs(INTx, trigEventfd, 0, 1, []int{ev.Fd()}, nil)
				case "disable":
					err = tb.SetIRQs(INTx, trigNone, 0, 0, nil, nil)
				case "raise":
					tb.Raise(0)
				case "lower":
					tb.Lower()
				case "mask":
					err = tb.SetIRQs(INTx, maskNone, 0, 1, nil, nil)
				case "unmask":
					err = tb.SetIRQs(INTx, unmaskNone, 0, 1, nil, nil)
				case "mask-bool-0":
					err = tb.SetIRQs(INTx, DataBool|ActionMask, 0, 1, nil, []byte{0})
				case "unmask-bool-0":
					err = tb.SetIRQs(INTx, DataBool|ActionUnmask, 0, 1, nil, []byte{0})
				case "unmask-bool-1":
					err = tb.SetIRQs(INTx, DataBool|ActionUnmask, 0, 1, nil, []byte{1})
				case "fire":
					err = tb.SetIRQs(INTx, trigNone, 0, 1, nil, nil)
				case "disable-intx":
					tb.SetINTxDisabled(true)
				case "enable-intx":
					tb.SetINTxDisabled(false)
				case "msix":
					err = tb.SetIRQs(MSIX, trigEventfd, 0, 1, nil, nil)
				default:
					t.Fatalf("unknown step %q", s.do)
				}
				if err != nil {
					t.Fatalf("step %d %s: %v", i, s.do, err)
				}
				if got := ev.Count(); got != s.signals {
					t.Errorf("step %d %s: signals = %d, want %d", i, s.do, got, s.signals)
				}
				if got := tb.INTxAsserted(); got != s.asserted {
					t.Errorf("step %d %s: asserted = %v, want %v", i, s.do, got, s.asserted)
				}
				if got := tb.Pending(INTx, 0); got != s.asserted {
					t.Errorf("step %d %s: Pending(INTx) = %v, want %v", i, s.do, got, s.asserted)
				}
			}
		})
	}
}

// The resample fd QEMU gives with DATA_EVENTFD|UNMASK under KVM is kept
// (and closed on replacement, disable and Reset), never written.
func TestINTxResampleFd(t *testing.T) {
	tb := NewTable(testCounts, nil)
	r1, r2 := msitest.NewEventFD(t), msitest.NewEventFD(t)
	mustSet(t, tb, INTx, trigEventfd, 0, 1, []int{msitest.NewEventFD(t).Fd()}, nil)
	fd1 := r1.Fd()
	mustSet(t, tb, INTx, DataEventfd|ActionUnmask, 0, 1, []int{fd1}, nil)
	fd2 := r2.Fd()
	mustSet(t, tb, INTx, DataEventfd|ActionUnmask, 0, 1, []int{fd2}, nil)
	if !fdClosed(fd1) {
		t.Errorf("replaced resample fd still open")
	}
	tb.Raise(0)
	mustSet(t, tb, INTx, unmaskNone, 0, 1, nil, nil)
	if r1.Count()+r2.Count() != 0 {
		t.Errorf("resample fd was written")
	}
	tb.Reset()
	if !fdClosed(fd2) {
		t.Errorf("resample fd open after Reset")
	}
}

func TestMSIAndClearPending(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	ev := msitest.NewEventFD(t)
	mustSet(t, tb, MSI, trigEventfd, 0, 2, []int{ev.Fd()}, nil) // vector 1 de-assigned
	tb.Raise(0)
	tb.Raise(1)
	if ev.Count() != 1 || !tb.Pending(MSI, 1) || tb.Pending(MSI, 0) {
		t.Fatalf("MSI: signals %d pending %v %v, want 1, false, true", ev.Count(), tb.Pending(MSI, 0), tb.Pending(MSI, 1))
	}
	mustSet(t, tb, INTx, trigEventfd, 0, 1, nil, nil)
	tb.ClearPending()
	if tb.Pending(MSI, 1) {
		t.Errorf("pending survived ClearPending")
	}
	// A cleared bit is not delivered when the fd comes.
	ev2 := msitest.NewEventFD(t)
	mustSet(t, tb, MSI, trigEventfd, 1, 1, []int{ev2.Fd()}, nil)
	if got := ev2.Count(); got != 0 {
		t.Errorf("cleared pending bit delivered %d signals", got)
	}
	if tb.Pending(MSI, 5) || tb.Pending(INTx, 1) || tb.Pending(NumIndexes, 0) || tb.Pending(MSIX, -1) {
		t.Errorf("out-of-range Pending reported true")
	}
}

// Reset closes every fd the table holds, whatever path stored it.
func TestResetClosesAllFds(t *testing.T) {
	before := countFds(t)
	tb := NewTable([NumIndexes]int{1, 8, 64, 1, 1}, nil)
	efds := func(n int) []int {
		var fds []int
		for range n {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
		return fds
	}
	mustSet(t, tb, INTx, trigEventfd, 0, 1, efds(1), nil)
	mustSet(t, tb, INTx, DataEventfd|ActionUnmask, 0, 1, efds(1), nil)
	mustSet(t, tb, MSI, trigEventfd, 0, 8, efds(8), nil)
	for start := uint32(0); start < 64; start += 16 {
		mustSet(t, tb, MSIX, trigEventfd, start, 16, efds(16), nil)
	}
	mustSet(t, tb, MSIX, trigEventfd, 0, 32, efds(10), nil) // replaces 32, assigns 10
	mustSet(t, tb, ERR, trigEventfd, 0, 1, efds(1), nil)
	mustSet(t, tb, REQ, trigEventfd, 0, 1, efds(1), nil)
	tb.SetIRQs(MSIX, trigEventfd, 60, 8, efds(3), nil) // fails: closes its fds
	tb.Reset()
	if got := countFds(t); got != before {
		t.Errorf("open fds after Reset = %d, want %d", got, before)
	}
	if tb.Mode() != ModeNone {
		t.Errorf("Mode after Reset = %v", tb.Mode())
	}
	for _, s := range tb.Stats() {
		if s.Assigned || s.Pending {
			t.Errorf("after Reset: %+v", s)
		}
	}
}

// Raise never writes to an fd SetIRQs closed (its number could already be
// someone else's): run with -race while vectors are reassigned, disabled
// and re-enabled under it. A write to a closed fd would show as Dropped.
func TestRaiseRacesSetIRQs(t *testing.T) {
	before := countFds(t)
	tb := NewTable(testCounts, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The raisers stop on every way out, a t.Fatal in mustSet included.
	stopRaisers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopRaisers()
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tb.Raise((i + g) % 4)
				if i%64 == 0 {
					tb.Lower()
					tb.Pending(MSIX, i%4)
				}
			}
		}()
	}
	efd := func() int {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	for i := range 2000 {
		switch i % 5 {
		case 0:
			mustSet(t, tb, MSIX, trigEventfd, 0, 4, []int{efd(), efd(), efd(), efd()}, nil)
		case 1:
			mustSet(t, tb, MSIX, trigEventfd, uint32(i%4), 1, nil, nil)
		case 2:
			mustSet(t, tb, INTx, trigEventfd, 0, 1, []int{efd()}, nil)
			mustSet(t, tb, INTx, unmaskNone, 0, 1, nil, nil)
		case 3:
			mustSet(t, tb, MSIX, trigNone, 0, 0, nil, nil)
			tb.SetINTxDisabled(i%2 == 0)
		case 4:
			tb.Reset()
		}
	}
	stopRaisers()
	tb.Reset()
	for _, s := range tb.Stats() {
		if s.Dropped != 0 {
			t.Errorf("%v vector %d: %d writes failed", s.Index, s.Vector, s.Dropped)
		}
	}
	if got := countFds(t); got != before {
		t.Errorf("open fds = %d, want %d", got, before)
	}
}

// A hostile client can hand a pipe instead of an eventfd: once full, a
// blocking write would stall the device. Raise must return regardless.
func TestRaiseNeverBlocks(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil { // blocking pipe
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	mustSet(t, tb, MSIX, trigEventfd, 0, 1, []int{p[1]}, nil)
	done := make(chan struct{})
	go func() {
		for range 100000 { // 800 KB: far more than a pipe buffer
			tb.Raise(0)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Raise blocked on a full pipe")
	}
}

// An fd that cannot be written (a pipe's read end) is counted as dropped.
func TestRaiseDropped(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	mustSet(t, tb, MSIX, trigEventfd, 0, 1, []int{p[0]}, nil)
	tb.Raise(0)
	tb.Raise(0)
	s := tb.Stats()
	var got VectorStats
	for _, v := range s {
		if v.Index == MSIX && v.Vector == 0 {
			got = v
		}
	}
	want := VectorStats{Index: MSIX, Vector: 0, Assigned: true, Raised: 2, Dropped: 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats -want +got:\n%s", diff)
	}
}

func TestRaiseDoesNotAllocate(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	ev := msitest.NewEventFD(t)
	cases := []struct {
		name  string
		setup func()
	}{
		{"unrouted", func() {}},
		{"INTx", func() { mustSet(t, tb, INTx, trigEventfd, 0, 1, []int{ev.Fd()}, nil) }},
		{"MSI-X pending", func() { mustSet(t, tb, MSIX, trigEventfd, 0, 1, nil, nil) }},
		{"MSI-X delivered", func() { mustSet(t, tb, MSIX, trigEventfd, 0, 1, []int{ev.Fd()}, nil) }},
	}
	for _, c := range cases {
		c.setup()
		if n := testing.AllocsPerRun(1000, func() { tb.Raise(0) }); n != 0 {
			t.Errorf("%s: Raise allocates %v times per call", c.name, n)
		}
	}
}

func TestEventFDWait(t *testing.T) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	ev := msitest.NewEventFD(t)
	mustSet(t, tb, MSIX, trigEventfd, 0, 1, []int{ev.Fd()}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		time.Sleep(10 * time.Millisecond)
		tb.Raise(0)
	})
	if err := ev.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := ev.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with nothing raised = %v, want DeadlineExceeded", err)
	}
	tb.Raise(0)
	tb.Raise(0)
	if err := ev.Wait(ctx); err != nil {
		t.Errorf("Wait on an already signalled fd: %v", err)
	}
	if got := ev.Count(); got != 3 {
		t.Errorf("Count = %d, want 3", got)
	}
}
