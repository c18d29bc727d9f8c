package myri10ge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
)

// The stack rig: myri10ge NICs served as `myriemu serve` serves them
// (NIC, pci.Function, vfiouser.Server, one fabric.Switch for all), each
// reached over its own vfio-user socket by vfiousertest (the fake QEMU)
// and driven by myritest's fake Linux driver. No QEMU anywhere.

const (
	stackIOVA = 1 << 32 // guest RAM above 4 GiB: high address words are not 0
	stackRAM  = 32 << 20
)

// The NICs of a pair use buildFrame's addresses, so frames built with it
// go from node A to node B.
var (
	macA = srcMAC
	macB = dstMAC
	// macNobody is a unicast address no port has: the switch floods it
	// and every NIC's filter drops it.
	macNobody = net.HardwareAddr{0x02, 0x60, 0xdd, 0x00, 0x00, 0x77}
	macPeer   = net.HardwareAddr{0x02, 0x60, 0xdd, 0x00, 0x00, 0x99}
)

// stackCtx bounds a test: nothing here may hang.
func stackCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// logLine is one entry a logger produced.
type logLine struct {
	Level  logrus.Level
	Msg    string
	Fields logrus.Fields
}

// logSink records every entry of the loggers it makes.
type logSink struct {
	mu    sync.Mutex
	lines []logLine
}

func (s *logSink) Levels() []logrus.Level { return logrus.AllLevels }

func (s *logSink) Fire(e *logrus.Entry) error {
	f := make(logrus.Fields, len(e.Data))
	for k, v := range e.Data {
		f[k] = v
	}
	s.mu.Lock()
	s.lines = append(s.lines, logLine{e.Level, e.Message, f})
	s.mu.Unlock()
	return nil
}

// logger returns a logger at level whose entries go only to s.
func (s *logSink) logger(level logrus.Level) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(level)
	l.AddHook(s)
	return logrus.NewEntry(l)
}

// mark returns a position for since.
func (s *logSink) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lines)
}

// since returns the entries after mark m.
func (s *logSink) since(m int) []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logLine(nil), s.lines[m:]...)
}

// commands returns the names of the mailbox commands the NIC executed
// after mark m, from its per-command Debug entries.
func (s *logSink) commands(m int) []string {
	var out []string
	for _, l := range s.since(m) {
		if l.Msg == "command" && l.Fields["component"] == "myri10ge" {
			out = append(out, fmt.Sprint(l.Fields["cmd"]))
		}
	}
	return out
}

