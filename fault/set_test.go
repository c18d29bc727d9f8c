package fault

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustRule(t *testing.T, s string) *Rule {
	t.Helper()
	r, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fires evaluates n read operations at the DMA door of device dev and
// returns the 1-based operations that fired.
func fires(s *Set, n int, op Op) []uint64 {
	var out []uint64
	for i := 1; i <= n; i++ {
		if !s.Armed(DMA) {
			continue
		}
		if _, ok := s.Eval(DMA, &op); ok {
			out = append(out, uint64(i))
		}
	}
	return out
}

func TestTriggers(t *testing.T) {
	read := Op{Point: "read", Device: "myri0", Addr: 0x1000, Len: 64}
	tests := []struct {
		rule string
		want []uint64
	}{
		{"r: dma.read=fail; once", []uint64{1}},
		{"r: dma.read=fail; times=3", []uint64{1, 2, 3}},
		{"r: dma.read=fail; after=5; times=2", []uint64{6, 7}},
		{"r: dma.read=fail; interval=4", []uint64{4, 8}},
		{"r: dma.read=fail; after=2; interval=3; times=2", []uint64{5, 8}},
		{"r: dma.read=fail; probability=0", nil},
		{"r: dma.read=fail; device=myri1", nil},
		{"r: dma.read=fail; iova=0x1040..0x2000", nil},
		{"r: dma.read=fail; iova=0x103f..0x103f; times=1", []uint64{1}},
		{"r: dma.write=drop", nil}, // reads only here
		{"r: dma.read=fail; state=2", nil},
	}
	for _, tt := range tests {
		s := NewSet(1, nil)
		if err := s.Add(mustRule(t, tt.rule)); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, fires(s, 8, read)); diff != "" {
			t.Errorf("%s: firings (-want +got):\n%s", tt.rule, diff)
		}
	}
}

func TestNoRuleNotArmed(t *testing.T) {
	var nilSet *Set
	if nilSet.Armed(DMA) {
		t.Error("nil set armed")
	}
	s := NewSet(1, nil)
	if s.Armed(DMA) {
		t.Error("empty set armed")
	}
	s.Add(mustRule(t, "r: msi.raise=drop"))
	if s.Armed(DMA) || !s.Armed(MSI) {
		t.Error("armed the wrong door")
	}
	if err := s.Delete("r"); err != nil || s.Armed(MSI) {
		t.Errorf("delete: %v, armed %v", err, s.Armed(MSI))
	}
	if err := s.Delete("r"); err == nil {
		t.Error("deleting twice succeeded")
	}
}

