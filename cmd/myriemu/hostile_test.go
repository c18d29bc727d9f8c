package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// The hostile-client tests of issue 8: `serve` with two testdev devices
// in this process; a hostile client attacks the first while, after each
// attack, a fresh client of the second does a 1 MiB REGION_WRITE. After
// the hostile client leaves, the process's open fds, threads and
// mappings of client memory are back to their baseline.

// hostileRig is serve running in-process with two testdev devices.
type hostileRig struct {
	victim, other string // socket paths
	stderr        *syncBuffer
	stop          func()
}

func startHostileRig(t *testing.T, extra ...string) *hostileRig {
	t.Helper()
	dir, err := os.MkdirTemp("", "hostile")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &hostileRig{victim: filepath.Join(dir, "victim.sock"), other: filepath.Join(dir, "other.sock"), stderr: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	a := &app{stdout: pw, stderr: r.stderr, kinds: deviceKinds()}
	args := append([]string{"serve", "--log-level", "error",
		"--device", "testdev,socket=" + r.victim, "--device", "testdev,socket=" + r.other}, extra...)
	code := make(chan int, 1)
	go func() {
		code <- a.run(ctx, args)
		pw.Close()
	}()
	ready := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(pr) // until serve returns: the ready line
		ready <- string(b)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, e1 := os.Stat(r.victim)
		_, e2 := os.Stat(r.other)
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("serve did not listen; stderr:\n%s", r.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if c := <-code; c != 0 {
				t.Errorf("serve exited %d; stderr:\n%s", c, r.stderr.String())
			}
			if out := <-ready; !strings.HasPrefix(out, "myriemu: ready") {
				t.Errorf("stdout %q, want the ready line", out)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// dialNegotiated connects a client and negotiates as QEMU.
func dialNegotiated(t *testing.T, path string) *vfiousertest.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := vfiousertest.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 20 * time.Second // a loaded CI machine under -race
	if err := c.Negotiate(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// otherServes connects a fresh client to the other device (a new
// connection starts a new reader thread: issue 8 case 1 broke exactly
// there), writes 1 MiB to its BAR4 window in one REGION_WRITE and reads
// some of it back.
func (r *hostileRig) otherServes(t *testing.T, step string) {
	t.Helper()
	c := dialNegotiated(t, r.other)
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("%s: other device's client saw violations: %v", step, err)
		}
	}()
	data := bytes.Repeat([]byte(step[:1]), abi.WindowSize)
	for i := range data {
		data[i] ^= byte(i)
	}
	if err := c.WriteRegion(abi.WindowBAR, 0, data); err != nil {
		t.Fatalf("%s: 1 MiB REGION_WRITE on the other device: %v", step, err)
	}
	got := make([]byte, 4096)
	if err := c.ReadRegion(abi.WindowBAR, 0x10000, got); err != nil {
		t.Fatalf("%s: read back: %v", step, err)
	}
	if !bytes.Equal(got, data[0x10000:0x11000]) {
		t.Fatalf("%s: the other device's window reads back wrong data", step)
	}
}

// procCounts is what a client must not leave behind in the process.
type procCounts struct {
	fds, threads, clientMaps int
}

func (p procCounts) String() string {
	return fmt.Sprintf("fds %d, threads %d, mappings of client files %d", p.fds, p.threads, p.clientMaps)
}

// counts reads /proc/self. Client files are the memfds the tests create
// (named hostile-*); the server's own windows and the runtime's memory
// are not counted, so the figure is exact.
func counts(t *testing.T) procCounts {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return procCounts{fds: len(fds) - 1, threads: len(tasks), clientMaps: strings.Count(string(maps), "/memfd:hostile-")}
}

// threadSlack is how many more OS threads than at the baseline are
// tolerated: the Go runtime keeps idle threads it started for blocking
// syscalls (the test's own memfd_create and sendmsg calls) and never ends
// them; the server's reader threads end with their connection.
const threadSlack = 3

// backToBaseline waits for the counts to come back to base (threads within
// threadSlack) and fails the test if they do not within 10 s.
func backToBaseline(t *testing.T, base procCounts) {
	t.Helper()
	var now procCounts
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		now = counts(t)
		// Fewer fds than at the baseline is no leak: the runtime or an
		// earlier test may have held one then.
		if now.fds <= base.fds && now.clientMaps == base.clientMaps && now.threads <= base.threads+threadSlack {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the hostile client left: %v; baseline %v", now, base)
			return
		}
	}
	t.Logf("baseline: %v; after the hostile client left: %v", base, now)
}

// memfd returns a memfd named hostile-* of size bytes (sparse).
func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("hostile-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		t.Fatalf("ftruncate %d: %v", size, err)
	}
	return fd
}

// errnos tallies a hostile client's replies.
type errnos map[string]int

func (e errnos) add(t *testing.T, err error, allowed ...unix.Errno) {
	t.Helper()
	if err := e.count(err, allowed...); err != nil {
		t.Fatal(err)
	}
}

// count tallies err: nil as "ok", an allowed errno reply by its name;
// anything else is returned.
func (e errnos) count(err error, allowed ...unix.Errno) error {
	if err == nil {
		e["ok"]++
		return nil
	}
	var re *vfiousertest.ReplyError
	if !errors.As(err, &re) {
		return fmt.Errorf("not an errno reply: %w", err)
	}
	for _, a := range allowed {
		if re.Errno == a {
			e[unix.ErrnoName(a)]++
			return nil
		}
	}
	return fmt.Errorf("errno reply %v, want one of %v", re.Errno, allowed)
}

// pipelined is how many requests the hostile client keeps in flight: a
// client need not wait for each reply, and a round trip per map would
// make the 400,000-map case take minutes on a loaded machine.
const pipelined = 32

// mapMany sends DMA_MAP i for i in [from, to) with up to pipelined in
// flight, calling every after each index divisible by 1<<14 is answered
// (from the test goroutine), and tallies the replies.
func mapMany(t *testing.T, c *vfiousertest.Client, from, to int, tally errnos, mp func(i int) error, every func(i int), allowed ...unix.Errno) {
	t.Helper()
	const chunk = 1 << 14
	for lo := from; lo < to; lo += chunk {
		hi := min(lo+chunk, to)
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		next := lo
		for range pipelined {
			wg.Go(func() {
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= hi {
						return
					}
					err := mp(i)
					mu.Lock()
					if e := tally.count(err, allowed...); e != nil && firstErr == nil {
						firstErr = fmt.Errorf("map %d: %w", i, e)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			t.Fatal(firstErr)
		}
		if every != nil {
			every(lo)
		}
	}
}

const rw = vfiouser.DMAMapRead | vfiouser.DMAMapWrite

// warmUp runs one short hostile-like client and one other-device client
// so that the runtime's thread pool and the servers are in their steady
// state before the baseline is taken.
func warmUp(t *testing.T, r *hostileRig) procCounts {
	t.Helper()
	c := dialNegotiated(t, r.victim)
	for i := range 8 {
		fd := memfd(t, 1<<20)
		err := c.MapFD(uint64(i)<<20, 4096, 0, fd, rw)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	r.otherServes(t, "warm-up")
	runtime.GC()
	return counts(t)
}

// Case 1: DMA_MAPs of 4 KiB from memfds ftruncated to 40 TiB, then 20,
// 10, ... down to 4 KiB; and maps of each whole file. Each 4 KiB map costs
// 4 KiB of address space; the whole-file maps past the 1 TiB per-client
// limit get ENOMEM.
func TestHostileSparseHugeMemfds(t *testing.T) {
	leaktest.Check(t)
	r := startHostileRig(t)
	base := warmUp(t, r)
	c := dialNegotiated(t, r.victim)
	tally := errnos{}
	iova := uint64(0)
	for size := int64(40 << 40); size >= 4096; size /= 2 {
		fd := memfd(t, size)
		tally.add(t, c.MapFD(iova, 4096, uint64(size-4096), fd, rw), unix.ENOMEM)
		iova += 1 << 20
		tally.add(t, c.MapFD(1<<56+uint64(size), uint64(size), 0, fd, rw), unix.ENOMEM)
		unix.Close(fd)
		if size >= 1<<40 || size == 4096 {
			r.otherServes(t, fmt.Sprintf("after the %d-byte memfd", size))
		}
	}
	t.Logf("hostile client's replies: %v", tally)
	if tally["ENOMEM"] == 0 || tally["ok"] < 34 {
		t.Errorf("replies %v: want every 4 KiB map accepted and the huge whole-file maps refused ENOMEM", tally)
	}
	if _, err := c.ReadConfig(0, 64); err != nil {
		t.Errorf("hostile client after its refusals: %v", err)
	}
	c.Close()
	r.otherServes(t, "after the hostile client left")
	backToBaseline(t, base)
}

// Case 2: 65,444 DMA_MAPs of 4 KiB, each from its own memfd (2,000
// unless MYRIEMU_SOAK is set, see soak_test.go). The first
// max-dma-files are mapped, the rest get ENOSPC; the process never nears
// vm.max_map_count.
func TestHostileDistinctMemfds(t *testing.T) {
	leaktest.Check(t)
	n := 65444
	if _, full := soakDuration(t); !full {
		n = 2000 // past the 64 files all the same
	}
	r := startHostileRig(t)
	base := warmUp(t, r)
	c := dialNegotiated(t, r.victim)
	tally := errnos{}
	mapMany(t, c, 0, n, tally, func(i int) error {
		fd, err := unix.MemfdCreate("hostile-ram", unix.MFD_CLOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Ftruncate(fd, 4096); err != nil {
			return err
		}
		return c.MapFD(uint64(i)<<12, 4096, 0, fd, rw)
	}, func(i int) { r.otherServes(t, fmt.Sprintf("after %d maps", i)) }, unix.ENOSPC)
	r.otherServes(t, fmt.Sprintf("after all %d maps", n))
	t.Logf("hostile client's replies to %d DMA_MAPs of distinct memfds: %v", n, tally)
	if tally["ok"] != 64 || tally["ENOSPC"] != n-64 {
		t.Errorf("replies %v: want 64 accepted (--max-dma-files) and %d ENOSPC", tally, n-64)
	}
	if _, err := c.ReadConfig(0, 64); err != nil {
		t.Errorf("hostile client after its refusals: %v", err)
	}
	c.Close()
	r.otherServes(t, "after the hostile client left")
	backToBaseline(t, base)
}

// Case 3: 400,000 DMA_MAPs of 4 KiB of one memfd, then fd-less maps
// (10,000 and max_dma_maps 16384 unless MYRIEMU_SOAK is set). The
// first --max-dma-mmaps with the fd are mapped, the rest get ENOSPC; the
// fd-less maps fill up to max_dma_maps (65535) and then get ENOSPC too.
func TestHostileManyMapsOfOneMemfd(t *testing.T) {
	leaktest.Check(t)
	n, maxMaps := 400000, 65535
	var extra []string
	if _, full := soakDuration(t); !full {
		// Past every limit all the same, in a few seconds under -race.
		n, maxMaps = 10000, 16384
		extra = []string{"--max-dma-maps", "16384"}
	}
	fdless := maxMaps
	r := startHostileRig(t, extra...)
	base := warmUp(t, r)
	c := dialNegotiated(t, r.victim)
	if got := c.Caps().MaxDMAMaps; got != maxMaps {
		t.Errorf("advertised max_dma_maps %d, want %d", got, maxMaps)
	}
	fd := memfd(t, int64(n)*4096)
	tally := errnos{}
	start := time.Now()
	mapMany(t, c, 0, n, tally, func(i int) error {
		return c.MapFD(uint64(i)<<12, 4096, uint64(i)<<12, fd, rw)
	}, func(i int) {
		if i%(1<<17) == 0 {
			r.otherServes(t, fmt.Sprintf("after %d maps", i))
		}
	}, unix.ENOSPC)
	unix.Close(fd)
	t.Logf("%d DMA_MAPs of one memfd in %v: %v", n, time.Since(start).Round(time.Millisecond), tally)
	// --max-dma-mmaps, unless the process budget (half of this machine's
	// vm.max_map_count) is smaller.
	mmaps := min(dma.DefaultMaxMmaps, dma.DefaultBudgetMmaps())
	if tally["ok"] != mmaps {
		t.Errorf("replies %v: want %d accepted (--max-dma-mmaps)", tally, mmaps)
	}
	r.otherServes(t, "after the fd maps")
	fl := errnos{}
	mapMany(t, c, 0, fdless, fl, func(i int) error {
		return c.MapFD(1<<40+uint64(i)<<12, 4096, 0, -1, rw)
	}, nil, unix.ENOSPC)
	t.Logf("then %d fd-less DMA_MAPs: %v", fdless, fl)
	if fl["ok"] != maxMaps-mmaps {
		t.Errorf("fd-less replies %v: want %d accepted (max_dma_maps %d in all)", fl, maxMaps-mmaps, maxMaps)
	}
	r.otherServes(t, "after the fd-less maps")
	if err := c.UnmapAll(); err != nil {
		t.Errorf("UnmapAll: %v", err)
	}
	c.Close()
	r.otherServes(t, "after the hostile client left")
	backToBaseline(t, base)
}

// Case 4: a client tries to seal the window memfd the server hands out
// (F_SEAL_FUTURE_WRITE would make every later client's writable mmap fail
// with EPERM); the seal is refused and the next client maps it writable.
func TestHostileSealsWindow(t *testing.T) {
	leaktest.Check(t)
	r := startHostileRig(t)
	base := warmUp(t, r)
	c := dialNegotiated(t, r.victim)
	ri, err := c.RegionInfo(abi.WindowBAR)
	if err != nil || ri.Fd < 0 {
		t.Fatalf("window region info: fd %d, %v", ri.Fd, err)
	}
	for _, seal := range []int{unix.F_SEAL_FUTURE_WRITE, unix.F_SEAL_WRITE, unix.F_SEAL_SHRINK} {
		if _, err := unix.FcntlInt(uintptr(ri.Fd), unix.F_ADD_SEALS, seal); !errors.Is(err, unix.EPERM) {
			t.Errorf("client F_ADD_SEALS %#x on the window: %v, want EPERM", seal, err)
		}
	}
	if err := unix.Ftruncate(ri.Fd, 1<<30); !errors.Is(err, unix.EPERM) {
		t.Errorf("client ftruncate of the window: %v, want EPERM", err)
	}
	ri.Close()
	c.Close()
	r.otherServes(t, "after the sealing attempt")

	next := dialNegotiated(t, r.victim)
	ri, err = next.RegionInfo(abi.WindowBAR)
	if err != nil || ri.Fd < 0 {
		t.Fatalf("next client's window region info: fd %d, %v", ri.Fd, err)
	}
	mem, err := unix.Mmap(ri.Fd, int64(ri.Offset), int(ri.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("next client's writable mmap of the window: %v", err)
	}
	unix.Munmap(mem)
	ri.Close()
	next.Close()
	backToBaseline(t, base)
}