// find returns the entries after mark m with message msg at level.
func (s *logSink) find(m int, level logrus.Level, msg string) []logLine {
	var out []logLine
	for _, l := range s.since(m) {
		if l.Level == level && l.Msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// nicNode is one NIC as a guest sees it: the device, its function and
// server, and on the guest side the vfio-user client, guest RAM and the
// fake driver.
type nicNode struct {
	t    *testing.T
	name string
	mac  net.HardwareAddr
	nic  *myri10ge.NIC
	fn   *pci.Function
	srv  *vfiouser.Server
	port *fabric.SwitchPort
	c    *vfiousertest.Client
	bus  *myritest.VFIOUser
	mem  *myritest.Memory
	drv  *myritest.Driver
	logs *logSink
}

type nodeOpts struct {
	slices int              // NIC slices (default 1)
	drv    myritest.Options // the driver's module parameters
}

// newSwitch returns the wire every node of a test joins.
func newSwitch(t *testing.T) *fabric.Switch {
	sw := fabric.NewSwitch((&logSink{}).logger(logrus.WarnLevel))
	t.Cleanup(sw.Close)
	return sw
}

// newNode serves a NIC named name on sw and connects a guest to it. The
// cleanups close the client (its protocol violations fail the test), the
// server (a recovered panic fails the test) and the NIC.
func newNode(t *testing.T, sw *fabric.Switch, name string, mac net.HardwareAddr, o nodeOpts) *nicNode {
	t.Helper()
	if o.slices == 0 {
		o.slices = 1
	}
	sink := &logSink{}
	devLog := sink.logger(logrus.DebugLevel).WithField("device", name)
	port := sw.NewPort(name)
	nic, err := myri10ge.New(myri10ge.Config{Name: name, MAC: mac, Serial: 4242, Slices: o.slices, Port: port, Log: devLog})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := pci.NewFunction(nic, devLog)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "myri") // sun_path holds 107 bytes: no t.TempDir
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srvLog := sink.logger(logrus.InfoLevel).WithFields(logrus.Fields{"component": "vfiouser", "device": name})
	srv, err := vfiouser.Listen(vfiouser.Config{Path: filepath.Join(dir, "s"), Function: fn, Log: srvLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the server is closed and joined
		if st := srv.Stats(); st.Panics != 0 || st.ProtocolErrors != 0 {
			t.Errorf("%s: server stats %+v: a recovered panic or protocol error", name, st)
		}
		nic.Close()
	})
	vfiousertest.Serve(t, srv)

	c := vfiousertest.Negotiated(t, srv.Path())
	mem, err := myritest.NewVFIOUserMemory(t, c, stackRAM, stackIOVA)
	if err != nil {
		t.Fatal(err)
	}
	bus := myritest.NewVFIOUser(t, c)
	return &nicNode{t: t, name: name, mac: mac, nic: nic, fn: fn, srv: srv, port: port, c: c, bus: bus, mem: mem,
		drv: myritest.New(bus, mem, bus, o.drv), logs: sink}
}

// up probes and opens the node's driver.
func (n *nicNode) up(ctx context.Context) {
	n.t.Helper()
	if err := n.drv.Probe(ctx); err != nil {
		n.t.Fatalf("%s: Probe: %v\n%s", n.name, err, n.driverLog())
	}
	if err := n.drv.Open(ctx); err != nil {
		n.t.Fatalf("%s: Open: %v\n%s", n.name, err, n.driverLog())
	}
}

// driverLog is the fake driver's dmesg, for failure messages.
func (n *nicNode) driverLog() string {
	var b bytes.Buffer
	for _, l := range n.drv.Log() {
		fmt.Fprintf(&b, "\t%s\n", l)
	}
	return b.String()
}

// checkClean fails the test if the driver complained or the NIC counted
// a guest error or a failed DMA.
func (n *nicNode) checkClean() {
	n.t.Helper()
	if err := n.drv.CheckClean(); err != nil {
		n.t.Errorf("%s: %v", n.name, err)
	}
	if st := n.nic.Stats(); st.GuestErrors != 0 || st.DMAErrors != 0 {
		n.t.Errorf("%s: NIC counted %d guest errors and %d DMA errors", n.name, st.GuestErrors, st.DMAErrors)
	}
}

// newPair is two NICs on one switch, each with its own server, client,
// RAM and driver, probed and opened.
func newPair(t *testing.T, ctx context.Context, oa, ob nodeOpts) (a, b *nicNode) {
	t.Helper()
	sw := newSwitch(t)
	a = newNode(t, sw, "myri0", macA, oa)
	b = newNode(t, sw, "myri1", macB, ob)
	a.up(ctx)
	b.up(ctx)
	return a, b
}

// mtuPair is the usual stack rig: a context that ends after d and two
// nodes, their drivers at the same MTU, up on one switch.
func mtuPair(t *testing.T, d time.Duration, mtu int) (ctx context.Context, a, b *nicNode) {
	t.Helper()
	ctx = stackCtx(t, d)
	o := nodeOpts{drv: myritest.Options{MTU: mtu}}
	a, b = newPair(t, ctx, o, o)
	return ctx, a, b
}

// txPkt is a packet and the number of frames it becomes on the wire.
type txPkt struct {
	p      myritest.Packet
	frames int
}

// plain is a linear packet of one frame.
func plain(f []byte) txPkt { return txPkt{myritest.FramePacket(f), 1} }

// xferBatch is the most frames in flight per batch: far below both
// receive rings' fill threshold, so a well-behaved device never drops.
const xferBatch = 32

// xfer sends pkts from one node to the other on slice 0, in batches that
// fit the receiver's rings, and returns the frames the receiver's driver
// took, in order. Completions are collected on the way; a frame that
// turns up at the sender fails the test.
func xfer(t *testing.T, ctx context.Context, from, to *nicNode, pkts []txPkt) []myritest.Frame {
	t.Helper()
	var got []myritest.Frame
	flush := func(n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second) // a lost frame fails fast
		defer cancel()
		evs, err := from.drv.WaitTx(ctx, 0)
		if err != nil {
			t.Fatalf("%s: WaitTx: %v\n%s", from.name, err, from.driverLog())
		}
		for _, ev := range evs {
			if len(ev.Frames) != 0 {
				t.Errorf("%s: %d frames received while only sending", from.name, len(ev.Frames))
			}
		}
		fr, err := to.drv.Receive(ctx, 0, n)
		if err != nil {
			t.Fatalf("%s: Receive %d: %v (got %d)\n%s", to.name, n, err, len(fr), to.driverLog())
		}
		if len(fr) != n {
			t.Fatalf("%s: %d frames received, want %d", to.name, len(fr), n)
		}
		got = append(got, fr...)
	}
	inFlight := 0
	for _, p := range pkts {
		if inFlight+p.frames > xferBatch && inFlight > 0 {
			flush(inFlight)
			inFlight = 0
		}
		if err := from.drv.Xmit(0, p.p); err != nil {
			t.Fatalf("%s: Xmit: %v", from.name, err)
		}
		inFlight += p.frames
	}
	if inFlight > 0 {
		flush(inFlight)
	}
	return got
}

