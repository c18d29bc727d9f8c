package myrimx

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/dma"
)

// Region states (§6.4).
const (
	regionValid uint32 = iota + 1
	regionInvalidating
	regionFree
)

// region is the device's copy of one registration (§6.4): the truth the
// data path and the audit use, whatever the guest's page list says later.
type region struct {
	// mu: each chunk copy holds it for reading, an invalidation takes it
	// for writing to wait for them (§6.4 "Go shape"). Go's RWMutex keeps
	// new readers out once a writer waits, so a DEREG is not starved.
	mu sync.RWMutex

	serial    uint64 // lock order among regions
	ep        *endpoint
	audit     *dma.Audit // the owning device's door, fixed at REG
	id, gen   uint32
	access    uint32
	pageShift uint8
	firstOff  uint64
	length    uint64
	userVA    uint64
	pages     []uint64
	mapEpoch  uint64
	regAt     time.Time

	state atomic.Uint32

	// Hub.mu guards these.
	ops    map[*op]struct{} // SEND and RECV referencing it, not completed
	reason Reason           // last invalidation reason

	bytesRead, bytesWritten, nops atomic.Uint64
}

func (r *region) pageSize() uint64 { return 1 << r.pageShift }

// run returns the guest address of byte off of the region and how many
// bytes from there, at most max, are contiguous in guest memory.
func (r *region) run(off, max uint64) (gpa, n uint64) {
	ps := r.pageSize()
	x := r.firstOff + off
	i := x >> r.pageShift
	gpa = r.pages[i] + x&(ps-1)
	n = ps - x&(ps-1)
	for n < max && i+1 < uint64(len(r.pages)) && r.pages[i+1] == r.pages[i]+ps {
		i++
		n += ps
	}
	return gpa, min(n, max)
}

// overlaps reports whether a page of the region lies in [iova, last].
func (r *region) overlaps(iova, last uint64) bool {
	ps := r.pageSize()
	for _, p := range r.pages {
		if p <= last && iova <= p+ps-1 {
			return true
		}
	}
	return false
}

// invalidate runs the device side of the fence protocol (§6.7) for r and
// reports whether r was VALID. cmdMu is held.
//
//  1. The state goes INVALIDATING: acquires fail from now on.
//  2. Posted operations referencing it complete REGION_INVALIDATED.
//  3. The write lock waits for chunks in flight (each at most Chunk).
//  4. Transfers that were under way end with the bytes they moved; the
//     entry is FREE and (id, generation) retired.
//
// When it returns no DMA with r's tag happens again.
func (d *Device) invalidate(r *region, reason Reason) bool {
	h := d.hub
	h.mu.Lock()
	if r.state.Load() != regionValid {
		h.mu.Unlock()
		return false
	}
	r.state.Store(regionInvalidating)
	r.reason = reason
	var cs []completion
	for o := range r.ops {
		cs = append(cs, h.abortLocked(o, StatusRegionInvalidated)...)
	}
	h.mu.Unlock()
	r.audit.Invalidated(r.ep.idx, r.id, int(reason))
	emit(cs)

	r.mu.Lock()
	h.mu.Lock()
	cs = cs[:0]
	for o := range r.ops {
		if o.state == opMatched {
			cs = append(cs, h.finishLocked(o.xfer, StatusRegionInvalidated)...)
		}
	}
	r.state.Store(regionFree)
	ep := r.ep
	ep.slots[r.id].CompareAndSwap(r, nil)
	gens := append(ep.retired[r.id], r.gen)
	if len(gens) > retiredPerID {
		gens = slices.Delete(gens, 0, len(gens)-retiredPerID)
	}
	ep.retired[r.id] = gens
	h.mu.Unlock()
	r.audit.Retired(ep.idx, r.id, r.gen, r.pages, r.pageSize())
	r.mu.Unlock()
	emit(cs)
	d.stats.deregs.Add(1)
	d.retire(r, reason)
	return true
}

// lookup finds the VALID region (id, gen) of ep for an operation that
// needs access and [off, off+n) inside it. Hub.mu is held.
func (ep *endpoint) lookupLocked(id, gen, access uint32, off uint64, n uint32) (*region, Status) {
	if id >= RegionsPerEP {
		return nil, StatusBadRDMAWin
	}
	r := ep.slots[id].Load()
	if r == nil || r.gen != gen {
		return nil, StatusBadRDMAWin
	}
	if r.state.Load() != regionValid {
		return nil, StatusRegionInvalidated
	}
	if r.access&access != access || off > r.length || uint64(n) > r.length-off {
		return nil, StatusAccess
	}
	return r, StatusSuccess
}

// retiredLocked reports whether gen of id is among the recently retired.
func (ep *endpoint) retiredLocked(id, gen uint32) bool {
	return slices.Contains(ep.retired[id], gen)
}
