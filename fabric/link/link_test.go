package link

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/sirupsen/logrus"
)

// wait is how long a test waits for something that should happen at once:
// generous, for a loaded 2-core CI machine.
const wait = 20 * time.Second

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// node is a device on a switch: a port with a recording receiver.
type node struct {
	port *fabric.SwitchPort
	recv *fabrictest.Receiver
	mac  [6]byte
}

func newNode(t *testing.T, sw *fabric.Switch, name string, last byte) *node {
	t.Helper()
	n := &node{port: sw.NewPort(name), recv: fabrictest.NewReceiver(4096), mac: [6]byte{2, 0, 0, 0, 0, last}}
	n.port.Attach(n.recv)
	t.Cleanup(n.port.Detach)
	return n
}

// frameTo builds a frame from n to dst with a payload of size bytes in
// total (header included).
func (n *node) frameTo(dst [6]byte, size int, seq byte) []byte {
	p := make([]byte, size-14)
	for i := range p {
		p[i] = seq + byte(i)
	}
	return fabrictest.Frame(dst, n.mac, 0x88b5, p)
}

// next waits for the next frame n receives.
func (n *node) next(t *testing.T) []byte {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case f := <-n.recv.Frames:
			return f
		case <-n.recv.Links:
		case <-timer.C:
			t.Fatalf("no frame within %v", wait)
			return nil
		}
	}
}

// none checks that n receives nothing for a short while.
func (n *node) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-n.recv.Frames:
		t.Fatalf("unexpected frame of %d bytes", len(f))
	case <-time.After(200 * time.Millisecond):
	}
}

// eventually polls cond until it holds or wait passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func open(t *testing.T, sw *fabric.Switch, spec string) *Link {
	t.Helper()
	cfg, err := ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = string(cfg.Kind)
	}
	l, err := Open(sw, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	l.Start()
	t.Cleanup(l.Close)
	return l
}

func TestParseSpec(t *testing.T) {
	good := []struct {
		spec string
		want Config
	}{
		{"stream=127.0.0.1:5555,server", Config{Kind: Stream, Addr: "127.0.0.1:5555", Server: true}},
		{"stream=unix:/run/x.sock,client,mtu=1500,name=up0", Config{Kind: Stream, Addr: "unix:/run/x.sock", MTU: 1500, Name: "up0"}},
		{"dgram=127.0.0.1:1,127.0.0.1:2", Config{Kind: Dgram, Addr: "127.0.0.1:1", Remote: "127.0.0.1:2"}},
		{"dgram=unix:/a,unix:/b,mtu=9000", Config{Kind: Dgram, Addr: "unix:/a", Remote: "unix:/b", MTU: 9000}},
		{"tap=myri-tap0", Config{Kind: TAP, Addr: "myri-tap0"}},
		{"vhost-user=/run/vu.sock,mtu=1500", Config{Kind: VhostUser, Addr: "/run/vu.sock", MTU: 1500}},
	}
	for _, g := range good {
		got, err := ParseSpec(g.spec)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", g.spec, err)
			continue
		}
		if d := cmp.Diff(g.want, got); d != "" {
			t.Errorf("ParseSpec(%q) -want +got:\n%s", g.spec, d)
		}
		again, err := ParseSpec(got.Spec())
		if err != nil || again != got {
			t.Errorf("ParseSpec(%q.Spec() = %q) = %+v, %v", g.spec, got.Spec(), again, err)
		}
	}
	for _, bad := range []string{
		"", "stream", "stream=", "stream=127.0.0.1:5555", "stream=127.0.0.1:5555,both",
		"stream=nohost,server", "stream=unix:,server", "dgram=127.0.0.1:1", "dgram=unix:/a,127.0.0.1:2",
		"tap=", "tap=waytoolonginterfacename", "tap=a/b", "tap=t0,server", "vde=x",
		"tap=t0,mtu=10", "vhost-user=", "vhost-user=/a,server", "tap=t0,mtu=70000", "tap=t0,mtu=x", "tap=t0,color=red", "tap=t0,name=a b",
	} {
		if c, err := ParseSpec(bad); err == nil {
			t.Errorf("ParseSpec(%q) = %+v, want an error", bad, c)
		}
	}
}

