package wcbar

import (
	"runtime"
	"time"
)

// Pacing is how a poller of mmapped memory waits between passes. Guests
// post in bursts (a batch of descriptors, a doorbell, more), so after a
// pass that found work it polls flat out, yielding the CPU, for Spin; then
// it sleeps MinSleep at a time until FineFor has passed since that work;
// then from MinSleep doubling to MaxSleep; and once nothing was found for
// IdleAfter (if IdleSleep is set) it sleeps IdleSleep at a time.
//
// Every wakeup costs the host tens of µs of CPU on a virtual machine
// (timer programming, a thread switch), whatever the pass does: MinSleep
// and FineFor set the latency and the cost of a driver that works in
// bursts with pauses (request and answer, an ACK clock), MaxSleep bounds
// the latency of one that is working slowly, IdleSleep the cost of one
// that is not. A kick ends any sleep at once. Sleeps shorter than a
// millisecond need a Poller: Poll's Go timer rounds them up to one.
type Pacing struct {
	Spin, MinSleep, MaxSleep time.Duration
	FineFor                  time.Duration
	IdleAfter, IdleSleep     time.Duration
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
		sleep = p.next(sleep, lastWork)
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

// next is the sleep after one of sleep, the last work found at lastWork.
func (p Pacing) next(sleep time.Duration, lastWork time.Time) time.Duration {
	idle := time.Since(lastWork)
	if idle < p.FineFor {
		return p.MinSleep
	}
	if sleep >= p.MaxSleep && p.IdleSleep > p.MaxSleep && idle >= p.IdleAfter {
		return p.IdleSleep
	}
	return min(max(2*sleep, p.MinSleep), p.MaxSleep)
}
