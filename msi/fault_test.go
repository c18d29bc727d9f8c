package msi

import (
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/fault/faulttest"
)

// countRaiser counts raises per vector.
type countRaiser struct {
	mu sync.Mutex
	n  map[int]int
}

func (c *countRaiser) Raise(v int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[int]int{}
	}
	c.n[v]++
}
func (c *countRaiser) Lower()     {}
func (c *countRaiser) Mode() Mode { return ModeMSIX }
func (c *countRaiser) get(v int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[v]
}

func TestFaultRaiser(t *testing.T) {
	tests := []struct {
		rule      string
		v0, v1    int
		waitDelay bool
	}{
		{"r: msi.raise=drop; vector=0", 0, 0, false},
		{"r: msi.raise=spurious(count=2)", 3, 0, false},
		{"r: msi.raise=storm(count=50)", 50, 0, false},
		{"r: msi.raise=misroute", 0, 1, false},
		{"r: msi.raise=drop; vector=1", 1, 0, false},
		{"r: msi.raise=delay(delay=1ms)", 1, 0, true},
	}
	for _, tt := range tests {
		c := &countRaiser{}
		f := WithFaults(c, faulttest.Set(t, 1, tt.rule), "d")
		f.Raise(0)
		if tt.waitDelay {
			deadline := time.Now().Add(30 * time.Second)
			for c.get(0) == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		f.Close()
		if c.get(0) != tt.v0 || c.get(1) != tt.v1 {
			t.Errorf("%s: vector 0 raised %d, vector 1 %d; want %d, %d", tt.rule, c.get(0), c.get(1), tt.v0, tt.v1)
		}
	}
}

func TestFaultRaiserCloseCancelsDelays(t *testing.T) {
	c := &countRaiser{}
	f := WithFaults(c, faulttest.Set(t, 1, "r: msi.raise=delay(delay=1m)"), "d")
	f.Raise(0)
	f.Close()
	if c.get(0) != 0 {
		t.Error("delayed raise delivered after Close")
	}
}

// BenchmarkRaiseFaultDoor: Raise through the door with no rule armed
// against the table itself, and with one armed rule that does not match.
func BenchmarkRaiseFaultDoor(b *testing.B) {
	tb := NewTable(testCounts, nil)
	defer tb.Reset()
	tb.SetIRQs(MSIX, DataEventfd|ActionTrigger, 0, 1, nil, nil) // de-assigned: no syscall, the door's cost shows
	nomatch := faulttest.Set(b, 1, "r: msi.raise=drop; vector=7")
	for _, c := range []struct {
		name string
		r    Raiser
	}{
		{"baseline", tb},
		{"door-idle", WithFaults(tb, fault.NewSet(1, nil), "d")},
		{"door-armed-nomatch", WithFaults(tb, nomatch, "d")},
	} {
		b.Run("impl="+c.name, func(b *testing.B) {
			for b.Loop() {
				c.r.Raise(0)
			}
		})
	}
}
