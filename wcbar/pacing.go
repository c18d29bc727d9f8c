package wcbar

import "time"

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
// that is not. A kick ends any sleep at once. A Poller runs a Pacing.
type Pacing struct {
	Spin, MinSleep, MaxSleep time.Duration
	FineFor                  time.Duration
	IdleAfter, IdleSleep     time.Duration
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
