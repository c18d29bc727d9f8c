package fabric

import (
	"sync"
	"testing"
	"time"
)

// TestFrameQueueWakeups pushes frames from two goroutines, serialised by a
// mutex as the switch's mu serialises enqueue, in bursts with pauses, to a
// consumer that drains and then waits for the ready token, as runDeliver
// does: every frame arrives, in each producer's order, and a lost wakeup
// shows as a wait of seconds.
func TestFrameQueueWakeups(t *testing.T) {
	const producers, perProducer = 2, 20000
	q := newFrameQueue(64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id := range producers {
		wg.Go(func() {
			for i := 0; i < perProducer; {
				mu.Lock()
				ok := q.push(&frame{b: []byte{byte(id), byte(i), byte(i >> 8), byte(i >> 16)}})
				mu.Unlock()
				if ok {
					i++
				}
				if i%97 == 0 {
					time.Sleep(time.Microsecond) // let the consumer run dry
				}
			}
		})
	}
	next := [producers]int{}
	got := 0
	batch := make([]*frame, 0, 16)
	for got < producers*perProducer {
		// The producers never pause for long: a wait this long is a
		// wakeup the queue lost.
		select {
		case <-q.ready:
		case <-time.After(2 * time.Second):
			t.Fatalf("consumer waited in vain: %d of %d frames, head %d tail %d", got, producers*perProducer, q.head.Load(), q.tail.Load())
		}
		for {
			batch = q.pop(batch[:0], cap(batch))
			if len(batch) == 0 {
				break
			}
			for _, f := range batch {
				id, i := int(f.b[0]), int(f.b[1])|int(f.b[2])<<8|int(f.b[3])<<16
				if i != next[id] {
					t.Fatalf("producer %d: frame %d arrived, want %d", id, i, next[id])
				}
				next[id]++
				got++
			}
		}
	}
	wg.Wait()
	if f := q.pop(nil, 1); len(f) != 0 {
		t.Fatalf("queue not empty after all frames")
	}
}

// TestFrameQueueFull: a full queue refuses, and takes again once popped.
func TestFrameQueueFull(t *testing.T) {
	q := newFrameQueue(4)
	for i := range 4 {
		if !q.push(&frame{}) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push(&frame{}) {
		t.Fatal("push into a full queue accepted")
	}
	if got := q.pop(nil, 3); len(got) != 3 {
		t.Fatalf("popped %d, want 3", len(got))
	}
	for i := range 3 {
		if !q.push(&frame{}) {
			t.Fatalf("push %d after pop refused", i)
		}
	}
	if got := q.pop(nil, 10); len(got) != 4 {
		t.Fatalf("popped %d, want 4", len(got))
	}
}
