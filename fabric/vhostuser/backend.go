package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Features offered (virtio 1.x feature bits; vhost-user's own bit 30).
const (
	FeatureVersion1         = 1 << 32 // VIRTIO_F_VERSION_1
	FeatureProtocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES

	// ProtocolReplyAck: the front end may ask for an ack of any request.
	ProtocolReplyAck = 1 << 3

	offeredFeatures = FeatureVersion1 | FeatureProtocolFeatures
	offeredProtocol = ProtocolReplyAck
)

// Queues: one pair, receive (the device writes) and transmit (the guest
// writes).
const (
	rxQueue = 0
	txQueue = 1
	nQueues = 2
)

// maxFrame is the largest frame taken from or given to the guest.
const maxFrame = 9000 + 14 + 4

// Config configures a Backend.
type Config struct {
	// Path is the UNIX socket the front end (QEMU's -chardev socket)
	// connects to; Perm its file's mode and group (zero: 0600).
	Path string
	Perm unixsock.Perm
	// Transmit takes the frames the guest sent, on the backend's kick
	// goroutine; the slices are valid only during the call.
	Transmit func(frames [][]byte)
	// Carrier reports that a front end's rings started (true) or stopped.
	Carrier func(up bool)
	Log     *logrus.Entry
}

// Stats are the backend's counters.
type Stats struct {
	Connects                         uint64
	TxFrames, TxOversize             uint64 // from the guest
	RxFrames, RxNoBuffer, RxTooSmall uint64 // to the guest
	BadMessages, RingErrors          uint64
}

type counters struct {
	connects                         atomic.Uint64
	txFrames, txOversize             atomic.Uint64
	rxFrames, rxNoBuffer, rxTooSmall atomic.Uint64
	badMessages, ringErrors          atomic.Uint64
}

// Backend serves one front end at a time on a UNIX socket; when it goes
// away the backend forgets its state and waits for the next (QEMU
// reconnects with the chardev's reconnect-ms).
type Backend struct {
	cfg  Config
	ln   *net.UnixListener
	log  *logrus.Entry
	warn *ratelog.Limiter
	c    counters

	wg   sync.WaitGroup // kick goroutines
	stop chan struct{}

	connMu sync.Mutex
	conn   *net.UnixConn
	closed bool

	mu       sync.Mutex // guards everything below: the session state
	features uint64
	protocol uint64
	mem      *memory
	rings    [nQueues]vring
	broken   bool // the guest corrupted a ring: no more data path until reset
	up       bool
	txBufs   [][]byte // frame buffers of drainTxLocked, reused
	txFrames [][]byte
}

// Listen listens on cfg.Path (removing a stale socket file first).
func Listen(cfg Config) (*Backend, error) {
	if fi, err := os.Lstat(cfg.Path); err == nil && fi.Mode().Type() == os.ModeSocket {
		if c, err := net.DialTimeout("unix", cfg.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("vhostuser: %s: another backend listens there", cfg.Path)
		}
		os.Remove(cfg.Path)
	}
	ln, err := unixsock.ListenUnix(cfg.Path, cfg.Perm)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: listen: %w", err)
	}
	return &Backend{cfg: cfg, ln: ln, log: cfg.Log, warn: ratelog.New(), stop: make(chan struct{})}, nil
}

