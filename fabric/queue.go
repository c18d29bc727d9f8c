package fabric

import "sync"

// frameQueue is a port's bounded receive queue: a ring under a mutex, with
// a wakeup only when it goes from empty to non-empty. A channel of frames
// cost a send and a receive, each a lock and often a goroutine handoff,
// per frame; here a frame costs a slot under an uncontended lock and the
// receiver takes up to a batch at a time.
type frameQueue struct {
	mu   sync.Mutex
	ring []*frame
	head int // oldest frame
	n    int // frames queued
	// ready holds a token once a push made the queue non-empty; the
	// receiver drains after taking it. A stale token costs one empty pop.
	ready chan struct{}
}

func newFrameQueue(size int) *frameQueue {
	return &frameQueue{ring: make([]*frame, size), ready: make(chan struct{}, 1)}
}

// push queues f, or reports false when the queue is full.
func (q *frameQueue) push(f *frame) bool {
	q.mu.Lock()
	if q.n == len(q.ring) {
		q.mu.Unlock()
		return false
	}
	i := q.head + q.n
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	q.ring[i] = f
	q.n++
	first := q.n == 1
	q.mu.Unlock()
	if first {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// pop appends up to max queued frames to dst, oldest first.
func (q *frameQueue) pop(dst []*frame, max int) []*frame {
	q.mu.Lock()
	defer q.mu.Unlock()
	for ; q.n > 0 && max > 0; max-- {
		dst = append(dst, q.ring[q.head])
		q.ring[q.head] = nil
		q.head++
		if q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
	}
	return dst
}