// TestStreamPair joins two switches by a stream port pair, TCP and UNIX,
// and sends frames both ways, the largest the wire carries included.
func TestStreamPair(t *testing.T) {
	leaktest.Check(t)
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = "unix:" + filepath.Join(t.TempDir(), "wire.sock")
			}
			swA, swB := fabric.NewSwitch(quietLog()), fabric.NewSwitch(quietLog())
			srv := open(t, swA, "stream="+addr+",server")
			cli := open(t, swB, "stream="+srv.Addr()+",client")
			a, b := newNode(t, swA, "a", 1), newNode(t, swB, "b", 2)
			eventually(t, "both carriers up", func() bool { return srv.Stats().Carrier && cli.Stats().Carrier })

			for _, size := range []int{60, 1514, fabric.MaxFrame} {
				f := a.frameTo(b.mac, size, byte(size))
				a.port.Send([][]byte{f})
				if got := b.next(t); !bytes.Equal(got, f) {
					t.Fatalf("a to b, %d bytes: got %d bytes, differing", size, len(got))
				}
				g := b.frameTo(a.mac, size, byte(size)+1)
				b.port.Send([][]byte{g})
				if got := a.next(t); !bytes.Equal(got, g) {
					t.Fatalf("b to a, %d bytes: got %d bytes, differing", size, len(got))
				}
			}
			// A burst arrives whole and in order.
			var burst [][]byte
			for i := range 500 {
				burst = append(burst, a.frameTo(b.mac, 60+i, byte(i)))
			}
			for i := 0; i < len(burst); i += 50 {
				a.port.Send(burst[i : i+50])
			}
			for i, want := range burst {
				if got := b.next(t); !bytes.Equal(got, want) {
					t.Fatalf("burst frame %d: got %d bytes, want %d", i, len(got), len(want))
				}
			}
			// Out is counted after the write, maybe after the frame arrived.
			eventually(t, "client counters", func() bool {
				st := cli.Stats()
				return st.InFrames == 3+500 && st.OutFrames == 3 && st.Connects == 1
			})
		})
	}
}

