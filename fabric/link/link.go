// Package link joins a port of the emulated switch to a wire outside the
// process: QEMU's -netdev stream and -netdev dgram formats and Linux TAP
// interfaces.
package link

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
)

// DefaultMTU is the far side's MTU when none is given: jumbo frames, as the
// Myri-10G's own default.
const DefaultMTU = 9000

// overhead is what an Ethernet frame carries beyond its MTU here: the
// header and one 802.1Q tag (no FCS on a virtual wire).
const overhead = 14 + 4

// Kind is the kind of far side a link has.
type Kind string

// The kinds of link.
const (
	Stream Kind = "stream" // QEMU -netdev stream: TCP or UNIX stream, 4-byte big-endian length then the frame
	Dgram  Kind = "dgram"  // QEMU -netdev dgram: one frame per UDP or UNIX datagram
	TAP    Kind = "tap"    // a Linux TAP interface
	// VhostUser serves QEMU's -netdev vhost-user: a virtio-net guest.
	VhostUser Kind = "vhost-user"
)

// Config describes one link; ParseSpec makes one from a --port value.
type Config struct {
	Kind Kind
	// Name names the switch port (logs, statistics, control commands).
	Name string
	// Addr is the stream's address, the dgram's local address or the TAP
	// interface's name. Stream and dgram addresses are host:port (TCP or
	// UDP) or unix:PATH.
	Addr string
	// Remote is the dgram's remote address.
	Remote string
	// Server makes a stream listen on Addr; otherwise it connects there,
	// and reconnects with backoff whenever the connection ends.
	Server bool
	// MTU is the far side's MTU: a frame from the switch larger than
	// MTU plus an Ethernet header and a VLAN tag is dropped and counted.
	// 0 means DefaultMTU.
	MTU int
	// Perm is the mode and group of the UNIX socket files the link
	// creates (stream servers, dgram and vhost-user sockets); the zero
	// value is 0600 and the process's group, as serve's other sockets.
	Perm unixsock.Perm
}

// Spec returns c as a --port value, the inverse of ParseSpec.
func (c Config) Spec() string {
	var b strings.Builder
	b.WriteString(string(c.Kind) + "=" + c.Addr)
	switch c.Kind {
	case Stream:
		if c.Server {
			b.WriteString(",server")
		} else {
			b.WriteString(",client")
		}
	case Dgram:
		b.WriteString("," + c.Remote)
	}
	if c.MTU != 0 {
		b.WriteString(",mtu=" + strconv.Itoa(c.MTU))
	}
	if c.Name != "" {
		b.WriteString(",name=" + c.Name)
	}
	return b.String()
}

func (c Config) mtu() int {
	if c.MTU == 0 {
		return DefaultMTU
	}
	return c.MTU
}

