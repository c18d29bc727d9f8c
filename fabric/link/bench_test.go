package link

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"golang.org/x/sys/unix"
)

// The benchmarks move 1514-byte frames through each kind of link, in each
// direction, against a raw baseline in the same run: the same frames over
// the same kind of socket (or TAP file) written and read directly, with
// the same framing and the same batches. "out" is switch to far side,
// "in" far side to switch. They report frames/s. The sender keeps at most
// window frames in flight, so that no queue overflows and every frame
// counts (a datagram lost anyway fails the benchmark).

const (
	benchFrame  = 1514
	benchBatch  = 64
	benchWindow = 256
)

var benchDst = [6]byte{2, 0, 0, 0, 0, 2}

func benchFrames() [][]byte {
	f := fabrictest.Frame(benchDst, [6]byte{2, 0, 0, 0, 0, 1}, 0x88b5, make([]byte, benchFrame-14))
	batch := make([][]byte, benchBatch)
	for i := range batch {
		batch[i] = f
	}
	return batch
}

// pump sends b.N frames with send (in batches) while no more than window
// are unconfirmed by received, waits for all of them and reports frames/s.
func pump(b *testing.B, window int64, send func(frames [][]byte), received func() int64) {
	b.Helper()
	batch := benchFrames()
	b.SetBytes(benchFrame)
	b.ResetTimer()
	start := time.Now()
	// wait waits until received reaches want; a frame lost on the way
	// fails the benchmark instead of hanging it.
	wait := func(want int64) {
		deadline := time.Now().Add(30 * time.Second)
		for received() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d frames arrived", received(), want)
			}
			runtime.Gosched()
		}
	}
	per := min(benchBatch, int(window)/2)
	for sent := 0; sent < b.N; {
		n := min(per, b.N-sent)
		wait(int64(sent+n) - window)
		send(batch[:n])
		sent += n
	}
	wait(int64(b.N))
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
}

// countStream counts the frames a stream carries until it ends.
func countStream(r io.Reader, n *atomic.Int64) {
	sr := newStreamReader(r)
	for {
		if _, _, err := sr.next(); err != nil && !errors.Is(err, errRunt) && !errors.Is(err, errOversize) {
			return
		}
		n.Add(1)
	}
}

// countPackets counts the datagrams or TAP frames read from r until it fails.
func countPackets(r func([]byte) (int, error), n *atomic.Int64) {
	buf := make([]byte, fabric.MaxFrame+1)
	for {
		if _, err := r(buf); err != nil {
			return
		}
		n.Add(1)
	}
}

func tcpPair(b *testing.B) (net.Conn, net.Conn) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	return c1, c2
}

// benchNode is a device on the switch that counts what it receives. The
// frames' destination is never learnt, so the switch floods them: to the
// only other port.
type benchNode struct {
	port *fabric.SwitchPort
	n    atomic.Int64
}

func (d *benchNode) Deliver(frames [][]byte) { d.n.Add(int64(len(frames))) }
func (d *benchNode) LinkChanged(bool)        {}

func newBenchNode(sw *fabric.Switch) *benchNode {
	d := &benchNode{port: sw.NewPort("dev")}
	d.port.Attach(d)
	return d
}

func benchLink(b *testing.B, sw *fabric.Switch, cfg Config) *Link {
	b.Helper()
	cfg.Name = "bench"
	l, err := Open(sw, cfg, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	l.Start()
	return l
}

func BenchmarkLinkStream(b *testing.B) {
	b.Run("dir=out/impl=baseline", func(b *testing.B) {
		w, r := tcpPair(b)
		var n atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { countStream(r, &n) })
		sc := &streamConn{c: w}
		pump(b, benchWindow, func(f [][]byte) { sc.writeFrames(f) }, n.Load)
		w.Close()
		wg.Wait()
		r.Close()
	})
	b.Run("dir=out/impl=ours", func(b *testing.B) {
		sw := fabric.NewSwitch(quietLog())
		l := benchLink(b, sw, Config{Kind: Stream, Addr: "127.0.0.1:0", Server: true})
		c, err := net.Dial("tcp", l.Addr())
		if err != nil {
			b.Fatal(err)
		}
		for !l.Stats().Carrier {
			runtime.Gosched()
		}
		src := newBenchNode(sw)
		var n atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { countStream(c, &n) })
		pump(b, benchWindow, src.port.Send, n.Load)
		l.Close()
		c.Close()
		wg.Wait()
		src.port.Detach()
	})
	b.Run("dir=in/impl=baseline", func(b *testing.B) {
		w, r := tcpPair(b)
		var n atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { countStream(r, &n) })
		sc := &streamConn{c: w}
		pump(b, benchWindow, func(f [][]byte) { sc.writeFrames(f) }, n.Load)
		w.Close()
		wg.Wait()
		r.Close()
	})
	b.Run("dir=in/impl=ours", func(b *testing.B) {
		sw := fabric.NewSwitch(quietLog())
		l := benchLink(b, sw, Config{Kind: Stream, Addr: "127.0.0.1:0", Server: true})
		dst := newBenchNode(sw)
		c, err := net.Dial("tcp", l.Addr())
		if err != nil {
			b.Fatal(err)
		}
		sc := &streamConn{c: c}
		pump(b, benchWindow, func(f [][]byte) { sc.writeFrames(f) }, dst.n.Load)
		c.Close()
		l.Close()
		dst.port.Detach()
	})
}

