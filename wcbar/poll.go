package wcbar

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// doorbellPacing paces the doorbell poller (see Pacing).
var doorbellPacing = Pacing{Spin: 20 * time.Microsecond, MinSleep: 20 * time.Microsecond, MaxSleep: time.Millisecond}

// Watch calls fn with the new value, on the poller goroutine, whenever the
// 4-aligned word at off changes: a doorbell in an mmappable area, which the
// guest rings with a plain store that nobody is told about. Stores by
// anyone count (the guest's, WriteAt, Store32), and a value changed and
// changed back between two polls is not seen, so a doorbell should carry a
// producer index, not a toggle. fn must not call Watch, Start, Stop or
// Close.
//
// Register every watch before Start. Watch panics on a misaligned or
// out-of-range offset, a nil fn, or while the poller runs: those are bugs
// in the device model, not guest behaviour.
func (w *Window) Watch(off uint64, fn func(v uint32)) {
	if off%4 != 0 || off > w.size-4 || fn == nil {
		panic(fmt.Sprintf("wcbar: Watch(%#x) on a %#x-byte window: offset must be 4-aligned and inside, fn non-nil", off, w.size))
	}
	w.ctl.Lock()
	defer w.ctl.Unlock()
	if w.poller != nil {
		panic("wcbar: Watch while the poller runs; register watches before Start")
	}
	w.watches = append(w.watches, watch{off: off, fn: fn})
}

// Start starts the doorbell poller (a Poller) if there are watches and it is not
// running. A window can be started again after Stop (client reconnects).
func (w *Window) Start() {
	w.ctl.Lock()
	defer w.ctl.Unlock()
	if w.poller != nil || len(w.watches) == 0 {
		return
	}
	w.mu.RLock()
	closed := w.closed
	w.mu.RUnlock()
	if closed {
		return
	}
	// Take the baseline before Start returns: a store right after Start
	// must count as a change, whenever the goroutine gets to run.
	ws := slices.Clone(w.watches)
	last := make([]uint32, len(ws))
	for i, wt := range ws {
		last[i] = atomic.LoadUint32(word32(w.mem, wt.off))
	}
	pl, err := StartPoller(doorbellPacing, w.doorbellPass(ws, last))
	if err != nil {
		w.log.WithError(err).Error("no doorbell poller: stores to watched words go unseen")
		return
	}
	w.poller = pl
	w.log.WithField("watches", len(ws)).Debug("poller started")
}

// Stop stops the poller and waits for it (and any fn it is running) to
// return. Idempotent.
func (w *Window) Stop() {
	w.ctl.Lock()
	defer w.ctl.Unlock()
	if w.poller == nil {
		return
	}
	w.poller.Stop()
	w.poller = nil
	w.log.Debug("poller stopped")
}

// doorbellPass is the poller's pass over the watched words: it calls each
// changed word's fn and reports whether any changed. Close unmaps only
// after Stop joined the poller, so it reads the mapping without the lock.
func (w *Window) doorbellPass(ws []watch, last []uint32) func() bool {
	words := make([]*uint32, len(ws))
	for i, wt := range ws {
		words[i] = word32(w.mem, wt.off)
	}
	return func() bool {
		w.polls.Add(1)
		changed := false
		for i, p := range words {
			if v := atomic.LoadUint32(p); v != last[i] {
				last[i] = v
				ws[i].fn(v)
				changed = true
			}
		}
		return changed
	}
}
