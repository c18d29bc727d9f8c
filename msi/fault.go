package msi

import (
	"time"

	"github.com/myriemu/myriemu/fault"
)

// FaultRaiser puts the msi fault door in front of a Raiser: with no rule
// armed at the door a Raise costs one atomic load and a branch more.
type FaultRaiser struct {
	Raiser
	set    *fault.Set
	device string

	delays fault.Delays // msi.delay raises not yet delivered
}

// WithFaults returns r behind the fault door for device. Close it when
// the device detaches: it cancels delayed raises.
func WithFaults(r Raiser, set *fault.Set, device string) *FaultRaiser {
	return &FaultRaiser{Raiser: r, set: set, device: device}
}

// Raise implements Raiser.
func (f *FaultRaiser) Raise(vector int) {
	if !f.set.Armed(fault.MSI) {
		f.Raiser.Raise(vector)
		return
	}
	act, ok := f.set.Eval(fault.MSI, &fault.Op{Point: "raise", Device: f.device, Vector: vector})
	if !ok {
		f.Raiser.Raise(vector)
		return
	}
	switch act.Kind {
	case fault.MSIDrop:
	case fault.MSISpurious:
		// The real interrupt, then extra ones with nothing new behind
		// them: the driver claims an empty queue.
		f.Raiser.Raise(vector)
		for range min(act.Int("count"), 1000) {
			f.Raiser.Raise(vector)
		}
	case fault.MSIStorm:
		for range min(act.Int("count"), 100000) {
			f.Raiser.Raise(vector)
		}
	case fault.MSIMisroute:
		to := int(act.Int("to"))
		if to < 0 {
			to = vector + 1 // the next vector: another slice's
		}
		f.Raiser.Raise(to)
	case fault.MSIDelay:
		f.later(act.Duration("delay"), vector)
	default:
		f.Raiser.Raise(vector)
	}
}

// later raises vector after d, unless Close comes first.
func (f *FaultRaiser) later(d time.Duration, vector int) {
	f.delays.After(d, func() { f.Raiser.Raise(vector) })
}

// Close cancels the delayed raises and waits for any being delivered.
// A delay that fires after Close is dropped (the device has gone). It is
// idempotent.
func (f *FaultRaiser) Close() { f.delays.Stop() }
