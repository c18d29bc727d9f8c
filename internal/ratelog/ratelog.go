// Package ratelog limits how often a recurring guest or client fault is
// logged, so a misbehaving guest cannot flood the log.
package ratelog

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Limiter allows a burst of Burst messages per key, then one per Interval,
// and reports how many were suppressed in between.
type Limiter struct {
	Interval time.Duration
	Burst    int

	mu   sync.Mutex
	keys map[string]*bucket
}

type bucket struct {
	tokens     int
	last       time.Time
	suppressed int
}

// New returns a limiter allowing burst messages per key, then one per interval.
func New(interval time.Duration, burst int) *Limiter {
	return &Limiter{Interval: interval, Burst: burst}
}

// Warn logs msg at Warn through e unless key has exceeded its budget. The
// entry gets a "suppressed" field when earlier messages were dropped.
func (l *Limiter) Warn(e *logrus.Entry, key, msg string) {
	if ok, suppressed := l.allow(key, time.Now()); ok {
		if suppressed > 0 {
			e = e.WithField("suppressed", suppressed)
		}
		e.Warn(msg)
	}
}

func (l *Limiter) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = make(map[string]*bucket)
	}
	b, ok := l.keys[key]
	if !ok {
		b = &bucket{tokens: l.Burst, last: now}
		l.keys[key] = b
	}
	if l.Interval > 0 {
		refill := int(now.Sub(b.last) / l.Interval)
		if refill > 0 {
			b.tokens = min(l.Burst, b.tokens+refill)
			b.last = b.last.Add(time.Duration(refill) * l.Interval)
		}
	}
	if b.tokens == 0 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	s := b.suppressed
	b.suppressed = 0
	return true, s
}