// Serve accepts front ends one after the other until Close.
func (b *Backend) Serve() {
	b.log.Debug("vhost-user serving")
	defer b.log.Debug("vhost-user stopped")
	defer b.wait()
	for {
		c, err := b.ln.AcceptUnix()
		if err != nil {
			select {
			case <-b.stop:
				return
			default:
			}
			b.warn.Warn(b.log.WithError(err), "accept", "vhost-user accept failed")
			select {
			case <-b.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		b.connMu.Lock()
		if b.closed {
			b.connMu.Unlock()
			c.Close()
			return
		}
		b.conn = c
		b.connMu.Unlock()
		b.c.connects.Add(1)
		b.log.Info("vhost-user front end connected")
		err = b.serveConn(c)
		b.log.WithError(err).Info("vhost-user front end gone")
		b.reset()
		b.connMu.Lock()
		b.conn = nil
		b.connMu.Unlock()
		c.Close()
	}
}

// Close stops serving: Serve returns once every goroutine it started has
// ended.
func (b *Backend) Close() {
	b.connMu.Lock()
	if b.closed {
		b.connMu.Unlock()
		return
	}
	b.closed = true
	close(b.stop)
	b.ln.Close()
	if b.conn != nil {
		b.conn.Close()
	}
	b.connMu.Unlock()
}

// wait forgets the session and joins the kick goroutines.
func (b *Backend) wait() {
	b.reset()
	b.wg.Wait()
}

// Stats returns the counters.
func (b *Backend) Stats() Stats {
	c := &b.c
	return Stats{
		Connects: c.connects.Load(), TxFrames: c.txFrames.Load(), TxOversize: c.txOversize.Load(),
		RxFrames: c.rxFrames.Load(), RxNoBuffer: c.rxNoBuffer.Load(), RxTooSmall: c.rxTooSmall.Load(),
		BadMessages: c.badMessages.Load(), RingErrors: c.ringErrors.Load(),
	}
}

// reset forgets the session: rings stopped (their kick goroutines end),
// fds closed, memory unmapped.
func (b *Backend) reset() {
	b.mu.Lock()
	for i := range b.rings {
		b.stopRing(i)
		if b.rings[i].call != nil {
			b.rings[i].call.Close()
		}
		b.rings[i] = vring{}
	}
	b.mem.unmap()
	b.mem = nil
	b.features, b.protocol, b.broken = 0, 0, false
	b.setCarrier()
	b.mu.Unlock()
}

// stopRing closes ring i's kick fd, which ends its kick goroutine.
func (b *Backend) stopRing(i int) {
	if k := b.rings[i].kick; k != nil {
		k.Close()
		b.rings[i].kick = nil
	}
}

// setCarrier reports the carrier when it changes: up while both rings run.
func (b *Backend) setCarrier() {
	up := !b.broken && b.rings[rxQueue].ready() && b.rings[txQueue].ready()
	if up != b.up {
		b.up = up
		if b.cfg.Carrier != nil {
			b.cfg.Carrier(up)
		}
	}
}

// readMsg reads one message with its fds.
func readMsg(c *net.UnixConn) (*Message, error) {
	hdr := make([]byte, HeaderSize)
	oob := make([]byte, unix.CmsgSpace(4*maxRegions))
	n, oobn, _, _, err := c.ReadMsgUnix(hdr, oob)
	var fds []int
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for i := range msgs {
				if r, perr := unix.ParseUnixRights(&msgs[i]); perr == nil {
					fds = append(fds, r...)
				}
			}
		}
	}
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	if n == 0 {
		closeAll()
		return nil, io.EOF
	}
	if n < HeaderSize {
		if _, err := io.ReadFull(c, hdr[n:]); err != nil {
			closeAll()
			return nil, err
		}
	}
	h, err := parseHeader(hdr)
	if err != nil {
		closeAll()
		return nil, err
	}
	m := &Message{Header: h, FDs: fds, Payload: make([]byte, h.Size)}
	if _, err := io.ReadFull(c, m.Payload); err != nil {
		closeAll()
		return nil, err
	}
	return m, nil
}

