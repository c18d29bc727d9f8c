package dma

// Rewrapper is a Wrapper that can put a copy of itself over another Space,
// sharing its own state (counters, held writes): a Run rebuilds a device's
// chain of doors over its own bottom that way, so that its accesses still
// pass every door. Rewrappers must be comparable (pointer types). A chain
// with a Wrapper that is not a Rewrapper gets no runs: Begin hands back the
// chain itself.
type Rewrapper interface {
	Wrapper
	Rewrap(inner Space) Space
}

// Run is a run of accesses to a Map made under one read lock, where each
// access through the Map takes and drops the lock itself: the lock's two
// atomic adds are about half of what a small access costs. A device that
// makes many accesses in a row (the frames of a batch) begins a run, makes
// them through the Space Begin returns, and ends it:
//
//	mem := run.Begin(host.Mem)
//	... mem.ReadAt, mem.WriteAt, mem.Store32 ...
//	run.End()
//
// The Space Begin returns is host.Mem's chain of doors (fault door,
// observers) rebuilt over the Map with the lock held: every access still
// passes every door and the Map's gate (bus master, hooks). While the run
// lasts, DMA_UNMAP (Map.Remove) waits, so the guarantee holds: once it is
// answered no access touches the removed memory. So between Begin and End
// the caller must not wait for anything that may wait for a DMA_UNMAP or
// another writer of the map, and must make no access to the map but
// through the run's Space: a second read lock by the same goroutine while
// a writer waits would deadlock.
//
// Begin falls back to handing back s itself, with no lock held, when s has
// no Map under it, a door in the chain is not a Rewrapper, the map is
// closed, or it has a message map (an access to it must not hold the
// lock: see Map).
//
// A Run is not safe for concurrent use; its zero value is ready. Building
// the chain allocates, once per Space s the run is begun over; a Begin over
// the same s again allocates nothing.
type Run struct {
	of     Space     // the Space the chain was built over; nil: none
	chain  Space     // of's chain over bottom
	bottom heldSpace // the Map, accessed with its lock held
	locked bool
}

// Begin starts a run over s and returns the Space to access it through
// until End: a copy of s's chain of doors over the Map with its read lock
// held, or s itself (see Run). Beginning a run already begun over s
// returns its Space again; over another Space it ends the first.
func (r *Run) Begin(s Space) Space {
	if r.locked {
		if s == r.of {
			return r.chain
		}
		r.End()
	}
	// r.of is a *Map or a Rewrapper, both comparable, so == cannot panic.
	if r.of == nil || s != r.of {
		if !r.build(s) {
			return s
		}
	}
	m := r.bottom.m
	m.mu.RLock()
	if m.closedLocked || m.regions.len() != m.mmaps {
		m.mu.RUnlock()
		return s
	}
	r.locked = true
	return r.chain
}

// End ends the run, if one is begun; the Space Begin returned must not be
// used after it.
func (r *Run) End() {
	if r.locked {
		r.locked = false
		r.bottom.last = nil // the table may change once the lock is dropped
		r.bottom.m.mu.RUnlock()
	}
}

// build makes r's chain for s. It reports false, and forgets the last
// chain, when s cannot have one.
func (r *Run) build(s Space) bool {
	r.of, r.chain, r.bottom.m, r.bottom.last = nil, nil, nil, nil
	chain, m := rebuild(s, &r.bottom)
	if chain == nil {
		return false
	}
	r.of, r.chain, r.bottom.m = s, chain, m
	return true
}

// rebuild returns s's chain of doors over bottom and the Map under s, or
// nil when s is not a chain of Rewrappers over a Map.
func rebuild(s Space, bottom Space) (Space, *Map) {
	switch v := s.(type) {
	case *Map:
		return bottom, v
	case Rewrapper:
		inner, m := rebuild(v.Unwrap(), bottom)
		if inner == nil {
			return nil, nil
		}
		return v.Rewrap(inner), m
	}
	return nil, nil
}

// heldSpace is a Map accessed by a Run, its read lock held.
type heldSpace struct {
	m    *Map
	last *region // the map the run's last access found (regionLocked)
}

var _ Wrapper = (*heldSpace)(nil)

func (h *heldSpace) ReadAt(p []byte, addr uint64) (int, error) {
	return h.m.accessLocked(Read, p, addr, h)
}

func (h *heldSpace) WriteAt(p []byte, addr uint64) (int, error) {
	return h.m.accessLocked(Write, p, addr, h)
}

func (h *heldSpace) Store32(addr uint64, v uint32) error { return h.m.store32Held(addr, v, h) }

// Unwrap returns the Map, for MapOf.
func (h *heldSpace) Unwrap() Space { return h.m }
