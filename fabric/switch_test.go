package fabric_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/sirupsen/logrus"
)

var (
	macA  = [6]byte{0x02, 0, 0, 0, 0, 0xa}
	macB  = [6]byte{0x02, 0, 0, 0, 0, 0xb}
	macC  = [6]byte{0x02, 0, 0, 0, 0, 0xc}
	bcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

type node struct {
	port *fabric.SwitchPort
	recv *fabrictest.Receiver
}

// newSwitch returns a switch with n attached ports.
func newSwitch(t *testing.T, n int) (*fabric.Switch, []node) {
	t.Helper()
	sw := fabric.NewSwitch(quietLog())
	t.Cleanup(sw.Close)
	var nodes []node
	for i := 0; i < n; i++ {
		r := fabrictest.NewReceiver(4096)
		p := sw.NewPort(string(rune('a' + i)))
		p.Attach(r)
		wantLink(t, r, true)
		nodes = append(nodes, node{p, r})
	}
	return sw, nodes
}

func wantLink(t *testing.T, r *fabrictest.Receiver, want bool) {
	t.Helper()
	select {
	case got := <-r.Links:
		if got != want {
			t.Fatalf("LinkChanged(%v), want %v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no LinkChanged(%v)", want)
	}
}

func wantFrame(t *testing.T, r *fabrictest.Receiver, want []byte) {
	t.Helper()
	select {
	case got := <-r.Frames:
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("delivered frame (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frame not delivered")
	}
}

// wantNoFrame checks nothing was delivered; the switch queues synchronously
// within Send and delivery is prompt, so a short wait is enough to catch a
// wrong delivery without making the test slow.
func wantNoFrame(t *testing.T, r *fabrictest.Receiver) {
	t.Helper()
	select {
	case got := <-r.Frames:
		t.Fatalf("unexpected frame delivered: % x", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSwitchLearnsAndForwards(t *testing.T) {
	leaktest.Check(t)
	_, n := newSwitch(t, 3)
	a, b, c := n[0], n[1], n[2]

	// Unknown destination floods to every other port.
	f1 := fabrictest.Frame(macB, macA, 0x0800, []byte("to b, unknown"))
	a.port.Send([][]byte{f1})
	wantFrame(t, b.recv, f1)
	wantFrame(t, c.recv, f1)
	wantNoFrame(t, a.recv)

	// B answers; A was learned, so only A receives it.
	f2 := fabrictest.Frame(macA, macB, 0x0800, []byte("to a, learned"))
	b.port.Send([][]byte{f2})
	wantFrame(t, a.recv, f2)
	wantNoFrame(t, c.recv)

	// Now B is learned too.
	f3 := fabrictest.Frame(macB, macA, 0x0800, []byte("to b, learned"))
	a.port.Send([][]byte{f3})
	wantFrame(t, b.recv, f3)
	wantNoFrame(t, c.recv)

	// Broadcast always floods.
	f4 := fabrictest.Frame(bcast, macC, 0x0806, []byte("arp"))
	c.port.Send([][]byte{f4})
	wantFrame(t, a.recv, f4)
	wantFrame(t, b.recv, f4)

	if got := a.port.Stats(); got.TxFrames != 2 || got.RxFrames != 2 {
		t.Errorf("port a stats = %+v, want 2 tx and 2 rx frames", got)
	}
}

func TestSwitchDropsMalformedFrames(t *testing.T) {
	leaktest.Check(t)
	_, n := newSwitch(t, 2)
	runt := make([]byte, fabric.MinFrame-1)
	giant := make([]byte, fabric.MaxFrame+1)
	n[0].port.Send([][]byte{runt, giant})
	wantNoFrame(t, n[1].recv)
	if got := n[0].port.Stats().TxErrors; got != 2 {
		t.Errorf("TxErrors = %d, want 2", got)
	}
}

func TestSwitchLinkDown(t *testing.T) {
	leaktest.Check(t)
	_, n := newSwitch(t, 2)
	a, b := n[0], n[1]

	b.port.SetLink(false)
	wantLink(t, b.recv, false)
	if b.port.LinkUp() {
		t.Fatal("LinkUp after SetLink(false)")
	}
	f := fabrictest.Frame(macB, macA, 0x0800, []byte("while down"))
	a.port.Send([][]byte{f})
	wantNoFrame(t, b.recv)
	if got := b.port.Stats().RxDropped; got != 1 {
		t.Errorf("RxDropped = %d, want 1", got)
	}
	// A port whose link is down cannot send either.
	b.port.Send([][]byte{fabrictest.Frame(macA, macB, 0x0800, nil)})
	wantNoFrame(t, a.recv)
	if got := b.port.Stats().TxDropped; got != 1 {
		t.Errorf("TxDropped = %d, want 1", got)
	}

	b.port.SetLink(true)
	wantLink(t, b.recv, true)
	a.port.Send([][]byte{f})
	wantFrame(t, b.recv, f)
}

// blockingReceiver blocks in Deliver until released, to fill a queue.
type blockingReceiver struct {
	entered chan struct{}
	release chan struct{}
}

func (r *blockingReceiver) Deliver([][]byte) {
	select {
	case r.entered <- struct{}{}:
	default:
	}
	<-r.release
}
func (r *blockingReceiver) LinkChanged(bool) {}

func TestSwitchFullQueueDrops(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	defer sw.Close()
	a := sw.NewPort("a")
	a.Attach(fabrictest.NewReceiver(16))
	b := sw.NewPort("b")
	br := &blockingReceiver{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b.Attach(br)

	f := fabrictest.Frame(macB, macA, 0x0800, nil)
	a.Send([][]byte{f})
	<-br.entered // b's delivery goroutine is now stuck; its queue fills
	const extra = 10000
	frames := make([][]byte, extra)
	for i := range frames {
		frames[i] = f
	}
	a.Send(frames)
	if got := b.Stats().RxDropped; got == 0 {
		t.Errorf("RxDropped = 0 after %d frames into a stuck port, want > 0", extra)
	}
	close(br.release)
}

func TestDetachWaitsAndStopsDelivery(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	defer sw.Close()
	a := sw.NewPort("a")
	a.Attach(fabrictest.NewReceiver(16))
	b := sw.NewPort("b")
	br := &blockingReceiver{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b.Attach(br)
	a.Send([][]byte{fabrictest.Frame(macB, macA, 0x0800, nil)})
	<-br.entered

	detached := make(chan struct{})
	go func() { b.Detach(); close(detached) }()
	select {
	case <-detached:
		t.Fatal("Detach returned while Deliver was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(br.release)
	<-detached
	if b.LinkUp() {
		t.Error("LinkUp after Detach")
	}
	b.Detach() // idempotent
}

func TestCaptureRoundTrip(t *testing.T) {
	leaktest.Check(t)
	sw, n := newSwitch(t, 2)
	path := filepath.Join(t.TempDir(), "wire.pcap")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fabric.NewCapture(file, fabric.CaptureConfig{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	sw.SetCapture(c)
	want := [][]byte{
		fabrictest.Frame(bcast, macA, 0x0806, []byte("who has")),
		fabrictest.Frame(macA, macB, 0x0806, []byte("is at")),
	}
	n[0].port.Send(want[:1])
	n[1].port.Send(want[1:])
	if old := sw.SetCapture(nil); old != c {
		t.Fatal("SetCapture did not return the active capture")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for {
		pkt, _, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pkt)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("captured frames (-want +got):\n%s", diff)
	}
}

func BenchmarkSwitchForward(b *testing.B) {
	for _, size := range []int{64, 1514, 9014} {
		f := fabrictest.Frame(macB, macA, 0x0800, make([]byte, size-14))
		// Baseline: what the switch cannot avoid, done the cheapest way: a
		// copy into a pooled buffer, a channel hand-off to a receiving
		// goroutine, the buffer back to the pool.
		b.Run("size="+strconv.Itoa(size)+"/impl=raw", func(b *testing.B) {
			pool := sync.Pool{New: func() any { return new([9018]byte) }}
			ch := make(chan *[9018]byte, 1024)
			done := make(chan struct{})
			go func() {
				for i := 0; i < b.N; i++ {
					pool.Put(<-ch)
				}
				close(done)
			}()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := pool.Get().(*[9018]byte)
				copy(c[:], f)
				ch <- c
			}
			<-done
		})
		b.Run("size="+strconv.Itoa(size)+"/impl=switch", func(b *testing.B) {
			sw := fabric.NewSwitch(quietLog())
			defer sw.Close()
			a := sw.NewPort("a")
			a.Attach(fabrictest.NewReceiver(1))
			dst := sw.NewPort("b")
			cr := &countingReceiver{}
			dst.Attach(cr)
			// Learn b so the benchmark measures unicast forwarding.
			dst.Send([][]byte{fabrictest.Frame(macA, macB, 0x0800, nil)})
			b.SetBytes(int64(size))
			b.ResetTimer()
			batch := [][]byte{f}
			for i := 0; i < b.N; i++ {
				// Stay below the port queue so nothing is dropped.
				for int64(i)-cr.n.Load() >= 1024 {
					runtime.Gosched()
				}
				a.Send(batch)
			}
			for cr.n.Load() < int64(b.N) {
				runtime.Gosched()
			}
			if d := dst.Stats().RxDropped; d > 0 {
				b.Fatalf("%d frames dropped", d)
			}
		})
	}
}

type countingReceiver struct{ n atomic.Int64 }

func (r *countingReceiver) Deliver(frames [][]byte) { r.n.Add(int64(len(frames))) }
func (r *countingReceiver) LinkChanged(bool)        {}

// A MAC that moves to another port is reached there at once, even though
// the sender's port remembers where it was (the switch's lookup cache):
// the four sends happen within one tick of the switch's clock.
func TestSwitchMACMoves(t *testing.T) {
	leaktest.Check(t)
	_, n := newSwitch(t, 3)
	a, b, c := n[0], n[1], n[2]
	f1 := fabrictest.Frame(macA, macC, 0x0800, []byte("1: c to a, a unknown"))
	f2 := fabrictest.Frame(macC, macA, 0x0800, []byte("2: a to c, at port c"))
	f3 := fabrictest.Frame(macA, macC, 0x0800, []byte("3: c's MAC from port b"))
	f4 := fabrictest.Frame(macC, macA, 0x0800, []byte("4: a to c, at port b"))
	c.port.Send([][]byte{f1})
	a.port.Send([][]byte{f2})
	b.port.Send([][]byte{f3})
	a.port.Send([][]byte{f4})
	wantFrame(t, a.recv, f1)
	wantFrame(t, a.recv, f3)
	wantFrame(t, b.recv, f1)
	wantFrame(t, b.recv, f4)
	wantFrame(t, c.recv, f2)
	wantNoFrame(t, c.recv)
}

// A detached port's MACs are forgotten at once: frames for them flood.
func TestSwitchForgetsDetachedPort(t *testing.T) {
	leaktest.Check(t)
	_, n := newSwitch(t, 3)
	a, b, c := n[0], n[1], n[2]
	fb := fabrictest.Frame(macA, macB, 0x0800, []byte("b is at port b"))
	b.port.Send([][]byte{fb})
	wantFrame(t, a.recv, fb)
	wantFrame(t, c.recv, fb)
	f := fabrictest.Frame(macB, macA, 0x0800, []byte("to b"))
	a.port.Send([][]byte{f})
	wantFrame(t, b.recv, f)
	wantNoFrame(t, c.recv)
	b.port.Detach()
	a.port.Send([][]byte{f})
	wantFrame(t, c.recv, f)
}