func reply(c *net.UnixConn, req Request, payload []byte) error {
	b := appendHeader(nil, Header{Request: req, Flags: flagVersion | flagReply, Size: uint32(len(payload))})
	_, err := c.Write(append(b, payload...))
	return err
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// serveConn handles one front end's messages strictly in order until it
// goes or sends something that cannot be decoded.
func (b *Backend) serveConn(c *net.UnixConn) error {
	for {
		m, err := readMsg(c)
		if err != nil {
			if errors.Is(err, ErrBadVersion) || errors.Is(err, ErrTooBig) {
				b.c.badMessages.Add(1)
				b.warn.Warn(b.log.WithError(err), "decode", "vhost-user message undecodable; dropping the front end")
			}
			return err
		}
		out, herr := b.handle(m)
		for _, fd := range m.FDs { // handlers dup what they keep
			unix.Close(fd)
		}
		if herr != nil {
			b.c.badMessages.Add(1)
			b.warn.Warn(b.log.WithError(herr).WithField("request", m.Request.String()), "request", "vhost-user request refused")
		}
		switch {
		case out != nil:
			if err := reply(c, m.Request, out); err != nil {
				return err
			}
		case m.Flags&flagNeedReply != 0 && b.protocol&ProtocolReplyAck != 0:
			status := uint64(0)
			if herr != nil {
				status = 1
			}
			if err := reply(c, m.Request, u64(status)); err != nil {
				return err
			}
		}
	}
}

// dupFile keeps a copy of fd as a non-blocking *os.File (reads then wait
// in the runtime's poller, and Close ends them).
func dupFile(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, err
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// handle runs one request and returns the payload of its reply, if the
// request has one. Errors are the front end's mistakes.
func (b *Backend) handle(m *Message) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch m.Request {
	case ReqGetFeatures:
		return u64(offeredFeatures), nil
	case ReqGetProtocolFeatures:
		return u64(offeredProtocol), nil
	case ReqSetFeatures:
		v, err := m.U64()
		if err != nil {
			return nil, err
		}
		if v&^offeredFeatures != 0 {
			return nil, fmt.Errorf("features %#x beyond those offered %#x", v, uint64(offeredFeatures))
		}
		b.features = v
		return nil, nil
	case ReqSetProtocolFeatures:
		v, err := m.U64()
		if err != nil {
			return nil, err
		}
		if v&^offeredProtocol != 0 {
			return nil, fmt.Errorf("protocol features %#x beyond those offered %#x", v, uint64(offeredProtocol))
		}
		b.protocol = v
		return nil, nil
	case ReqSetOwner, ReqResetOwner:
		return nil, nil
	case ReqSetMemTable:
		rs, err := m.MemTable()
		if err != nil {
			return nil, err
		}
		mem, err := mapMemory(rs, m.FDs)
		if err != nil {
			return nil, err
		}
		b.mem.unmap()
		b.mem = mem
		for i := range b.rings {
			if err := b.rings[i].mapRing(mem); err != nil {
				b.stopRing(i)
				b.setCarrier()
				return nil, err
			}
		}
		return nil, nil
	case ReqSetVringNum:
		i, num, err := m.State()
		if err != nil {
			return nil, err
		}
		if i >= nQueues || num == 0 || num > maxQueueSize || num&(num-1) != 0 {
			return nil, fmt.Errorf("ring %d size %d (want ring < %d, size a power of 2 up to %d)", i, num, nQueues, maxQueueSize)
		}
		b.rings[i].num = num
		return nil, b.rings[i].mapRing(b.mem)
	case ReqSetVringAddr:
		a, err := m.Addr()
		if err != nil {
			return nil, err
		}
		if a.Index >= nQueues {
			return nil, fmt.Errorf("ring %d does not exist", a.Index)
		}
		b.rings[a.Index].addr = a
		return nil, b.rings[a.Index].mapRing(b.mem)
	case ReqSetVringBase:
		i, base, err := m.State()
		if err != nil {
			return nil, err
		}
		if i >= nQueues || base > 0xffff {
			return nil, fmt.Errorf("ring %d base %d", i, base)
		}
		b.rings[i].lastAvail, b.rings[i].usedIdx = uint16(base), uint16(base)
		return nil, nil
	case ReqGetVringBase:
		i, _, err := m.State()
		if err != nil {
			return nil, err
		}
		if i >= nQueues {
			return nil, fmt.Errorf("ring %d does not exist", i)
		}
		b.stopRing(int(i))
		b.setCarrier()
		out := binary.LittleEndian.AppendUint32(nil, i)
		return binary.LittleEndian.AppendUint32(out, uint32(b.rings[i].lastAvail)), nil
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		v, err := m.U64()
		if err != nil {
			return nil, err
		}
		i := int(v & 0xff)
		noFD := v&0x100 != 0
		if i >= nQueues || v&^0x1ff != 0 {
			return nil, fmt.Errorf("%s for ring %d (value %#x)", m.Request, i, v)
		}
		if noFD != (len(m.FDs) == 0) || len(m.FDs) > 1 {
			return nil, fmt.Errorf("%s with %d fds and the no-fd flag %v", m.Request, len(m.FDs), noFD)
		}
		if m.Request == ReqSetVringErr || noFD {
			if m.Request == ReqSetVringKick {
				return nil, fmt.Errorf("polling mode (a kick without an fd) is not supported")
			}
			if m.Request == ReqSetVringCall && b.rings[i].call != nil {
				b.rings[i].call.Close()
				b.rings[i].call = nil
			}
			return nil, nil
		}
		f, err := dupFile(m.FDs[0], fmt.Sprintf("vring%d-%s", i, m.Request))
		if err != nil {
			return nil, err
		}
		r := &b.rings[i]
		if m.Request == ReqSetVringCall {
			if r.call != nil {
				r.call.Close()
			}
			r.call = f
			return nil, nil
		}
		b.stopRing(i)
		r.kick = f
		if b.features&FeatureProtocolFeatures == 0 {
			r.enabled = true // without protocol features a kick starts the ring
		}
		if i == txQueue {
			b.wg.Go(func() { b.runKick(f) })
		}
		b.setCarrier()
		return nil, nil
	case ReqSetVringEnable:
		i, on, err := m.State()
		if err != nil {
			return nil, err
		}
		if i >= nQueues {
			return nil, fmt.Errorf("ring %d does not exist", i)
		}
		b.rings[i].enabled = on != 0
		b.setCarrier()
		if i == txQueue && on != 0 {
			b.drainTxLocked() // frames queued before the ring was enabled
		}
		return nil, nil
	case ReqSendRARP:
		return nil, nil
	}
	return nil, fmt.Errorf("request %s not supported", m.Request)
}

// runKick processes the transmit ring on each kick until its fd closes.
func (b *Backend) runKick(kick *os.File) {
	var buf [8]byte
	for {
		if _, err := kick.Read(buf[:]); err != nil {
			return
		}
		b.mu.Lock()
		b.drainTxLocked()
		b.mu.Unlock()
	}
}

// drainTxLocked takes every frame the guest queued for transmission and
// hands them on. b.mu is held; Transmit copies the frames.
func (b *Backend) drainTxLocked() {
	r := &b.rings[txQueue]
	if b.broken || !r.ready() || b.mem == nil {
		return
	}
	frames := b.txFrames[:0]
	for range r.num {
		head, ok, err := r.pop()
		if err != nil {
			b.ringError(err)
			return
		}
		if !ok {
			break
		}
		// Buffers are reused drain after drain: Transmit copies.
		if len(frames) == len(b.txBufs) {
			b.txBufs = append(b.txBufs, make([]byte, 0, maxFrame))
		}
		frame := b.txBufs[len(frames)][:0]
		skip := netHdrSize
		oversize := false
		err = r.chain(b.mem, head, func(p []byte, writable bool) error {
			if writable {
				return fmt.Errorf("%w: writable buffer in a transmit chain", errRing)
			}
			if skip > 0 {
				k := min(skip, len(p))
				p, skip = p[k:], skip-k
			}
			if len(frame)+len(p) > maxFrame {
				oversize = true
				return nil
			}
			frame = append(frame, p...)
			return nil
		})
		if err != nil {
			b.ringError(err)
			return
		}
		r.push(head, 0)
		switch {
		case oversize:
			b.c.txOversize.Add(1)
			b.warn.Warn(b.log, "tx oversize", "guest sent a frame larger than the wire's largest; dropped")
		case len(frame) >= 14:
			frames = append(frames, frame)
		}
	}
	b.txFrames = frames[:0]
	if len(frames) > 0 || r.usedIdx != r.lastAvail {
		r.notify()
	}
	if len(frames) > 0 {
		b.c.txFrames.Add(uint64(len(frames)))
		if b.cfg.Transmit != nil {
			b.cfg.Transmit(frames)
		}
	}
}

// ringError puts the backend in its error state: the guest broke a ring.
func (b *Backend) ringError(err error) {
	b.c.ringErrors.Add(1)
	b.broken = true
	b.setCarrier()
	b.log.WithError(err).Warn("guest ring corrupt; the data path stops until the front end resets the device")
}

// Receive writes frames into the guest's receive ring, each with a zero
// virtio-net header. Frames with no buffer to go to are dropped and
// counted, as a NIC with an empty receive ring would.
func (b *Backend) Receive(frames [][]byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := &b.rings[rxQueue]
	if b.broken || !r.ready() || b.mem == nil {
		b.c.rxNoBuffer.Add(uint64(len(frames)))
		return
	}
	var hdr [netHdrSize]byte
	binary.LittleEndian.PutUint16(hdr[10:], 1) // num_buffers
	delivered := 0
	for fi, f := range frames {
		head, ok, err := r.pop()
		if err != nil {
			b.ringError(err)
			return
		}
		if !ok {
			b.c.rxNoBuffer.Add(uint64(len(frames) - fi))
			break
		}
		src := [2][]byte{hdr[:], f}
		written := 0
		err = r.chain(b.mem, head, func(p []byte, writable bool) error {
			if !writable {
				return fmt.Errorf("%w: read-only buffer in a receive chain", errRing)
			}
			for len(p) > 0 && len(src[1]) > 0 || len(p) > 0 && len(src[0]) > 0 {
				s := &src[0]
				if len(*s) == 0 {
					s = &src[1]
				}
				n := copy(p, *s)
				p, *s, written = p[n:], (*s)[n:], written+n
			}
			return nil
		})
		if err != nil {
			b.ringError(err)
			return
		}
		if len(src[0])+len(src[1]) > 0 {
			// The guest's buffers are smaller than the frame: give the
			// buffer back empty rather than a truncated frame.
			r.push(head, 0)
			b.c.rxTooSmall.Add(1)
			continue
		}
		r.push(head, uint32(written))
		delivered++
	}
	if delivered > 0 {
		b.c.rxFrames.Add(uint64(delivered))
	}
	r.notify()
}