// TestStreamClientReconnects restarts the server side under a client: the
// client's carrier drops, the switch keeps forwarding between its other
// ports meanwhile, frames for the link are counted as dropped, and traffic
// resumes by itself once the server is back.
func TestStreamClientReconnects(t *testing.T) {
	leaktest.Check(t)
	addr := "unix:" + filepath.Join(t.TempDir(), "wire.sock")
	swA, swB := fabric.NewSwitch(quietLog()), fabric.NewSwitch(quietLog())
	cli := open(t, swB, "stream="+addr+",client")
	b, c := newNode(t, swB, "b", 2), newNode(t, swB, "c", 3)

	start := func() (*Link, *node) {
		cfg, _ := ParseSpec("stream=" + addr + ",server,name=srv")
		srv, err := Open(swA, cfg, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		a := &node{port: swA.NewPort("a"), recv: fabrictest.NewReceiver(4096), mac: [6]byte{2, 0, 0, 0, 0, 1}}
		a.port.Attach(a.recv)
		return srv, a
	}
	ping := func(a *node) {
		t.Helper()
		f := b.frameTo(a.mac, 100, 7)
		b.port.Send([][]byte{f})
		if got := a.next(t); !bytes.Equal(got, f) {
			t.Fatal("frame over the stream differs")
		}
	}
	srv, a := start() // the client connects within its backoff
	eventually(t, "client connected", func() bool { return cli.Stats().Carrier })
	ping(a)

	srv.Close()
	a.port.Detach()
	eventually(t, "client carrier down", func() bool { return !cli.Stats().Carrier })
	for len(c.recv.Frames) > 0 { // c saw the flooded ping
		<-c.recv.Frames
	}
	b.port.Send([][]byte{b.frameTo([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 60, 1)})
	if got := c.next(t); len(got) != 60 {
		t.Fatal("the switch stopped forwarding between its other ports")
	}
	eventually(t, "drop counted", func() bool { return cli.Port().Stats().RxDropped > 0 })

	srv, a = start()
	defer srv.Close()
	defer a.port.Detach()
	eventually(t, "client reconnected", func() bool { return cli.Stats().Carrier })
	ping(a)
	// A redial can land in the closing listener's backlog: count one or
	// more reconnections, each after a disconnect.
	if st := cli.Stats(); st.Connects < 2 || st.Disconnects != st.Connects-1 {
		t.Errorf("client: %d connects, %d disconnects; want at least 2, and one fewer", st.Connects, st.Disconnects)
	}
}

// TestStreamServerTakesNewestPeer: a second client replaces the first, as a
// peer that restarted without its old connection ending would.
func TestStreamServerTakesNewestPeer(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	srv := open(t, sw, "stream=127.0.0.1:0,server")
	a := newNode(t, sw, "a", 1)
	c1, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	eventually(t, "first peer", func() bool { return srv.Stats().Connects == 1 })
	c2, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c1.SetReadDeadline(time.Now().Add(wait))
	if _, err := c1.Read(make([]byte, 1)); err == nil {
		t.Fatal("the first peer's connection is still open")
	}
	f := fabrictest.Frame(a.mac, [6]byte{2, 0, 0, 0, 0, 9}, 0x88b5, []byte("hello"))
	c2.Write(appendStreamFrame(nil, f))
	if got := a.next(t); !bytes.Equal(got, f) {
		t.Fatal("frame from the second peer differs")
	}
	if st := srv.Stats(); !st.Carrier {
		t.Errorf("carrier down with the second peer connected: %+v", st)
	}
}

// rawStreamPeer connects to a server link and returns the connection and
// a node on the link's switch.
func rawStreamPeer(t *testing.T, sw *fabric.Switch, spec string) (*Link, net.Conn, *node) {
	t.Helper()
	srv := open(t, sw, spec)
	a := newNode(t, sw, "a", 1)
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	eventually(t, "carrier up", func() bool { return srv.Stats().Carrier })
	return srv, c, a
}

// TestStreamMalformed is the malformed-input suite of the stream port:
// runt and oversized frames are skipped and counted and the stream goes
// on; a length prefix no frame can have drops the connection, counted; the
// switch keeps running and a new peer is served.
func TestStreamMalformed(t *testing.T) {
	leaktest.Check(t)
	srv, c, a := rawStreamPeer(t, fabric.NewSwitch(quietLog()), "stream=127.0.0.1:0,server")
	good := fabrictest.Frame(a.mac, [6]byte{2, 0, 0, 0, 0, 9}, 0x88b5, []byte("good"))
	var in []byte
	in = appendStreamFrame(in, nil)                             // empty
	in = appendStreamFrame(in, make([]byte, 13))                // runt
	in = appendStreamFrame(in, make([]byte, fabric.MaxFrame+1)) // one byte too long
	in = appendStreamFrame(in, make([]byte, maxSkip))           // the longest skipped
	in = appendStreamFrame(in, good)                            // still in step
	if _, err := c.Write(in); err != nil {
		t.Fatal(err)
	}
	if got := a.next(t); !bytes.Equal(got, good) {
		t.Fatal("the good frame after the bad ones differs")
	}
	st := srv.Stats()
	if st.InRunt != 2 || st.InOversize != 2 || st.InFrames != 1 || st.InDesync != 0 {
		t.Errorf("stats %+v: want 2 runts, 2 oversized, 1 frame", st)
	}

	// Out of step: the connection goes, counted; a new peer is served.
	c.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after a garbage length prefix")
	}
	eventually(t, "desync counted and carrier down", func() bool {
		st := srv.Stats()
		return st.InDesync == 1 && !st.Carrier
	})
	c2, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write(appendStreamFrame(nil, good))
	if got := a.next(t); !bytes.Equal(got, good) {
		t.Fatal("frame from a new peer after a desync differs")
	}

	// Truncated: the peer goes away mid-frame; nothing half-read is sent.
	c2.Write([]byte{0, 0, 0, 100, 1, 2, 3})
	c2.Close()
	eventually(t, "carrier down", func() bool { return !srv.Stats().Carrier })
	a.none(t)
}

// TestMTUDropsNeverTruncates: frames larger than the far side's MTU are
// dropped and counted; the largest that fits goes through whole.
func TestMTUDropsNeverTruncates(t *testing.T) {
	leaktest.Check(t)
	srv, c, a := rawStreamPeer(t, fabric.NewSwitch(quietLog()), "stream=127.0.0.1:0,server,mtu=1500")
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	a.port.Send([][]byte{a.frameTo(bcast, 1500+18+1, 1), a.frameTo(bcast, 1500+18, 2), a.frameTo(bcast, 9018, 3)})
	r := newStreamReader(c)
	c.SetReadDeadline(time.Now().Add(wait))
	f, _, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	if len(f) != 1518 || f[14] != 2 {
		t.Fatalf("got a %d-byte frame, want the 1518-byte one", len(f))
	}
	eventually(t, "two drops and one frame counted", func() bool {
		st := srv.Stats()
		return st.OutTooBig == 2 && st.OutFrames == 1
	})
}

// TestDgramPair joins two switches by a dgram port pair, UDP and UNIX.
func TestDgramPair(t *testing.T) {
	leaktest.Check(t)
	for _, network := range []string{"udp", "unix"} {
		t.Run(network, func(t *testing.T) {
			var la, lb string
			if network == "unix" {
				d := t.TempDir()
				la, lb = "unix:"+filepath.Join(d, "a"), "unix:"+filepath.Join(d, "b")
			} else {
				la, lb = freeUDP(t), freeUDP(t)
			}
			swA, swB := fabric.NewSwitch(quietLog()), fabric.NewSwitch(quietLog())
			pa := open(t, swA, "dgram="+la+","+lb)
			pb := open(t, swB, "dgram="+lb+","+la)
			a, b := newNode(t, swA, "a", 1), newNode(t, swB, "b", 2)
			for _, size := range []int{60, 1514, fabric.MaxFrame} {
				f := a.frameTo(b.mac, size, byte(size))
				a.port.Send([][]byte{f})
				if got := b.next(t); !bytes.Equal(got, f) {
					t.Fatalf("a to b, %d bytes: differs (got %d)", size, len(got))
				}
				g := b.frameTo(a.mac, size, byte(size)+1)
				b.port.Send([][]byte{g})
				if got := a.next(t); !bytes.Equal(got, g) {
					t.Fatalf("b to a, %d bytes: differs (got %d)", size, len(got))
				}
			}
			eventually(t, "counters", func() bool {
				sa, sb := pa.Stats(), pb.Stats()
				return sa.OutFrames == 3 && sb.InFrames == 3 && sa.Carrier
			})
		})
	}
}

// freeUDP returns a loopback UDP address nothing is bound to (now).
func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// TestDgramMalformed is the malformed-input suite of the dgram port:
// empty, runt and oversized datagrams are counted and dropped; the port
// keeps receiving.
func TestDgramMalformed(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	p := open(t, sw, "dgram=127.0.0.1:0,"+peer.LocalAddr().String())
	a := newNode(t, sw, "a", 1)
	to, _ := net.ResolveUDPAddr("udp", p.Addr())
	good := fabrictest.Frame(a.mac, [6]byte{2, 0, 0, 0, 0, 9}, 0x88b5, []byte("good"))
	for _, d := range [][]byte{{}, make([]byte, 13), make([]byte, fabric.MaxFrame+1), make([]byte, 60000), good} {
		if _, err := peer.WriteTo(d, to); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.next(t); !bytes.Equal(got, good) {
		t.Fatal("the good datagram after the bad ones differs")
	}
	if st := p.Stats(); st.InRunt != 2 || st.InOversize != 2 || st.InFrames != 1 {
		t.Errorf("stats %+v: want 2 runts, 2 oversized, 1 frame", st)
	}
}

// TestCaptureSeesLinkTraffic: frames entering the switch from a link are
// captured like any port's.
func TestCaptureSeesLinkTraffic(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	var pcap bytes.Buffer
	c, err := fabric.NewCapture(&pcap, fabric.CaptureConfig{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	sw.SetCapture(c)
	_, conn, a := rawStreamPeer(t, sw, "stream=127.0.0.1:0,server")
	f := fabrictest.Frame(a.mac, [6]byte{2, 0, 0, 0, 0, 9}, 0x88b5, []byte("captured"))
	conn.Write(appendStreamFrame(nil, f))
	a.next(t)
	sw.SetCapture(nil)
	c.Close()
	if c.Frames() != 1 || !bytes.Contains(pcap.Bytes(), f) {
		t.Errorf("capture has %d frames; the link's frame in it: %v", c.Frames(), bytes.Contains(pcap.Bytes(), f))
	}
}

// TestCloseWhileBlocked closes links whose goroutines are blocked in every
// place they can block: accept, read, dial backoff and a write to a peer
// that does not read.
func TestCloseWhileBlocked(t *testing.T) {
	leaktest.Check(t)
	sw := fabric.NewSwitch(quietLog())
	srv, c, a := rawStreamPeer(t, sw, "stream=127.0.0.1:0,server")
	_ = c // never reads: the link's writes fill the socket buffers and block
	big := a.frameTo([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, fabric.MaxFrame, 0)
	for range 200 {
		a.port.Send([][]byte{big, big, big, big, big})
	}
	eventually(t, "writes blocked", func() bool { return srv.Stats().OutFrames > 0 })
	cli := open(t, sw, "stream=127.0.0.1:1,client") // nothing listens: backoff
	ln := open(t, sw, "stream=127.0.0.1:0,server")
	done := make(chan struct{})
	go func() {
		srv.Close()
		cli.Close()
		ln.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Close hangs")
	}
}

func TestOpenErrors(t *testing.T) {
	sw := fabric.NewSwitch(quietLog())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, cfg := range []Config{
		{Kind: Stream, Name: "s", Addr: taken.Addr().String(), Server: true},
		{Kind: Dgram, Name: "d", Addr: "127.0.0.1:0", Remote: "no-such-host.invalid:1"},
		{Kind: Stream, Addr: "127.0.0.1:0"},
		{Kind: "vde", Name: "v"},
	} {
		if l, err := Open(sw, cfg, quietLog()); err == nil {
			l.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
	if n := len(sw.Ports()); n != 0 {
		t.Errorf("failed opens left %d ports on the switch", n)
	}
}

func newTestLimiter() *ratelog.Limiter { return ratelog.New() }
