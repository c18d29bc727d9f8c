package fabric_test

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/fault/faulttest"
)

// wirePair is a switch with ports a and b, b's deliveries recorded.
func wirePair(t *testing.T, set *fault.Set) (*fabric.Switch, *fabric.SwitchPort, *fabric.SwitchPort, *fabrictest.Receiver) {
	t.Helper()
	sw := fabric.NewSwitch(quietLog())
	sw.SetFaults(set)
	a, b := sw.NewPort("a"), sw.NewPort("b")
	a.Attach(fabrictest.NewReceiver(64))
	rb := fabrictest.NewReceiver(64)
	b.Attach(rb)
	<-rb.Links
	t.Cleanup(sw.Close)
	return sw, a, b, rb
}

func frames(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, fabrictest.Frame(macB, macA, 0x0800, []byte("frame "+strconv.Itoa(i))))
	}
	return out
}

func recv(t *testing.T, rb *fabrictest.Receiver, n int) [][]byte {
	t.Helper()
	var got [][]byte
	for range n {
		select {
		case f := <-rb.Frames:
			got = append(got, f)
		case <-time.After(30 * time.Second):
			t.Fatalf("got %d frames, want %d", len(got), n)
		}
	}
	return got
}

func payload(f []byte) string { return string(f[14:21]) }