// ParseSpec parses a --port value:
//
//	stream=ADDR,server|client[,mtu=N][,name=NAME]
//	dgram=LOCAL,REMOTE[,mtu=N][,name=NAME]
//	tap=IFNAME[,mtu=N][,name=NAME]
//	vhost-user=PATH[,mtu=N][,name=NAME]
//
// where ADDR, LOCAL and REMOTE are host:port or unix:PATH.
func ParseSpec(spec string) (Config, error) {
	kind, rest, ok := strings.Cut(spec, "=")
	if !ok || rest == "" {
		return Config{}, fmt.Errorf("port %q: want KIND=ADDR[,...] (kinds: stream, dgram, tap, vhost-user)", spec)
	}
	parts := strings.Split(rest, ",")
	c := Config{Kind: Kind(kind), Addr: parts[0]}
	var pos []string
	for _, p := range parts[1:] {
		k, v, isKV := strings.Cut(p, "=")
		if !isKV {
			pos = append(pos, p)
			continue
		}
		switch k {
		case "mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > fabric.MaxFrame-overhead {
				return c, fmt.Errorf("port %q: mtu=%s: want 68..%d", spec, v, fabric.MaxFrame-overhead)
			}
			c.MTU = n
		case "name":
			if v == "" || strings.ContainsAny(v, " \t\n=\"") {
				return c, fmt.Errorf("port %q: name %q is empty or has spaces, quotes or '='", spec, v)
			}
			c.Name = v
		default:
			return c, fmt.Errorf("port %q: unknown key %q (known: mtu, name)", spec, k)
		}
	}
	switch c.Kind {
	case Stream:
		if len(pos) != 1 || (pos[0] != "server" && pos[0] != "client") {
			return c, fmt.Errorf("port %q: want stream=ADDR,server or stream=ADDR,client", spec)
		}
		c.Server = pos[0] == "server"
		if err := checkAddr(c.Addr); err != nil {
			return c, fmt.Errorf("port %q: %w", spec, err)
		}
	case Dgram:
		if len(pos) != 1 {
			return c, fmt.Errorf("port %q: want dgram=LOCAL,REMOTE", spec)
		}
		c.Remote = pos[0]
		for _, a := range []string{c.Addr, c.Remote} {
			if err := checkAddr(a); err != nil {
				return c, fmt.Errorf("port %q: %w", spec, err)
			}
		}
		if isUnix(c.Addr) != isUnix(c.Remote) {
			return c, fmt.Errorf("port %q: local and remote must both be unix: or both host:port", spec)
		}
	case VhostUser:
		if len(pos) != 0 || c.Addr == "" {
			return c, fmt.Errorf("port %q: want vhost-user=PATH", spec)
		}
	case TAP:
		if len(pos) != 0 {
			return c, fmt.Errorf("port %q: want tap=IFNAME", spec)
		}
		if len(c.Addr) > 15 || strings.ContainsAny(c.Addr, "/ :\t\n") {
			return c, fmt.Errorf("port %q: %q is not an interface name (at most 15 characters, no '/', ':' or spaces)", spec, c.Addr)
		}
	default:
		return c, fmt.Errorf("port %q: unknown kind %q (known: stream, dgram, tap, vhost-user)", spec, kind)
	}
	return c, nil
}

func isUnix(addr string) bool { return strings.HasPrefix(addr, "unix:") }

