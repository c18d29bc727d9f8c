// Package ratelog limits how often a recurring guest or client fault is
// logged, so a misbehaving guest or client cannot flood the log.
//
// There is one policy for the whole program: per key, a burst of Burst
// lines, then one per Interval; the next line that gets through carries a
// "suppressed" field with the count dropped in between. A Limiter belongs
// to a device (or the process), never to a connection: a client that
// reconnects in a loop meets the same budget every time.
package ratelog

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// The policy.
const (
	Burst    = 10          // lines per key before limiting starts
	Interval = time.Second // then one line per key per Interval
	// MaxKeys bounds the limiter's memory: keys beyond it share one
	// budget. Keys are meant to be constant messages, so this is a guard.
	MaxKeys = 256
)

// overflowKey is the shared budget of keys beyond MaxKeys.
const overflowKey = "\x00overflow"

// Limiter counts per key how many lines were let through. The zero value
// is ready to use; it is safe for concurrent use.
type Limiter struct {
	mu   sync.Mutex
	keys map[string]*bucket
}

type bucket struct {
	tokens     int
	last       time.Time
	suppressed int
}

// New returns a limiter with the program's policy.
func New() *Limiter { return &Limiter{} }

// Warn logs msg at Warn through e unless key has spent its budget.
func (l *Limiter) Warn(e *logrus.Entry, key, msg string) {
	if ok, suppressed := l.Allow(key); ok {
		if suppressed > 0 {
			e = e.WithField("suppressed", suppressed)
		}
		e.Warn(msg)
	}
}

// Allow takes a token of key for a caller that builds its entry only when
// the line will be logged (a hostile client's error path should not
// allocate per message). When ok, the line should carry a "suppressed"
// field if suppressed > 0.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	return l.allow(key, time.Now())
}

// allow takes a token of key at now; when it gets one, suppressed is how
// many lines of key were dropped since the last one let through.
func (l *Limiter) allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = make(map[string]*bucket)
	}
	b, found := l.keys[key]
	if !found {
		if len(l.keys) >= MaxKeys {
			key = overflowKey
			b, found = l.keys[key]
		}
		if !found {
			b = &bucket{tokens: Burst, last: now}
			l.keys[key] = b
		}
	}
	if refill := int(now.Sub(b.last) / Interval); refill > 0 {
		b.tokens = min(Burst, b.tokens+refill)
		b.last = b.last.Add(time.Duration(refill) * Interval)
	}
	if b.tokens == 0 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}