func TestWireFaults(t *testing.T) {
	t.Run("loss", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=loss; device=a; interval=2"))
		a.Send(frames(4))
		got := recv(t, rb, 2)
		if payload(got[0]) != "frame 0" || payload(got[1]) != "frame 2" {
			t.Errorf("got %q %q", payload(got[0]), payload(got[1]))
		}
		if d := a.Stats().TxDropped; d != 2 {
			t.Errorf("tx dropped %d, want 2", d)
		}
	})
	t.Run("dup", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=dup; once"))
		a.Send(frames(2))
		got := recv(t, rb, 3)
		if payload(got[0]) != "frame 0" || payload(got[1]) != "frame 0" || payload(got[2]) != "frame 1" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("reorder", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=reorder; once"))
		a.Send(frames(2))
		got := recv(t, rb, 2)
		if payload(got[0]) != "frame 1" || payload(got[1]) != "frame 0" {
			t.Errorf("got %q then %q", payload(got[0]), payload(got[1]))
		}
	})
	t.Run("corrupt past the header", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=corrupt(mask=0xff); once"))
		sent := frames(1)
		orig := append([]byte(nil), sent[0]...)
		a.Send(sent)
		got := recv(t, rb, 1)[0]
		diff := 0
		for i := range got {
			if got[i] != orig[i] {
				diff++
				if i < 14 {
					t.Errorf("header byte %d corrupted", i)
				}
			}
		}
		if diff != 1 || string(sent[0]) != string(orig) {
			t.Errorf("%d bytes differ; sender's buffer changed: %v", diff, string(sent[0]) != string(orig))
		}
	})
	t.Run("delay", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=delay(delay=20ms); once"))
		a.Send(frames(2))
		got := recv(t, rb, 2)
		if payload(got[0]) != "frame 1" || payload(got[1]) != "frame 0" {
			t.Errorf("got %q then %q", payload(got[0]), payload(got[1]))
		}
	})
	t.Run("rate clocks frames out in order", func(t *testing.T) {
		// One frame of about 60 bytes at 8000 bit/s takes 60 ms; the
		// two after it, not paced, wait behind it.
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=rate(bps=8000); once"))
		start := time.Now()
		a.Send(frames(3))
		got := recv(t, rb, 3)
		if el := time.Since(start); el < 50*time.Millisecond {
			t.Errorf("3 frames in %v: the paced one took less than its 60 ms on the line", el)
		}
		for i, f := range got {
			if payload(f) != "frame "+strconv.Itoa(i) {
				t.Errorf("frame %d is %q: reordered", i, payload(f))
			}
		}
	})
	t.Run("slot releases at the slot boundary", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=slot(slot=50ms)"))
		before := time.Now()
		a.Send(frames(3))
		got := recv(t, rb, 3)
		if boundary := before.Truncate(50 * time.Millisecond).Add(50 * time.Millisecond); time.Now().Before(boundary) {
			t.Errorf("frames arrived before the slot boundary %v", boundary)
		}
		for i, f := range got {
			if payload(f) != "frame "+strconv.Itoa(i) {
				t.Errorf("frame %d is %q: reordered", i, payload(f))
			}
		}
	})
	t.Run("pause flood", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.pause=flood(quanta=7, period=1ms, for=40ms); device=a; once"))
		ra := fabrictest.NewReceiver(256)
		a.Attach(ra)
		<-ra.Links
		a.Send(frames(1))
		if got := recv(t, rb, 1); payload(got[0]) != "frame 0" {
			t.Errorf("the frame that started the flood: %q", payload(got[0]))
		}
		pauses := 0
		for pauses < 3 {
			select {
			case f := <-ra.Frames:
				if len(f) < 60 || f[0] != 0x01 || f[5] != 0x01 || f[12] != 0x88 || f[13] != 0x08 || f[15] != 0x01 || f[17] != 7 {
					t.Fatalf("not a PAUSE of 7 quanta: % x", f[:18])
				}
				pauses++
			case <-time.After(30 * time.Second):
				t.Fatalf("%d PAUSE frames, want at least 3", pauses)
			}
		}
		time.Sleep(500 * time.Millisecond) // the flood lasts 40 ms
		for len(ra.Frames) > 0 {
			<-ra.Frames
		}
		time.Sleep(200 * time.Millisecond)
		if n := len(ra.Frames); n > 1 {
			t.Errorf("%d PAUSE frames after the flood's end", n)
		}
	})
	t.Run("runt", func(t *testing.T) {
		_, a, _, rb := wirePair(t, faulttest.Set(t, 9, "r: wire.frame=bad(runt); once"))
		a.Send(frames(1))
		if got := recv(t, rb, 1)[0]; len(got) != 32 {
			t.Errorf("runt of %d bytes", len(got))
		}
	})
	t.Run("link flap", func(t *testing.T) {
		sw, a, _, _ := wirePair(t, faulttest.Set(t, 9, "r: wire.link=flap(down=10ms); once"))
		links := make(chan bool, 4)
		sw.OnFaultLink(func(port string, up bool) { links <- up })
		ra := fabrictest.NewReceiver(64)
		a.Attach(ra)
		<-ra.Links
		a.Send(frames(1))
		for _, want := range []bool{false, true} {
			select {
			case up := <-ra.Links:
				if up != want {
					t.Errorf("carrier %v, want %v", up, want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no carrier change")
			}
			if up := <-links; up != want {
				t.Errorf("OnFaultLink %v, want %v", up, want)
			}
		}
	})
}

// BenchmarkSwitchForwardFaultDoor: the switch with no fault set, with an
// idle one, and with one armed rule that does not match, in one run.
func BenchmarkSwitchForwardFaultDoor(b *testing.B) {
	f := fabrictest.Frame(macB, macA, 0x0800, make([]byte, 1500))
	for _, c := range []struct {
		name string
		set  *fault.Set
	}{
		{"baseline", nil},
		{"door-idle", fault.NewSet(1, nil)},
		{"door-armed-nomatch", faulttest.Set(b, 9, "r: wire.frame=loss; device=other")},
	} {
		b.Run("size=1514/impl="+c.name, func(b *testing.B) {
			sw := fabric.NewSwitch(quietLog())
			sw.SetFaults(c.set)
			defer sw.Close()
			a := sw.NewPort("a")
			a.Attach(fabrictest.NewReceiver(1))
			dst := sw.NewPort("b")
			cr := &countingReceiver{}
			dst.Attach(cr)
			dst.Send([][]byte{fabrictest.Frame(macA, macB, 0x0800, nil)})
			b.SetBytes(int64(len(f)))
			b.ResetTimer()
			batch := [][]byte{f}
			for i := 0; i < b.N; i++ {
				for int64(i)-cr.n.Load() >= 1024 {
					runtime.Gosched()
				}
				a.Send(batch)
			}
			for cr.n.Load() < int64(b.N) {
				runtime.Gosched()
			}
		})
	}
}

// wireRun sends 500 numbered frames from a to b through seeded wire
// faults (or a replay) and returns the fault log and what b received.
func wireRun(t *testing.T, seed uint64, replay []fault.Firing) (string, []string) {
	t.Helper()
	var set *fault.Set
	if replay == nil {
		set = faulttest.Set(t, seed, "loss: wire.frame=loss; probability=5", "dup: wire.frame=dup; probability=3",
			"corrupt: wire.frame=corrupt; probability=3", "reorder: wire.frame=reorder; probability=3")
	} else {
		set = fault.NewSet(0, nil)
		set.Replay(replay)
	}
	var log strings.Builder
	set.SetLog(&log)
	sw := fabric.NewSwitch(quietLog())
	sw.SetFaults(set)
	a, b := sw.NewPort("a"), sw.NewPort("b")
	a.Attach(fabrictest.NewReceiver(8))
	rb := fabrictest.NewReceiver(2048)
	b.Attach(rb)
	<-rb.Links
	for _, f := range frames(500) {
		a.Send([][]byte{f})
	}
	a.Send(frames(1)) // releases a frame reorder may still hold
	var got []string
	for {
		select {
		case f := <-rb.Frames:
			got = append(got, string(f))
			continue
		case <-time.After(2 * time.Second):
		}
		break
	}
	sw.Close()
	set.Flush()
	return log.String(), got
}

// Issue #10 acceptance 5 at the wire: one seed, byte-identical logs and
// deliveries; another seed, another log; a replay of the log, the same
// deliveries and log.
func TestWireFaultsDeterministic(t *testing.T) {
	log1, got1 := wireRun(t, 42, nil)
	log2, got2 := wireRun(t, 42, nil)
	log3, _ := wireRun(t, 43, nil)
	if log1 == "" || log1 != log2 || strings.Join(got1, "|") != strings.Join(got2, "|") {
		t.Fatalf("seed 42 twice: logs equal %v, deliveries equal %v", log1 == log2, strings.Join(got1, "|") == strings.Join(got2, "|"))
	}
	if log1 == log3 {
		t.Error("seeds 42 and 43 wrote the same log")
	}
	firings, err := fault.ReadLog(strings.NewReader(log1))
	if err != nil {
		t.Fatal(err)
	}
	logR, gotR := wireRun(t, 0, firings)
	if logR != log1 || strings.Join(gotR, "|") != strings.Join(got1, "|") {
		t.Errorf("replay: log equal %v, deliveries equal %v", logR == log1, strings.Join(gotR, "|") == strings.Join(got1, "|"))
	}
	t.Logf("%d firings, %d of 501 frames delivered", len(firings), len(got1))
}
