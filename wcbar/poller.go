package wcbar

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Poller calls a pass over mmapped memory on its own goroutine, paced by a
// Pacing, from StartPoller until Stop. It sleeps in ppoll(2) on an eventfd
// with the sleep as timeout, not on a Go timer: the runtime's netpoller
// rounds every wait shorter than a millisecond up to one (a 20 µs
// time.Sleep takes about 1.08 ms on the project's machine), while ppoll
// ends within the thread's timer slack (50 µs by default). Kick writes the
// eventfd, but only while the poller sleeps, so a driver that traps often
// costs no system call per trap while the poller is spinning.
type Poller struct {
	pacing Pacing
	pass   func() bool

	kicked   atomic.Bool // a Kick since the poller last looked
	sleeping atomic.Bool // the poller is in (or about to enter) ppoll
	stopping atomic.Bool
	wakeups  atomic.Uint64 // sleeps ended by a Kick or Stop, not by their timeout

	mu sync.Mutex // fd against Kick racing the close in Stop
	fd int        // eventfd; -1 once closed
	wg sync.WaitGroup

	stats PollerStats // the run goroutine's own; read after it is joined
}

// PollerStats count what a poller did, for telling where latency hides:
// work found right after a sleep that ran its course waited for the
// poller (up to that sleep), work found while spinning or after a kick
// did not.
type PollerStats struct {
	Passes, Found uint64 // passes, and those that found work
	// Sleeps that ran their course, in the fine tier (MinSleep within
	// FineFor), the ramp (up to MaxSleep) and the idle tier, and the
	// passes right after them that found work.
	FineSleeps, RampSleeps, IdleSleeps uint64
	FoundFine, FoundRamp, FoundIdle    uint64
	Kicked                             uint64 // sleeps ended or skipped by a Kick
}

// StartPoller starts calling pass, which reports whether it found work.
// Kick, Stop and Wakeups may be called from any goroutine, pass must not
// call Stop.
func StartPoller(p Pacing, pass func() bool) (*Poller, error) {
	pl, err := newPoller(p, pass)
	if err != nil {
		return nil, err
	}
	pl.wg.Add(1)
	go pl.run()
	return pl, nil
}

// newPoller is a Poller that is not running: Stop only closes its eventfd.
func newPoller(p Pacing, pass func() bool) (*Poller, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wcbar: poller eventfd: %w", err)
	}
	return &Poller{pacing: p, pass: pass, fd: fd}, nil
}

// Kick ends the poller's sleep at once (or the next one, if it is about to
// sleep) and counts as work found: the caller learnt of activity another
// way, a trapped access. It never blocks.
func (pl *Poller) Kick() {
	pl.kicked.Store(true)
	if pl.sleeping.Load() {
		pl.signal()
	}
}

// Stop makes the poller return after its current pass, waits for it and
// closes the eventfd. Idempotent.
func (pl *Poller) Stop() {
	pl.stopping.Store(true)
	pl.signal()
	pl.wg.Wait()
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.fd >= 0 {
		unix.Close(pl.fd)
		pl.fd = -1
	}
}

// Wakeups counts the sleeps a Kick or Stop ended before their timeout.
func (pl *Poller) Wakeups() uint64 { return pl.wakeups.Load() }

// Stats returns the counters of a stopped poller (zero before Stop).
func (pl *Poller) Stats() PollerStats {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.fd >= 0 {
		return PollerStats{}
	}
	return pl.stats
}

// signal makes the eventfd readable.
func (pl *Poller) signal() {
	one := [8]byte{1} // the counter's 1, native (little) endian
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.fd >= 0 {
		_, _ = unix.Write(pl.fd, one[:]) // EAGAIN: already readable, which is all we want
	}
}

func (pl *Poller) run() {
	defer pl.wg.Done()
	p := pl.pacing
	st := &pl.stats
	lastWork := time.Now()
	var sleep time.Duration // 0 while spinning
	var slept *uint64       // the Found counter of the sleep that just ran its course
	for !pl.stopping.Load() {
		st.Passes++
		if pl.pass() {
			lastWork, sleep = time.Now(), 0
			st.Found++
			if slept != nil {
				*slept++
			}
		}
		slept = nil
		if sleep == 0 && time.Since(lastWork) < p.Spin {
			runtime.Gosched() // two cores are shared with QEMU's vCPUs
			continue
		}
		sleep = p.next(sleep, lastWork)
		if pl.sleep(sleep) {
			lastWork, sleep = time.Now(), 0
			st.Kicked++
			continue
		}
		switch {
		case sleep == p.MinSleep && time.Since(lastWork) < p.FineFor+sleep:
			st.FineSleeps++
			slept = &st.FoundFine
		case p.IdleSleep > p.MaxSleep && sleep == p.IdleSleep:
			st.IdleSleeps++
			slept = &st.FoundIdle
		default:
			st.RampSleeps++
			slept = &st.FoundRamp
		}
	}
}

// sleep waits up to d or until a Kick or Stop; it reports whether a Kick
// came. The sleeping flag is set before kicked is looked at and Kick sets
// kicked before it looks at sleeping, so a Kick is never lost between the
// two.
func (pl *Poller) sleep(d time.Duration) bool {
	pl.sleeping.Store(true)
	defer pl.sleeping.Store(false)
	if pl.kicked.Swap(false) {
		return true
	}
	if pl.stopping.Load() {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(pl.fd), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	n, err := unix.Ppoll(fds, &ts, nil)
	if err != nil && !errors.Is(err, unix.EINTR) {
		// Cannot happen with a valid fd; do not spin on it.
		time.Sleep(d)
	}
	if n > 0 {
		var buf [8]byte
		_, _ = unix.Read(pl.fd, buf[:]) // reset the counter
		pl.wakeups.Add(1)
	}
	return pl.kicked.Swap(false)
}