func checkAddr(addr string) error {
	if isUnix(addr) {
		if len(addr) == len("unix:") {
			return fmt.Errorf("address %q has no path", addr)
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("address %q: want host:port or unix:PATH: %w", addr, err)
	}
	return nil
}

// Stats are a link's counters. "In" is what came from the far side into
// the switch, "Out" what the switch sent to the far side.
type Stats struct {
	// Carrier: the far side is there (a stream is connected; a dgram or
	// TAP link is always up once started).
	Carrier bool
	// Connects and Disconnects count carrier changes; Connects-1 is the
	// number of reconnections.
	Connects, Disconnects uint64

	InFrames, InBytes uint64
	// InRunt counts frames shorter than an Ethernet header (a runt length
	// prefix or datagram); InOversize frames longer than the wire's
	// largest frame. Both are dropped.
	InRunt, InOversize uint64
	// InDesync counts stream connections dropped because a length prefix
	// was too large to skip: the stream cannot be resynchronised.
	InDesync uint64

	OutFrames, OutBytes uint64
	// OutTooBig counts frames dropped because they exceed the far side's
	// MTU; OutNoCarrier frames dropped while the far side was away (a
	// write that found it gone included); OutErrors frames another write
	// failure lost.
	OutTooBig, OutNoCarrier, OutErrors uint64
}

// fields renders the counters, and the switch port's, as log fields
// (snake_case, as the NICs log theirs).
func (s Stats) fields(sw fabric.PortStats) logrus.Fields {
	return logrus.Fields{
		"carrier": s.Carrier, "connects": s.Connects, "disconnects": s.Disconnects,
		"in_frames": s.InFrames, "in_bytes": s.InBytes, "in_runt": s.InRunt, "in_oversize": s.InOversize, "in_desync": s.InDesync,
		"out_frames": s.OutFrames, "out_bytes": s.OutBytes, "out_too_big": s.OutTooBig, "out_no_carrier": s.OutNoCarrier, "out_errors": s.OutErrors,
		"switch_rx_dropped": sw.RxDropped, "switch_tx_dropped": sw.TxDropped, "switch_tx_errors": sw.TxErrors,
	}
}

type counters struct {
	connects, disconnects                 atomic.Uint64
	inFrames, inBytes, inRunt, inOversize atomic.Uint64
	inDesync                              atomic.Uint64
	outFrames, outBytes                   atomic.Uint64
	outTooBig, outNoCarrier, outErrors    atomic.Uint64
}

// farSide is where frames from the switch go: one connection, socket or
// TAP file. writeFrames runs on the switch port's delivery goroutine only.
type farSide interface {
	writeFrames(frames [][]byte) error
}

// transport is one kind's machinery: it runs the goroutines that bring
// frames in and tracks the far side, and closes what it opened.
type transport interface {
	// start launches the transport's goroutines on l.wg.
	start(l *Link)
	// shutdown unblocks every goroutine of the transport (closing its
	// sockets); Close then joins them.
	shutdown()
	// addr is the bound address, for logs and tests.
	addr() string
}

// Link is one switch port whose far side is outside the process.
type Link struct {
	cfg    Config
	port   *fabric.SwitchPort
	sw     *fabric.Switch
	log    *logrus.Entry
	warn   *ratelog.Limiter
	maxOut int // largest frame the far side takes
	c      counters
	t      transport

	farMu      sync.Mutex                // orders far-side changes with their carrier changes
	far        atomic.Pointer[farHolder] // nil while the far side is away
	deliverBuf [][]byte                  // Deliver's scratch; it runs on one goroutine
	carrier    atomic.Bool

	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
	stop      chan struct{} // closed by Close
}

// farHolder boxes the interface for atomic.Pointer.
type farHolder struct{ f farSide }

// Open binds what cfg names (a listening or unconnected stream socket, a
// dgram socket, a TAP interface) and adds a port for it to sw, so that a
// wrong address fails here. Nothing runs until Start.
func Open(sw *fabric.Switch, cfg Config, log *logrus.Entry) (*Link, error) {
	if cfg.Name == "" {
		return nil, errors.New("link: no port name")
	}
	l := &Link{
		cfg:    cfg,
		sw:     sw,
		log:    log.WithFields(logrus.Fields{"component": "fabric", "port": cfg.Name, "kind": string(cfg.Kind)}),
		warn:   ratelog.New(),
		maxOut: cfg.mtu() + overhead,
		stop:   make(chan struct{}),
	}
	var err error
	switch cfg.Kind {
	case Stream:
		l.t, err = openStream(l)
	case Dgram:
		l.t, err = openDgram(l)
	case TAP:
		l.t, err = openTAP(l)
	case VhostUser:
		l.t, err = openVhostUser(l)
	default:
		err = fmt.Errorf("unknown kind %q", cfg.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("link: port %s (%s): %w", cfg.Name, cfg.Spec(), err)
	}
	l.port = sw.NewPort(cfg.Name)
	l.port.SetLink(false)
	return l, nil
}

// Config returns the link's configuration.
func (l *Link) Config() Config { return l.cfg }

// Port returns the link's switch port (its counters and link state).
func (l *Link) Port() *fabric.SwitchPort { return l.port }

// Addr is the address the link is bound to (a listening stream's actual
// port when it asked for port 0; the TAP interface's name).
func (l *Link) Addr() string { return l.t.addr() }

// Start attaches the link to its switch port and starts its goroutines.
// It may be called once; Close stops and joins them.
func (l *Link) Start() {
	l.startOnce.Do(func() {
		l.port.Attach(l)
		l.t.start(l)
		l.log.WithFields(logrus.Fields{"addr": l.t.addr(), "spec": l.cfg.Spec()}).Info("port started")
	})
}

// Close stops the link, waits for its goroutines, detaches its switch port
// and closes its sockets or TAP file. It is idempotent.
func (l *Link) Close() {
	l.closeOnce.Do(func() {
		close(l.stop)
		l.t.shutdown() // unblocks reads, accepts and a stuck write in Deliver
		l.wg.Wait()
		l.port.Detach()
		l.setFar(nil)
		f := l.Stats().fields(l.port.Stats())
		if vs, ok := l.VhostUserStats(); ok {
			f["sessions"] = vs.Connects
			f["rx_no_buffer"], f["rx_too_small"], f["tx_oversize"] = vs.RxNoBuffer, vs.RxTooSmall, vs.TxOversize
			f["bad_messages"], f["ring_errors"] = vs.BadMessages, vs.RingErrors
		}
		l.log.WithFields(f).Info("port closed")
	})
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	c := &l.c
	return Stats{
		Carrier:  l.carrier.Load(),
		Connects: c.connects.Load(), Disconnects: c.disconnects.Load(),
		InFrames: c.inFrames.Load(), InBytes: c.inBytes.Load(),
		InRunt: c.inRunt.Load(), InOversize: c.inOversize.Load(), InDesync: c.inDesync.Load(),
		OutFrames: c.outFrames.Load(), OutBytes: c.outBytes.Load(),
		OutTooBig: c.outTooBig.Load(), OutNoCarrier: c.outNoCarrier.Load(), OutErrors: c.outErrors.Load(),
	}
}

// setFar makes f the far side (nil: gone) and updates the carrier, which
// the switch port follows: while it is down the switch drops (and counts)
// frames for this port instead of queueing them.
func (l *Link) setFar(f farSide) {
	l.farMu.Lock()
	defer l.farMu.Unlock()
	if f == nil {
		l.far.Store(nil)
		l.carrierLocked(false)
		return
	}
	l.far.Store(&farHolder{f})
	l.carrierLocked(true)
}

// clearFar drops f as the far side if it still is, and reports whether it
// was. Under farMu with setFar: an old connection's reader clearing
// itself must not take the carrier down after a new one came up.
func (l *Link) clearFar(f farSide) bool {
	l.farMu.Lock()
	defer l.farMu.Unlock()
	h := l.far.Load()
	if h == nil || h.f != f {
		return false
	}
	l.far.Store(nil)
	l.carrierLocked(false)
	return true
}

// carrierLocked sets the carrier and the switch port's link, counting a
// change. l.farMu is held.
func (l *Link) carrierLocked(up bool) {
	if l.carrier.Swap(up) == up {
		return
	}
	if up {
		l.c.connects.Add(1)
	} else {
		l.c.disconnects.Add(1)
	}
	l.port.SetLink(up)
}

// in hands frames that came from the far side to the switch. The switch
// copies them.
func (l *Link) in(frames [][]byte) {
	var bytes uint64
	for _, f := range frames {
		bytes += uint64(len(f))
	}
	l.c.inFrames.Add(uint64(len(frames)))
	l.c.inBytes.Add(bytes)
	l.port.Send(frames)
}

// Deliver implements fabric.Receiver: frames from the switch go to the far
// side, except those larger than its MTU, which are dropped and counted
// (never truncated).
func (l *Link) Deliver(frames [][]byte) {
	ok := l.deliverBuf[:0]
	defer func() { clear(ok); l.deliverBuf = ok[:0] }()
	for _, f := range frames {
		if len(f) > l.maxOut {
			l.c.outTooBig.Add(1)
			l.warn.Warn(l.log.WithFields(logrus.Fields{"len": len(f), "max": l.maxOut}), "too big", "frame larger than the far side's MTU dropped")
			continue
		}
		ok = append(ok, f)
	}
	if len(ok) == 0 {
		return
	}
	h := l.far.Load()
	if h == nil {
		l.c.outNoCarrier.Add(uint64(len(ok)))
		return
	}
	if err := h.f.writeFrames(ok); err != nil {
		// The far side went away (a stream peer that stopped, a
		// datagram socket nobody has bound yet): the frames are lost
		// as on an unplugged cable, counted, and not a fault of anyone
		// to warn about.
		if farGone(err) || l.closing() {
			l.c.outNoCarrier.Add(uint64(len(ok)))
			l.log.WithError(err).Debug("far side away; frames dropped")
			return
		}
		l.c.outErrors.Add(uint64(len(ok)))
		l.warn.Warn(l.log.WithError(err), "write", "sending to the far side failed")
		return
	}
	var bytes uint64
	for _, f := range ok {
		bytes += uint64(len(f))
	}
	l.c.outFrames.Add(uint64(len(ok)))
	l.c.outBytes.Add(bytes)
}

// farGone reports whether a write failed because the far side is not
// there (rather than because of a fault worth a warning).
func farGone(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTCONN) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EIO)
}

// LinkChanged implements fabric.Receiver. The far side has its own
// carrier; the switch port's state is ours to set, so nothing to do.
func (l *Link) LinkChanged(bool) {}

// badInput counts and logs (rate-limited) one malformed frame from the far
// side.
func (l *Link) badInput(counter *atomic.Uint64, key, msg string, n int) {
	counter.Add(1)
	l.warn.Warn(l.log.WithField("len", n), key, msg)
}

// sleep waits d or until the link closes, and reports whether it is still
// open.
func (l *Link) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.stop:
		return false
	case <-t.C:
		return true
	}
}

func (l *Link) closing() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}