// checkFrames compares received frames with the frames sent, byte for
// byte, and each rx_done checksum with the sum over frame[14:].
func checkFrames(t *testing.T, what string, want [][]byte, got []myritest.Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames received, want %d", what, len(got), len(want))
	}
	bad := 0
	for i, f := range got {
		w := want[i]
		if len(w) < 60 {
			w = append(bytes.Clone(w), make([]byte, 60-len(w))...) // the driver pads
		}
		if !bytes.Equal(f.Data, w) {
			j := 0
			for j < min(len(w), len(f.Data)) && w[j] == f.Data[j] {
				j++
			}
			t.Errorf("%s: frame %d: %d bytes, want %d; first difference at byte %d", what, i, len(f.Data), len(w), j)
			bad++
		}
		if !csumEq(myritest.Checksum(f.Data[14:]), f.Csum) {
			t.Errorf("%s: frame %d: rx_done checksum %#04x, the sum over frame[14:] is %#04x", what, i, f.Csum, myritest.Checksum(f.Data[14:]))
			bad++
		}
		if bad > 5 {
			t.Fatalf("%s: giving up after %d bad frames", what, bad)
		}
	}
}

// csumEq compares ones'-complement sums (0 and 0xFFFF are both zero).
func csumEq(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xFFFF) || (a == 0xFFFF && b == 0)
}

// datas returns the frames' bytes.
func datas(fr []myritest.Frame) [][]byte {
	out := make([][]byte, len(fr))
	for i, f := range fr {
		out[i] = f.Data
	}
	return out
}

// sizedFrame is an IPv4/TCP frame (A to B) of exactly n >= 54 bytes.
func sizedFrame(t testing.TB, n int, seed byte) []byte {
	return buildFrame(t, frameSpec{Seq: uint32(seed)}, pattern(n-54, seed))
}

// reversed returns f with its MAC addresses swapped: B to A.
func reversed(f []byte) []byte {
	g := bytes.Clone(f)
	copy(g[0:6], f[6:12])
	copy(g[6:12], f[0:6])
	return g
}

// retarget returns f with destination dst and source src.
func retarget(f []byte, dst, src net.HardwareAddr) []byte {
	g := bytes.Clone(f)
	copy(g[0:6], dst)
	copy(g[6:12], src)
	return g
}

// offload returns the packet the stack hands the driver for frame f of
// spec with checksum offload (CHECKSUM_PARTIAL): the L4 checksum field
// holds the pseudo-header seed, the frame is cut in two fragments at cut.
// The device must produce f.
func offload(spec frameSpec, f []byte, cut int) myritest.Packet {
	g := bytes.Clone(f)
	l4, pos := spec.l4(), spec.l4()+spec.csumOffset()
	proto := byte(6)
	if spec.UDP {
		proto = 17
	}
	src, dst := src4, dst4
	if spec.IPv6 {
		src, dst = src6, dst6
	}
	binary.BigEndian.PutUint16(g[pos:], sum16(pseudoHeader(spec.IPv6, src, dst, proto, len(g)-l4)))
	return myritest.Packet{Frags: [][]byte{g[:cut], g[cut:]}, Offsets: []int{4000, 2040},
		CsumStart: l4, CsumOffset: spec.csumOffset()}
}

