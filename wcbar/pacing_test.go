package wcbar

import (
	"testing"
	"time"
)

// The sleeps double from MinSleep to MaxSleep, and become IdleSleep only
// once nothing was found for IdleAfter.
func TestPacingNext(t *testing.T) {
	p := Pacing{MinSleep: 20 * time.Microsecond, MaxSleep: time.Millisecond, IdleAfter: time.Second, IdleSleep: 10 * time.Millisecond}
	recent, old := time.Now(), time.Now().Add(-2*time.Second)
	var got []time.Duration
	for s := time.Duration(0); len(got) < 8; {
		s = p.next(s, recent)
		got = append(got, s)
	}
	want := []time.Duration{20e3, 40e3, 80e3, 160e3, 320e3, 640e3, 1e6, 1e6}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ramp %v, want %v", got, want)
		}
	}
	if s := p.next(640*time.Microsecond, old); s != time.Millisecond {
		t.Errorf("idle but still ramping: next sleep %v, want MaxSleep first", s)
	}
	if s := p.next(time.Millisecond, old); s != p.IdleSleep {
		t.Errorf("idle for 2 s at MaxSleep: next sleep %v, want IdleSleep", s)
	}
	if s := p.next(p.IdleSleep, old); s != p.IdleSleep {
		t.Errorf("idle at IdleSleep: next sleep %v, want IdleSleep", s)
	}
	p.IdleSleep = 0
	if s := p.next(time.Millisecond, old); s != time.Millisecond {
		t.Errorf("no IdleSleep: next sleep %v, want MaxSleep", s)
	}
}

// Within FineFor of the last work the sleep stays MinSleep; after it, the
// ramp to MaxSleep and the idle tier follow as without FineFor.
func TestPacingFineFor(t *testing.T) {
	p := Pacing{MinSleep: 150 * time.Microsecond, FineFor: time.Minute, MaxSleep: time.Millisecond, IdleAfter: time.Second, IdleSleep: 8 * time.Millisecond}
	recent := time.Now()
	for s, i := time.Duration(0), 0; i < 100; i++ {
		if s = p.next(s, recent); s != p.MinSleep {
			t.Fatalf("sleep %d within FineFor: %v, want MinSleep", i, s)
		}
	}
	p.FineFor = time.Second
	past := time.Now().Add(-1500 * time.Millisecond)
	if s := p.next(p.MinSleep, past); s != 2*p.MinSleep {
		t.Errorf("past FineFor: next sleep %v, want the ramp's %v", s, 2*p.MinSleep)
	}
	if s := p.next(p.MaxSleep, past); s != p.IdleSleep {
		t.Errorf("past FineFor and IdleAfter at MaxSleep: next sleep %v, want IdleSleep", s)
	}
}
