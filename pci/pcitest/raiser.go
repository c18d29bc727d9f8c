package pcitest

import (
	"sync"

	"github.com/myriemu/myriemu/msi"
)

// Raiser is the interrupt side of a fake pci.Host: an msi.Raiser that
// records what a device model did, for unit tests of a model attached
// without a client.
type Raiser struct {
	mu     sync.Mutex
	mode   msi.Mode
	raised []int
	lowers int
	kick   chan struct{}
}

var _ msi.Raiser = (*Raiser)(nil)

// NewRaiser returns a Raiser reporting mode as the enabled mechanism.
func NewRaiser(mode msi.Mode) *Raiser { return &Raiser{mode: mode} }

// Raise records vector or, after KickOnly, only signals the kick channel.
func (r *Raiser) Raise(vector int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kick != nil {
		select {
		case r.kick <- struct{}{}:
		default:
		}
		return
	}
	r.raised = append(r.raised, vector)
}

// KickOnly makes Raise signal the returned channel (capacity 1, so
// interrupts coalesce) instead of recording: benchmarks raise millions of
// interrupts, and recording would allocate per interrupt.
func (r *Raiser) KickOnly() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kick = make(chan struct{}, 1)
	return r.kick
}

// Lower counts a deassert.
func (r *Raiser) Lower() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lowers++
}

// Mode reports the mechanism last set.
func (r *Raiser) Mode() msi.Mode {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mode
}

// SetMode changes the mechanism the device sees as enabled.
func (r *Raiser) SetMode(m msi.Mode) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = m
}

// Take returns the vectors raised and the number of lowers since the last
// Take, and forgets them.
func (r *Raiser) Take() (raised []int, lowers int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	raised, lowers = r.raised, r.lowers
	r.raised, r.lowers = nil, 0
	return raised, lowers
}