func udpPair(b *testing.B) (w, r *net.UDPConn) {
	b.Helper()
	r, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	w, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	return w, r
}

// A loopback UDP socket holds about 100 frames of this size by default:
// the window stays well below.
const dgramWindow = 32

func BenchmarkLinkDgram(b *testing.B) {
	b.Run("dir=out/impl=baseline", func(b *testing.B) {
		w, r := udpPair(b)
		var n atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { countPackets(r.Read, &n) })
		d := &dgram{pc: w, remote: r.LocalAddr()}
		pump(b, dgramWindow, func(f [][]byte) { d.writeFrames(f) }, n.Load)
		r.Close()
		wg.Wait()
		w.Close()
	})
	b.Run("dir=out/impl=ours", func(b *testing.B) {
		r, _ := udpPair(b)
		sw := fabric.NewSwitch(quietLog())
		l := benchLink(b, sw, Config{Kind: Dgram, Addr: "127.0.0.1:0", Remote: r.LocalAddr().String()})
		src := newBenchNode(sw)
		var n atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { countPackets(r.Read, &n) })
		pump(b, dgramWindow, src.port.Send, n.Load)
		r.Close()
		wg.Wait()
		l.Close()
		src.port.Detach()
	})
	b.Run("dir=in/impl=baseline", func(b *testing.B) {
		w, r := udpPair(b)
		var n atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() { countPackets(r.Read, &n) })
		d := &dgram{pc: w, remote: r.LocalAddr()}
		pump(b, dgramWindow, func(f [][]byte) { d.writeFrames(f) }, n.Load)
		r.Close()
		wg.Wait()
		w.Close()
	})
	b.Run("dir=in/impl=ours", func(b *testing.B) {
		w, _ := udpPair(b)
		sw := fabric.NewSwitch(quietLog())
		l := benchLink(b, sw, Config{Kind: Dgram, Addr: "127.0.0.1:0", Remote: w.LocalAddr().String()})
		dst := newBenchNode(sw)
		to, _ := net.ResolveUDPAddr("udp", l.Addr())
		d := &dgram{pc: w, remote: to}
		pump(b, dgramWindow, func(f [][]byte) { d.writeFrames(f) }, dst.n.Load)
		w.Close()
		l.Close()
		dst.port.Detach()
	})
}

// BenchmarkLinkTAP writes frames into a TAP interface of a network
// namespace made for the benchmark, where the kernel takes and drops them
// (dir=out), and reads frames the kernel sends out of it through a packet
// socket (dir=in). The baseline reads or writes the TAP file itself.
func BenchmarkLinkTAP(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root for a network namespace and a TAP interface")
	}
	var ours *Link
	var base *os.File
	var pkt int // AF_PACKET socket bound to the link's interface
	var basePkt int
	var err error
	sw := fabric.NewSwitch(quietLog())
	func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
			if err = unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return
			}
			if ours, err = Open(sw, Config{Kind: TAP, Name: "bench", Addr: "btap0"}, quietLog()); err != nil {
				return
			}
			var t transport
			if t, err = openTAP(&Link{cfg: Config{Kind: TAP, Addr: "btap1"}}); err != nil {
				return
			}
			base = t.(*tap).f
			if pkt, err = packetSocket("btap0"); err != nil {
				return
			}
			basePkt, err = packetSocket("btap1")
		}()
		<-done
	}()
	if err != nil {
		b.Fatal(err)
	}
	ours.Start()
	defer ours.Close()
	defer base.Close()
	defer unix.Close(pkt)
	defer unix.Close(basePkt)
	sendPkt := func(fd int) func([][]byte) {
		return func(frames [][]byte) {
			for _, f := range frames {
				unix.Write(fd, f)
			}
		}
	}

	b.Run("dir=out/impl=baseline", func(b *testing.B) {
		var n atomic.Int64
		pump(b, benchWindow, func(frames [][]byte) {
			for _, f := range frames {
				if _, err := base.Write(f); err == nil {
					n.Add(1)
				}
			}
		}, n.Load)
	})
	b.Run("dir=out/impl=ours", func(b *testing.B) {
		src := newBenchNode(sw)
		defer src.port.Detach()
		start := ours.Stats().OutFrames
		pump(b, benchWindow, src.port.Send, func() int64 { return int64(ours.Stats().OutFrames - start) })
	})
	// The kernel's TAP queue drops beyond its length (1000): the window
	// stays well below.
	b.Run("dir=in/impl=baseline", func(b *testing.B) {
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Go(func() {
			buf := make([]byte, fabric.MaxFrame+1)
			for {
				base.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := base.Read(buf); err == nil {
					n.Add(1)
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		})
		pump(b, benchWindow, sendPkt(basePkt), n.Load)
		close(stop)
		wg.Wait()
	})
	b.Run("dir=in/impl=ours", func(b *testing.B) {
		dst := newBenchNode(sw)
		defer dst.port.Detach()
		pump(b, benchWindow, sendPkt(pkt), dst.n.Load)
	})
}

// packetSocket returns an AF_PACKET socket that sends raw frames out of
// interface name (in the calling thread's namespace).
func packetSocket(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: send only
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
