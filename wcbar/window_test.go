package wcbar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestMain fails the run if any poller goroutine outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if s := pollerStacks(2 * time.Second); s != "" {
			os.Stderr.WriteString("wcbar: poller goroutines leaked:\n" + s)
			code = 1
		}
	}
	os.Exit(code)
}

// pollerStacks waits up to d for every Poller goroutine (the windows'
// doorbell pollers run on Poller too) to
// exit and returns the stacks of those still there.
func pollerStacks(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		if !bytes.Contains(buf, []byte("wcbar.(*Poller).run")) {
			return ""
		}
		if time.Now().After(deadline) {
			return string(buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leakCheck fails t if a poller it started is still running after it.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if s := pollerStacks(2 * time.Second); s != "" {
			t.Errorf("poller goroutine leaked:\n%s", s)
		}
	})
}

func newWindow(t *testing.T, size uint64) *Window {
	t.Helper()
	w, err := New(t.Name(), size, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

// clientMap maps the window's fd as QEMU does: its own MAP_SHARED mapping.
func clientMap(t *testing.T, w *Window) []byte {
	t.Helper()
	mem, err := unix.Mmap(w.Fd(), 0, int(w.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func TestNew(t *testing.T) {
	tests := []struct {
		size uint64
		ok   bool
	}{
		{0, false}, {2048, false}, {4095, false}, {4096, true}, {6000, false},
		{3 << 12, false}, {1 << 20, true}, {16 << 20, true}, {1 << 63, false}, {math.MaxUint64, false},
	}
	for _, tt := range tests {
		w, err := New("new", tt.size, nil)
		if !tt.ok {
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("New(%#x) = %v, want EINVAL", tt.size, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%#x): %v", tt.size, err)
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(w.Fd(), &st); err != nil || uint64(st.Size) != tt.size || w.Size() != tt.size {
			t.Errorf("New(%#x): file size %d, Size() %#x, err %v", tt.size, st.Size, w.Size(), err)
		}
		seals, err := unix.FcntlInt(uintptr(w.Fd()), unix.F_GET_SEALS, 0)
		if err != nil || seals&(unix.F_SEAL_GROW|unix.F_SEAL_SHRINK) != unix.F_SEAL_GROW|unix.F_SEAL_SHRINK {
			t.Errorf("New(%#x): seals %#x, %v; want GROW|SHRINK", tt.size, seals, err)
		}
		// The client cannot resize it out from under either mapping.
		if err := unix.Ftruncate(w.Fd(), int64(tt.size/2)); !errors.Is(err, unix.EPERM) {
			t.Errorf("New(%#x): shrinking the sealed memfd: %v, want EPERM", tt.size, err)
		}
		if fl, _ := unix.FcntlInt(uintptr(w.Fd()), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("New(%#x): memfd not close-on-exec", tt.size)
		}
		if len(w.Areas()) != 1 {
			t.Errorf("New(%#x): Areas = %v, want the whole window", tt.size, w.Areas())
		}
		w.Close()
	}
}

func TestTrapAreas(t *testing.T) {
	p := uint64(os.Getpagesize())
	const size = 1 << 20
	type trap struct{ off, size uint64 }
	tests := []struct {
		name  string
		traps []trap
		want  []Area
	}{
		{"none", nil, []Area{{0, size}}},
		{"empty trap ignored", []trap{{0x100, 0}}, []Area{{0, size}}},
		{"one word mid-page rounds out to its page", []trap{{3*p + 8, 4}}, []Area{{0, 3 * p}, {4 * p, size - 4*p}}},
		{"straddling two pages", []trap{{2*p - 4, 8}}, []Area{{0, p}, {3 * p, size - 3*p}}},
		{"first page", []trap{{0, 1}}, []Area{{p, size - p}}},
		{"last page", []trap{{size - p, p}}, []Area{{0, size - p}}},
		{"past the end clipped", []trap{{size - 8, 1 << 40}}, []Area{{0, size - p}}},
		{"huge size does not wrap", []trap{{p, math.MaxUint64}}, []Area{{0, p}}},
		{"offset past the end ignored", []trap{{size, p}, {math.MaxUint64, 1}}, []Area{{0, size}}},
		{"overlapping and unsorted", []trap{{5 * p, 2 * p}, {p, p}, {6 * p, 3 * p}, {p + 4, 4}}, []Area{{0, p}, {2 * p, 3 * p}, {9 * p, size - 9*p}}},
		{"adjacent traps merge", []trap{{p, p}, {2 * p, p}}, []Area{{0, p}, {3 * p, size - 3*p}}},
		{"everything", []trap{{0, size}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(t, size)
			for _, tr := range tt.traps {
				w.Trap(tr.off, tr.size)
			}
			got := w.Areas()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Areas -want +got:\n%s", diff)
			}
			for _, a := range got {
				if a.Offset%p != 0 || a.Size%p != 0 || a.Size == 0 {
					t.Errorf("area %+v not page-aligned", a)
				}
			}
		})
	}
}

func TestAccessBounds(t *testing.T) {
	const size = 4096
	w := newWindow(t, size)
	tests := []struct {
		name string
		off  uint64
		n    int
		ok   bool
	}{
		{"start", 0, 16, true},
		{"whole", 0, size, true},
		{"ends at the end", size - 3, 3, true},
		{"empty at the end", size, 0, true},
		{"one past", size - 3, 4, false},
		{"starts past", size + 1, 0, false},
		{"huge offset", math.MaxUint64 - 1, 4, false},
	}
	for _, tt := range tests {
		for _, write := range []bool{false, true} {
			var n int
			var err error
			if write {
				n, err = w.WriteAt(make([]byte, tt.n), tt.off)
			} else {
				n, err = w.ReadAt(make([]byte, tt.n), tt.off)
			}
			if tt.ok && (err != nil || n != tt.n) {
				t.Errorf("%s (write %v): %d, %v; want %d, nil", tt.name, write, n, err, tt.n)
			}
			if !tt.ok && (n != 0 || !errors.Is(err, unix.EINVAL)) {
				t.Errorf("%s (write %v): %d, %v; want 0, EINVAL", tt.name, write, n, err)
			}
		}
	}
	// Word accessors out of range do nothing and read 0.
	for _, off := range []uint64{size - 3, size, math.MaxUint64 - 2} {
		w.Store32(off, 0xffffffff)
		w.Store64(off, math.MaxUint64)
		if w.Load32(off) != 0 || w.Load64(off) != 0 {
			t.Errorf("out-of-range load at %#x not 0", off)
		}
	}
	if got := w.Load64(size - 8); got != 0 {
		t.Errorf("an out-of-range store landed: last doubleword %#x", got)
	}
}

// Every access path agrees with a client mapping of the same fd, at every
// alignment, in host byte order.
func TestAccessAgreesWithClientMapping(t *testing.T) {
	w := newWindow(t, 1<<16)
	client := clientMap(t, w)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		off := rng.Uint64N(1<<16 - 64)
		n := rng.IntN(64)
		switch i % 6 {
		case 0:
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if _, err := w.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(client[off:off+uint64(n)], p) {
				t.Fatalf("WriteAt %d@%#x: client sees %x, want %x", n, off, client[off:off+uint64(n)], p)
			}
		case 1:
			for j := range n {
				client[off+uint64(j)] = byte(rng.Uint32())
			}
			p := make([]byte, n)
			if _, err := w.ReadAt(p, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(client[off:off+uint64(n)], p) {
				t.Fatalf("ReadAt %d@%#x = %x, client has %x", n, off, p, client[off:off+uint64(n)])
			}
		case 2:
			v := rng.Uint32()
			w.Store32(off, v)
			if got := binary.NativeEndian.Uint32(client[off:]); got != v {
				t.Fatalf("Store32(%#x, %#x): client sees %#x", off, v, got)
			}
		case 3:
			if got, want := w.Load32(off), binary.NativeEndian.Uint32(client[off:]); got != want {
				t.Fatalf("Load32(%#x) = %#x, client has %#x", off, got, want)
			}
		case 4:
			v := rng.Uint64()
			w.Store64(off, v)
			if got := binary.NativeEndian.Uint64(client[off:]); got != v {
				t.Fatalf("Store64(%#x, %#x): client sees %#x", off, v, got)
			}
		case 5:
			if got, want := w.Load64(off), binary.NativeEndian.Uint64(client[off:]); got != want {
				t.Fatalf("Load64(%#x) = %#x, client has %#x", off, got, want)
			}
		}
	}
}

// Byte writes that share a word with concurrent writers must not lose
// their neighbours' bytes (the compare-and-swap on the word).
func TestSubWordWritesDoNotClobberNeighbours(t *testing.T) {
	w := newWindow(t, 4096)
	client := clientMap(t, w)
	const rounds = 20000
	var wg sync.WaitGroup
	for b := range 3 { // bytes 0..2 of word 0x100 through WriteAt
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				w.WriteAt([]byte{byte(i) | 1}, 0x100+uint64(b))
			}
			w.WriteAt([]byte{0xa0 + byte(b)}, 0x100+uint64(b))
		}()
	}
	wg.Add(1)
	go func() { // byte 3 through Store32's unaligned path
		defer wg.Done()
		for i := range rounds {
			w.Store32(0x103, uint32(i)|1)
		}
		w.Store32(0x103, 0xb4b5b6a3)
	}()
	wg.Wait()
	want := []byte{0xa0, 0xa1, 0xa2}
	var tail [4]byte
	binary.NativeEndian.PutUint32(tail[:], 0xb4b5b6a3)
	want = append(want, tail[:]...)
	if got := client[0x100:0x107]; !bytes.Equal(got, want) {
		t.Errorf("bytes 0x100..0x106 = %x, want %x: a concurrent sub-word write was lost", got, want)
	}
}

func TestWatchSeesClientStores(t *testing.T) {
	leakCheck(t)
	w := newWindow(t, 1<<16)
	client := clientMap(t, w)
	type event struct {
		db uint32 // which doorbell
		v  uint32
	}
	events := make(chan event, 64)
	w.Watch(0x1000, func(v uint32) { events <- event{0, v} })
	w.Watch(0x2004, func(v uint32) { events <- event{1, v} })
	w.Start()
	w.Start() // no second poller
	expect := func(want event) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("doorbell event %+v, want %+v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no doorbell event, want %+v", want)
		}
	}
	store := func(off uint64, v uint32) {
		binary.NativeEndian.PutUint32(client[off:], v) // the guest's plain store
	}
	// A burst, each value acknowledged before the next, as a driver that
	// waits for completion would ring.
	for i := uint32(1); i <= 20; i++ {
		store(0x1000, i)
		expect(event{0, i})
	}
	// Idle long enough for the poller to back off to its slowest pace.
	time.Sleep(50 * time.Millisecond)
	store(0x2004, 7)
	expect(event{1, 7})
	// A trapped (message) write of the doorbell reaches the same word.
	w.WriteAt([]byte{9, 0, 0, 0}, 0x2004)
	expect(event{1, binary.NativeEndian.Uint32([]byte{9, 0, 0, 0})})
	// Stores elsewhere, and a store of the same value, are not doorbells.
	store(0x1004, 1)
	store(0x1000, 20)
	w.Stop()
	w.Stop()
	select {
	case e := <-events:
		t.Fatalf("unexpected event %+v", e)
	default:
	}

	// Stopped: nothing is seen. Restarted: the baseline is the value at
	// Start, so the store made while stopped is not an event but the next is.
	store(0x1000, 21)
	time.Sleep(10 * time.Millisecond)
	if len(events) != 0 {
		t.Fatalf("event while stopped")
	}
	w.Start()
	store(0x1000, 22)
	expect(event{0, 22})
	w.Stop()
}

func TestWatchMisuse(t *testing.T) {
	leakCheck(t)
	w := newWindow(t, 4096)
	fn := func(uint32) {}
	for _, c := range []struct {
		name string
		off  uint64
		fn   func(uint32)
	}{
		{"misaligned", 2, fn},
		{"outside", 4096, fn},
		{"nil fn", 0, nil},
	} {
		if !panics(func() { w.Watch(c.off, c.fn) }) {
			t.Errorf("Watch %s did not panic", c.name)
		}
	}
	w.Start() // no watches: nothing to run
	if s := pollerStacks(0); s != "" {
		t.Errorf("Start without watches started a poller")
	}
	w.Watch(4092, fn)
	w.Start()
	if !panics(func() { w.Watch(0, fn) }) {
		t.Errorf("Watch while running did not panic")
	}
	w.Stop()
}

func panics(f func()) (p bool) {
	defer func() { p = recover() != nil }()
	f()
	return false
}

// Idle, the poller must not spin: its pace falls to about one pass per
// millisecond, and the process uses a small fraction of a core.
func TestIdlePollerIsCheap(t *testing.T) {
	leakCheck(t)
	w := newWindow(t, 4096)
	w.Watch(0, func(uint32) {})
	w.Start()
	defer w.Stop()
	time.Sleep(50 * time.Millisecond) // past the spin phase and the backoff ramp

	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	p0, t0 := w.polls.Load(), time.Now()
	time.Sleep(300 * time.Millisecond)
	p1, elapsed := w.polls.Load(), time.Since(t0)
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)

	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	polls := p1 - p0
	perPoll := elapsed / time.Duration(max(polls, 1))
	t.Logf("idle: %d polls in %v (one per %v), CPU %v", polls, elapsed.Round(time.Millisecond), perPoll, cpu)
	if perPoll < doorbellPacing.MaxSleep/2 {
		t.Errorf("idle poller runs every %v, want about %v", perPoll, doorbellPacing.MaxSleep)
	}
	if cpu > elapsed/5 {
		t.Errorf("idle process used %v CPU in %v", cpu, elapsed)
	}
}

func TestClose(t *testing.T) {
	leakCheck(t)
	w, err := New("close", 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	fd := w.Fd()
	w.Watch(0, func(uint32) {})
	w.Start()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if s := pollerStacks(time.Second); s != "" {
		t.Errorf("Close did not stop the poller")
	}
	if !fdClosed(fd) || w.Fd() != -1 {
		t.Errorf("memfd not closed (Fd() = %d)", w.Fd())
	}
	if _, err := w.ReadAt(make([]byte, 4), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAt after Close: %v, want ErrClosed", err)
	}
	if _, err := w.WriteAt(make([]byte, 4), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteAt after Close: %v, want ErrClosed", err)
	}
	w.Store32(0, 1)
	w.Store64(0, 1)
	if w.Load32(0) != 0 || w.Load64(0) != 0 {
		t.Errorf("loads after Close not 0")
	}
	w.Start()
	if s := pollerStacks(0); s != "" {
		t.Errorf("Start after Close started a poller")
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func fdClosed(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == unix.EBADF
}

// Everything at once under -race: message accesses, device word accesses,
// guest stores and poller start/stop cycles.
func TestConcurrentUse(t *testing.T) {
	leakCheck(t)
	w := newWindow(t, 1<<16)
	client := clientMap(t, w)
	var seen sync.Map
	w.Watch(0x40, func(v uint32) { seen.Store(v, true) })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	work := []func(i int){
		func(i int) { w.WriteAt([]byte{byte(i), byte(i >> 8), 1, 2, 3}, uint64(i%4000)) },
		func(i int) { w.ReadAt(make([]byte, 13), uint64(i%4000)) },
		func(i int) { w.Store32(0x40, uint32(i)) },
		func(i int) { w.Load64(uint64(i%4000) &^ 7) },
		func(i int) { binary.NativeEndian.PutUint32(client[0x80:], uint32(i)) },
	}
	for _, f := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				f(i)
			}
		}()
	}
	for range 50 {
		w.Start()
		time.Sleep(time.Millisecond)
		w.Stop()
	}
	close(stop)
	wg.Wait()
	n := 0
	seen.Range(func(_, _ any) bool { n++; return true })
	if n == 0 {
		t.Errorf("the poller saw none of the doorbell stores")
	}
}
