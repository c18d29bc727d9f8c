package vfiouser_test

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/msi/msitest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory's own fd
}

func mappingsOf(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), name)
}

// TestConnectDisconnectLeaks runs 1000 client lifetimes, each with guest
// RAM mapped by memfd, MSI-X eventfds, a region-info fd and message
// traffic, and asserts the process's fd count, goroutine count and
// mappings of the RAM come back to where they started.
func TestConnectDisconnectLeaks(t *testing.T) {
	leaktest.Check(t)
	cycles := 1000
	if testing.Short() {
		cycles = 100
	}
	s := startServer(t, "leak")
	ram := dmatest.NewRAM(t, 1<<20)
	evs := []*msitest.EventFD{msitest.NewEventFD(t), msitest.NewEventFD(t)}

	settle := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Errorf("did not settle: %s", what)
	}
	// Let the server's accept loop and everything from setup settle.
	runtime.GC()
	fds0 := openFDs(t)
	gs0 := runtime.NumGoroutine()
	maps0 := mappingsOf(t, ram.Name())

	ctx := context.Background()
	for i := range cycles {
		c, err := vfiousertest.Dial(ctx, s.Path)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Negotiate(); err != nil {
			t.Fatal(err)
		}
		if err := c.MapRAM(ram, 0x100000); err != nil {
			t.Fatal(err)
		}
		fds := []int{evs[0].Fd(), evs[1].Fd()}
		err = c.SetIRQs(2, vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger, 0, 2, fds, nil)
		unix.Close(fds[0])
		unix.Close(fds[1])
		if err != nil {
			t.Fatal(err)
		}
		ri, err := c.RegionInfo(2)
		if err != nil {
			t.Fatal(err)
		}
		ri.Close()
		if _, err := c.ReadConfig(0, 256); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			// Half the clients leave with the map and eventfds in place,
			// half tidy up first.
			if err := c.DisableIRQs(2); err != nil {
				t.Fatal(err)
			}
			if err := c.UnmapAll(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every client detached", func() bool { a, d, _ := s.Fake.Counts(); return a == cycles && d == cycles })
	settle("fd count", func() bool { return openFDs(t) <= fds0 })
	settle("goroutine count", func() bool { return runtime.NumGoroutine() <= gs0 })
	settle("RAM mappings", func() bool { return mappingsOf(t, ram.Name()) <= maps0 })
	t.Logf("%d clients with mapped RAM and 2 MSI-X eventfds came and went: open fds %d before, %d after; goroutines %d, %d; mappings of the RAM memfd %d, %d",
		cycles, fds0, openFDs(t), gs0, runtime.NumGoroutine(), maps0, mappingsOf(t, ram.Name()))
	if got := openFDs(t); got != fds0 {
		t.Errorf("open fds %d, want %d", got, fds0)
	}
	if got := runtime.NumGoroutine(); got > gs0 {
		t.Errorf("goroutines %d, want %d", got, gs0)
	}
	if got := mappingsOf(t, ram.Name()); got != maps0 {
		t.Errorf("mappings of the RAM memfd %d, want %d", got, maps0)
	}
}
