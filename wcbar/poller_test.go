package wcbar

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// waitUntil polls cond every millisecond for up to 20 s (a loaded CI
// machine), failing t with what if it never holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// openFds counts this process's open file descriptors.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// The passes run on their own, work keeps the poller spinning, Stop joins
// the goroutine and closes the eventfd, and a Kick after Stop is harmless.
func TestPollerRunsAndStops(t *testing.T) {
	leakCheck(t)
	fds := openFds(t)
	var passes, work atomic.Int64
	work.Store(1000)
	pl, err := StartPoller(pioLikePacing(), func() bool {
		passes.Add(1)
		return work.Add(-1) > 0
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "1000 passes with work", func() bool { return passes.Load() >= 1000 })
	pl.Stop()
	pl.Stop() // idempotent
	n := passes.Load()
	pl.Kick()
	time.Sleep(10 * time.Millisecond)
	if m := passes.Load(); m != n {
		t.Errorf("%d passes after Stop", m-n)
	}
	if st := pl.Stats(); st.Passes < 1000 || st.Found < 999 {
		t.Errorf("Stats after 1000 passes, 999 with work: %+v", st)
	}
	if got := openFds(t); got != fds {
		t.Errorf("%d fds open after Stop, %d before StartPoller", got, fds)
	}
}

func pioLikePacing() Pacing {
	return Pacing{Spin: 50 * time.Microsecond, MinSleep: 150 * time.Microsecond, FineFor: 100 * time.Millisecond,
		MaxSleep: time.Millisecond, IdleAfter: time.Second, IdleSleep: 12 * time.Millisecond}
}

// A Kick ends a sleep that would otherwise last an hour, and counts as
// work (the poller spins after it); so does Stop.
func TestPollerKickEndsSleep(t *testing.T) {
	leakCheck(t)
	var passes atomic.Int64
	pl, err := StartPoller(Pacing{MinSleep: time.Hour, MaxSleep: time.Hour}, func() bool { passes.Add(1); return false })
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Stop()
	waitUntil(t, "the poller asleep after its first pass", func() bool { return passes.Load() == 1 && pl.sleeping.Load() })
	for i := range 3 {
		n := passes.Load()
		pl.Kick()
		waitUntil(t, fmt.Sprintf("a pass after kick %d", i), func() bool { return passes.Load() > n })
		waitUntil(t, fmt.Sprintf("asleep again after kick %d", i), func() bool { return pl.sleeping.Load() })
	}
	if w := pl.Wakeups(); w < 3 {
		t.Errorf("%d wakeups counted after 3 kicks that ended hour-long sleeps", w)
	}
}

// A Kick that lands while the poller is passing, not sleeping, is not
// lost: the next sleep does not start.
func TestPollerKickDuringPass(t *testing.T) {
	leakCheck(t)
	var passes atomic.Int64
	var pl *Poller
	inPass := make(chan struct{})
	release := make(chan struct{})
	pl, err := StartPoller(Pacing{MinSleep: time.Hour, MaxSleep: time.Hour}, func() bool {
		if passes.Add(1) == 2 {
			close(inPass)
			<-release
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Stop()
	waitUntil(t, "the poller asleep after its first pass", func() bool { return pl.sleeping.Load() })
	pl.Kick() // pass 2 starts and blocks
	<-inPass
	pl.Kick() // while passing
	close(release)
	waitUntil(t, "the pass after a kick during a pass", func() bool { return passes.Load() >= 3 })
}

// A poller's eventfd is one fd, and the fd is the eventfd Stop closes.
func TestPollerStopClosesFd(t *testing.T) {
	pl, err := newPoller(Pacing{}, func() bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	fd := pl.fd
	pl.Stop()
	if _, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); l == "anon_inode:[eventfd]" {
			t.Errorf("fd %d still an eventfd after Stop", fd)
		}
	}
	if pl.fd != -1 {
		t.Errorf("fd %d after Stop, want -1", pl.fd)
	}
	var st syscall.Stat_t
	_ = syscall.Fstat(fd, &st) // EBADF or another file: either way not ours
}

// BenchmarkPollerSleep: what a sleep asked of the poller lasts and costs,
// against a Go timer (impl=baseline), in the same run. ns/op is the
// sleep's wall time; cpu-ns/op the process's CPU time per sleep.
func BenchmarkPollerSleep(b *testing.B) {
	for _, d := range []time.Duration{50 * time.Microsecond, 150 * time.Microsecond, time.Millisecond} {
		b.Run(fmt.Sprintf("ask=%v/impl=baseline", d), func(b *testing.B) {
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			c := cpuTime(b)
			for b.Loop() {
				t.Reset(d)
				<-t.C
			}
			b.ReportMetric(float64(cpuTime(b)-c)/float64(b.N), "cpu-ns/op")
		})
		b.Run(fmt.Sprintf("ask=%v/impl=ours", d), func(b *testing.B) {
			pl, err := newPoller(Pacing{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer pl.Stop()
			c := cpuTime(b)
			for b.Loop() {
				pl.sleep(d)
			}
			b.ReportMetric(float64(cpuTime(b)-c)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user + system time in ns.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