// blkdebug: a rule with state=n is live only in state n; new_state moves.
func TestStates(t *testing.T) {
	s := NewSet(1, nil)
	s.AddAll([]*Rule{
		mustRule(t, "a: dma.read=none; after=2; once; state=1; new_state=2"),
		mustRule(t, "b: dma.read=fail; state=2; times=2; new_state=3"),
	})
	got := fires(s, 8, Op{Point: "read"})
	// op 3 moves to state 2 (a fires a none); 4 fails (b) and moves to
	// state 3, where b is no longer live although it has a firing left.
	if diff := cmp.Diff([]uint64{3, 4}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if s.State() != 3 {
		t.Errorf("state %d, want 3", s.State())
	}
}

func TestAddAllAllOrNothing(t *testing.T) {
	s := NewSet(1, nil)
	s.Add(mustRule(t, "b: dma.read=fail"))
	err := s.AddAll([]*Rule{mustRule(t, "a: msi.raise=drop"), mustRule(t, "b: msi.raise=drop")})
	if err == nil {
		t.Fatal("duplicate id armed")
	}
	if len(s.Rules()) != 1 || s.Armed(MSI) {
		t.Errorf("half armed: %v", s.Rules())
	}
}

func TestEvery(t *testing.T) {
	s := NewSet(1, nil)
	now := time.Unix(100, 0)
	s.now = func() time.Time { return now }
	s.Add(mustRule(t, "r: dma.read=fail; every=1s"))
	var got []int
	for i := range 6 {
		if _, ok := s.Eval(DMA, &Op{Point: "read"}); ok {
			got = append(got, i)
		}
		now = now.Add(400 * time.Millisecond)
	}
	if diff := cmp.Diff([]int{0, 3}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// run evaluates a fixed mixed workload against rules armed in a set with
// seed and returns the log it wrote.
func run(t *testing.T, seed uint64, replay []Firing, rules ...string) []byte {
	t.Helper()
	s := NewSet(seed, nil)
	var log bytes.Buffer
	s.SetLog(&log)
	for _, r := range rules {
		if err := s.Add(mustRule(t, r)); err != nil {
			t.Fatal(err)
		}
	}
	if replay != nil {
		s.Replay(replay)
	}
	for i := range 2000 {
		dev := fmt.Sprintf("myri%d", i%2)
		if s.Armed(DMA) {
			s.Eval(DMA, &Op{Point: "read", Device: dev, Addr: uint64(i) * 64, Len: 64})
		}
		if s.Armed(Wire) {
			s.Eval(Wire, &Op{Point: "frame", Device: dev, Dir: "tx"})
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	return log.Bytes()
}

func TestDeterminismAndReplay(t *testing.T) {
	rules := []string{"loss: wire.frame=loss; probability=3", "poison: dma.read=poison; probability=1; times=10"}
	a := run(t, 42, nil, rules...)
	b := run(t, 42, nil, rules...)
	c := run(t, 43, nil, rules...)
	if len(a) == 0 {
		t.Fatal("nothing fired")
	}
	if !bytes.Equal(a, b) {
		t.Errorf("same seed, different logs:\n%s\n%s", a, b)
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds, same log")
	}
	firings, err := ReadLog(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	// Replay with no rules reproduces every firing, byte for byte.
	if r := run(t, 0, firings); !bytes.Equal(a, r) {
		t.Errorf("replay differs:\n%s\nreplayed:\n%s", a, r)
	}
}

func TestReadLogRejects(t *testing.T) {
	for _, in := range []string{
		`{"seq":1,"door":"disk","device":"a","op":1,"rule":"r","fault":"dma.read.fail","rand":0}`,
		`{"seq":1,"door":"msi","device":"a","op":1,"rule":"r","fault":"dma.read.fail","rand":0}`,
		`{"seq":1,"door":"dma","device":"a","op":0,"rule":"r","fault":"dma.read.fail","rand":0}`,
		`{"seq":1,"door":"dma","extra":1}`,
		`not json`,
	} {
		if _, err := ReadLog(bytes.NewReader([]byte(in))); err == nil {
			t.Errorf("ReadLog accepted %s", in)
		}
	}
}

func TestActionArgs(t *testing.T) {
	s := NewSet(1, nil)
	s.Add(mustRule(t, "r: wire.link=flap(down=250ms)"))
	act, ok := s.Eval(Wire, &Op{Point: "frame"})
	if !ok || act.Kind != WireLinkFlap || act.Duration("down") != 250*time.Millisecond {
		t.Errorf("got %+v %v", act, ok)
	}
	s.Add(mustRule(t, "p: dma.read=poison(mask=0x80)"))
	act, _ = s.Eval(DMA, &Op{Point: "read"})
	if act.Int("mask") != 0x80 || act.Int("offset") != -1 {
		t.Errorf("poison args %+v", act.Args)
	}
}

func TestRecentRing(t *testing.T) {
	s := NewSet(1, nil)
	s.Add(mustRule(t, "r: dma.read=fail"))
	for range recentFirings + 10 {
		s.Eval(DMA, &Op{Point: "read"})
	}
	got, total := s.Recent()
	if total != recentFirings+10 || len(got) != recentFirings || got[0].Seq != 11 || got[len(got)-1].Seq != total {
		t.Errorf("recent: total %d len %d first %d last %d", total, len(got), got[0].Seq, got[len(got)-1].Seq)
	}
}

// BenchmarkArmed is what a door pays with no rule armed, and Eval's cost
// with one armed rule that does not match.
func BenchmarkArmed(b *testing.B) {
	b.Run("impl=nil", func(b *testing.B) {
		var s *Set
		n := 0
		for b.Loop() {
			if s.Armed(DMA) {
				n++
			}
		}
	})
	b.Run("impl=idle", func(b *testing.B) {
		s := NewSet(1, nil)
		n := 0
		for b.Loop() {
			if s.Armed(DMA) {
				n++
			}
		}
	})
	b.Run("impl=armed-nomatch", func(b *testing.B) {
		s := NewSet(1, nil)
		r, _ := Parse("r: dma.read=fail; device=other")
		s.Add(r)
		op := Op{Point: "read", Device: "myri0"}
		for b.Loop() {
			if s.Armed(DMA) {
				s.Eval(DMA, &op)
			}
		}
	})
}