// superFrame is a TSO packet of spec with payload pay (A to B): headers
// in two fragments split at hdrCut, the payload in fragments of fragLen
// at odd page offsets; the IPv4 header checksum and TCP checksum hold
// junk the device must not trust.
func superFrame(t testing.TB, spec frameSpec, pay []byte, mss, hdrCut, fragLen int) txPkt {
	super := buildFrame(t, spec, pay)
	if !spec.IPv6 {
		binary.BigEndian.PutUint16(super[spec.l3()+10:], 0x1234)
	}
	binary.BigEndian.PutUint16(super[spec.l4()+16:], 0xBEEF)
	h := spec.hdrLen()
	frags := [][]byte{super[:hdrCut], super[hdrCut:h]}
	offs := []int{100, 4090}
	for i := h; i < len(super); i += fragLen {
		frags = append(frags, super[i:min(i+fragLen, len(super))])
		offs = append(offs, (i*7)%4096)
	}
	return txPkt{myritest.Packet{Frags: frags, Offsets: offs, CsumStart: spec.l4(), CsumOffset: 16, MSS: mss, HdrLen: h},
		(len(pay) + mss - 1) / mss}
}

// flowFrame is an IPv4 TCP (or UDP) frame from src to dst with the given
// ports and payload, checksums correct.
func flowFrame(t testing.TB, src, dst net.HardwareAddr, udp bool, sport, dport uint16, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment, SrcIP: src4, DstIP: dst4}
	var l4 gopacket.SerializableLayer
	if udp {
		ip.Protocol = layers.IPProtocolUDP
		u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		u.SetNetworkLayerForChecksum(ip)
		l4 = u
	} else {
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1, ACK: true, Window: 501}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}, ip, l4, gopacket.Payload(payload))
	if err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

// wirePeer is a plain host on the switch: it sends raw frames and records
// what reaches it, never blocking the switch's delivery.
type wirePeer struct {
	port *fabric.SwitchPort

	mu     sync.Mutex
	frames [][]byte
	notify chan struct{}
}

func newWirePeer(sw *fabric.Switch, name string) *wirePeer {
	w := &wirePeer{port: sw.NewPort(name), notify: make(chan struct{}, 1)}
	w.port.Attach(w)
	return w
}

func (w *wirePeer) Deliver(frames [][]byte) {
	w.mu.Lock()
	for _, f := range frames {
		w.frames = append(w.frames, bytes.Clone(f))
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *wirePeer) LinkChanged(bool) {}

// send puts frames on the wire.
func (w *wirePeer) send(frames ...[]byte) { w.port.Send(frames) }

// wait waits until a frame equal to want has arrived, and forgets it.
func (w *wirePeer) wait(ctx context.Context, want []byte) error {
	for {
		w.mu.Lock()
		for i, f := range w.frames {
			if bytes.Equal(f, want) {
				w.frames = append(w.frames[:i], w.frames[i+1:]...)
				w.mu.Unlock()
				return nil
			}
		}
		n := len(w.frames)
		w.mu.Unlock()
		select {
		case <-w.notify:
		case <-ctx.Done():
			return fmt.Errorf("the %d-byte frame never reached the peer (%d others did): %w", len(want), n, ctx.Err())
		}
	}
}

// be32At atomically loads the big-endian word the device may be writing
// at guest address addr.
func be32At(mem *myritest.Memory, addr uint64) uint32 {
	b, err := mem.Bytes(addr, 4)
	if err != nil || addr&3 != 0 {
		panic(fmt.Sprintf("word at %#x: %v", addr, err))
	}
	v := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[0])))
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], v)
	return binary.BigEndian.Uint32(w[:])
}

// statsBlock returns the guest address of slice's interrupt block, as the
// driver gave it to SET_STATS_DMA_V2 (from the NIC's command log).
func (n *nicNode) statsBlock(slice int) uint64 {
	n.t.Helper()
	var addr uint64
	found := false
	for _, l := range n.logs.since(0) {
		if l.Msg != "command" || l.Fields["cmd"] != abi.CmdSetStatsDMAV2.String() || l.Fields["status"] != "OK" {
			continue
		}
		d0, _ := l.Fields["data0"].(uint32)
		d1, _ := l.Fields["data1"].(uint32)
		d2, _ := l.Fields["data2"].(uint32)
		if int(d2>>16) == slice {
			addr, found = uint64(d1)<<32|uint64(d0), true // the last one wins: the latest open
		}
	}
	if !found {
		n.t.Fatalf("%s: no SET_STATS_DMA_V2 for slice %d in the NIC's log", n.name, slice)
	}
	return addr
}

// Interrupt block fields (mcp_irq_data, §6.1).
const (
	blkDroppedUnicast   = 0x08
	blkDroppedMulticast = 0x14
	blkSendDone         = 0x18
	blkLinkUp           = 0x1C
	blkDroppedOverrun   = 0x2C
	blkDroppedNoSmall   = 0x30
	blkDroppedNoBig     = 0x34
	blkFlags            = 0x3C
)
