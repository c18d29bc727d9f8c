package ratelog

import (
	"fmt"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestAllow(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	type step struct {
		at             time.Duration
		key            string
		want           bool
		wantSuppressed int
	}
	var steps []step
	for range Burst {
		steps = append(steps, step{0, "a", true, 0})
	}
	steps = append(steps,
		step{0, "a", false, 0}, // burst spent
		step{0, "b", true, 0},  // keys are independent
		step{Interval / 2, "a", false, 0},
		step{Interval, "a", true, 2}, // one token back; two were dropped
		step{Interval, "a", false, 0},
		step{100 * Interval, "a", true, 1},
	)
	for range Burst - 1 { // refill is capped at Burst
		steps = append(steps, step{100 * Interval, "a", true, 0})
	}
	steps = append(steps, step{100 * Interval, "a", false, 0})
	for i, s := range steps {
		got, sup := l.allow(s.key, t0.Add(s.at))
		if got != s.want || sup != s.wantSuppressed {
			t.Errorf("step %d: allow(%q, +%v) = %v, %d; want %v, %d", i, s.key, s.at, got, sup, s.want, s.wantSuppressed)
		}
	}
}

// TestKeysBounded: a caller that makes up keys (a bug) gets one shared
// budget beyond MaxKeys, not an unbounded map and an unbounded log.
func TestKeysBounded(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	l := New()
	for i := range 10 * MaxKeys {
		l.Warn(logrus.NewEntry(log), fmt.Sprint("key", i), "made-up key")
	}
	if n := len(l.keys); n > MaxKeys+1 {
		t.Errorf("%d keys kept, want at most %d", n, MaxKeys+1)
	}
	if got, want := len(hook.AllEntries()), MaxKeys+Burst; got != want {
		t.Errorf("%d lines for %d distinct keys, want %d (%d keys, then the shared burst)", got, 10*MaxKeys, want, MaxKeys)
	}
}
