package wcbar

import (
	"runtime"
	"time"
)

// Pacing is how a poller of mmapped memory waits between passes. Guests
// post in bursts (a batch of descriptors, a doorbell, more), so after a
// pass that found work it polls flat out, yielding the CPU, for Spin; idle,
// it sleeps from MinSleep doubling to MaxSleep, so an idle device costs
// about a thousand cheap passes a second rather than a core.
type Pacing struct {
	Spin, MinSleep, MaxSleep time.Duration
}

// Poll calls pass until stop is closed; pass reports whether it found
// work. A receive on kick (nil for none) ends a sleep at once and counts as
// work, for a caller that learns of activity another way (a trapped
// access). Poll returns only once stop is closed, never during a pass.
func (p Pacing) Poll(stop, kick <-chan struct{}, pass func() bool) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	lastWork := time.Now()
	var sleep time.Duration // 0 while spinning
	for {
		if pass() {
			lastWork, sleep = time.Now(), 0
		}
		if sleep == 0 && time.Since(lastWork) < p.Spin {
			select {
			case <-stop:
				return
			default:
			}
			runtime.Gosched() // two cores are shared with QEMU's vCPUs
			continue
		}
		sleep = min(max(2*sleep, p.MinSleep), p.MaxSleep)
		timer.Reset(sleep)
		select {
		case <-stop:
			return
		case <-kick:
			lastWork, sleep = time.Now(), 0
		case <-timer.C:
		}
	}
}
