package fabric

import (
	"sync"
	"sync/atomic"
	"time"
)

// clockTick bounds how stale the switch's clock may be while frames flow.
// MAC ageing counts in minutes; a tenth of a second is exact enough.
const clockTick = 100 * time.Millisecond

// coarseClock is the switch's time for MAC ageing: a reading of the
// monotonic clock, taken again at most once a tick while frames flow.
// Reading the clock costs 100-200 ns on a virtual machine, more than the
// rest of a small frame's forwarding. Idle, it costs nothing: the timer
// that marks a reading stale is armed only by a reading.
type coarseClock struct {
	base   time.Time    // monotonic origin
	now    atomic.Int64 // time.Since(base) at the last reading
	fresh  atomic.Bool  // the reading is younger than a tick
	mu     sync.Mutex   // guards timer, closed
	timer  *time.Timer  // marks the reading stale
	closed bool
}

func newCoarseClock() *coarseClock { return &coarseClock{base: time.Now()} }

// since returns the time since base, at most a tick stale.
func (c *coarseClock) since() time.Duration {
	if c.fresh.Load() {
		return time.Duration(c.now.Load())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := time.Since(c.base)
	c.now.Store(int64(d))
	if c.closed {
		return d // no timer after close: every reading is a fresh one
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(clockTick, func() { c.fresh.Store(false) })
	} else {
		c.timer.Reset(clockTick)
	}
	c.fresh.Store(true)
	return d
}

// stop cancels the pending timer; later readings read the clock.
func (c *coarseClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.fresh.Store(false)
	if c.timer != nil {
		c.timer.Stop()
	}
}
