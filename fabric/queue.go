package fabric

import (
	"sync"
	"sync/atomic"
)

// frameQueue is a port's bounded receive queue: a ring with a wakeup only
// when it goes from empty to non-empty. A channel of frames cost a send and
// a receive, each a lock and often a goroutine handoff, per frame; here
// the receiver takes up to a batch at a time.
//
// Pushes need no lock of their own: every push runs under the switch's mu
// (enqueue), so there is one producer at a time, and a push costs one
// atomic store where a mutex cost two locked instructions per frame. Pops
// (the delivery goroutine, drain) are serialised by popMu, taken once per
// batch.
type frameQueue struct {
	ring []*frame // a power of two long
	mask uint64
	// head is the next frame to pop, tail the next slot to push; both only
	// grow. The producer writes a slot before it publishes it with tail;
	// the consumer clears a slot before it hands it back with head.
	head, tail atomic.Uint64
	popMu      sync.Mutex
	// ready holds a token once a push may have made the queue non-empty
	// while the receiver was out of frames; the receiver drains after
	// taking it. A stale token costs one empty pop.
	ready chan struct{}
}

// newFrameQueue returns a queue of size frames, a power of two.
func newFrameQueue(size int) *frameQueue {
	if size <= 0 || size&(size-1) != 0 {
		panic("fabric: queue size not a power of two")
	}
	return &frameQueue{ring: make([]*frame, size), mask: uint64(size - 1), ready: make(chan struct{}, 1)}
}

// push queues f, or reports false when the queue is full. Callers
// serialise pushes (the switch's mu).
func (q *frameQueue) push(f *frame) bool {
	t := q.tail.Load()
	if t-q.head.Load() == uint64(len(q.ring)) {
		return false
	}
	q.ring[t&q.mask] = f
	q.tail.Store(t + 1)
	// Both stores and loads are sequentially consistent: if the consumer's
	// last look at tail missed f, its head store (head == t: it had taken
	// everything before f) precedes that look, so this load sees it, and
	// the consumer, about to wait, gets a token.
	if q.head.Load() == t {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// pop appends up to max queued frames to dst, oldest first.
func (q *frameQueue) pop(dst []*frame, max int) []*frame {
	q.popMu.Lock()
	defer q.popMu.Unlock()
	h, t := q.head.Load(), q.tail.Load()
	for ; h != t && max > 0; max-- {
		i := h & q.mask
		dst = append(dst, q.ring[i])
		q.ring[i] = nil
		h++
	}
	q.head.Store(h)
	return dst
}
