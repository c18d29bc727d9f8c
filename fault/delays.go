package fault

import (
	"sync"
	"time"
)

// Delays are a door's delayed actions (msi.delay, wire.delay,
// wire.link.flap restoring the carrier): After runs a function later
// unless Stop came first, and Stop waits for any that is running, so a
// door that stops never acts after its device has gone. The zero value is
// ready to use.
type Delays struct {
	mu      sync.Mutex
	stopped bool
	timers  map[*time.Timer]struct{}
	wg      sync.WaitGroup
}

// After runs fn on its own goroutine after d, unless Stop is called
// first. After Stop it does nothing.
func (d *Delays) After(delay time.Duration, fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	if d.timers == nil {
		d.timers = map[*time.Timer]struct{}{}
	}
	d.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		defer d.wg.Done()
		d.mu.Lock()
		_, live := d.timers[t]
		delete(d.timers, t)
		d.mu.Unlock()
		if live {
			fn()
		}
	})
	d.timers[t] = struct{}{}
}

// Stop cancels the pending functions and waits for those already
// running. It is idempotent.
func (d *Delays) Stop() {
	d.mu.Lock()
	d.stopped = true
	for t := range d.timers {
		if t.Stop() {
			d.wg.Done()
		}
		delete(d.timers, t)
	}
	d.mu.Unlock()
	d.wg.Wait()
}
