package ratelog

import (
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	l := New(time.Second, 2)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at             time.Duration
		key            string
		want           bool
		wantSuppressed int
	}{
		{0, "a", true, 0},
		{0, "a", true, 0},
		{0, "a", false, 0}, // burst spent
		{0, "b", true, 0},  // keys are independent
		{500 * time.Millisecond, "a", false, 0},
		{time.Second, "a", true, 2}, // one token back; two were dropped
		{time.Second, "a", false, 0},
		{10 * time.Second, "a", true, 1},
		{10 * time.Second, "a", true, 0}, // refill is capped at Burst
		{10 * time.Second, "a", false, 0},
	}
	for i, s := range steps {
		got, sup := l.allow(s.key, t0.Add(s.at))
		if got != s.want || sup != s.wantSuppressed {
			t.Errorf("step %d: allow(%q, +%v) = %v, %d; want %v, %d", i, s.key, s.at, got, sup, s.want, s.wantSuppressed)
		}
	}
}
