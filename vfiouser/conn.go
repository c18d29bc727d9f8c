package vfiouser

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Layout of the package: transport (transport.go: framing and fds, one
// message at a time), messages (protocol.go: views with Valid), dispatch
// (conn.go: one reader per connection, in-order handling, errno replies and
// NO_REPLY in one place), handlers (handlers.go) and message DMA
// (dmamsg.go). It knows the function only through the Function interface.
// Protocol facts follow shared/reference/vfio-user-notes.md (QEMU 11.1.3).

// conn is one client connection. Its reader goroutine (runReader) reads
// and handles commands strictly in order and routes replies to the
// server's own DMA_READ/DMA_WRITE requests back to their waiters.
//
// States: open (reader running) -> closed (reader gone: pending DMA fails,
// new DMA fails) -> torn down (function detached, map closed, fd closed).
type conn struct {
	s   *Server
	f   Function
	fd  int
	log *logrus.Entry
	mem *dma.Map

	rx  *receiver
	out []byte // reply being built: header space, then payload
	// outFDs are sent with the reply; they stay owned by the function.
	outFDs []int

	// Set by VERSION; read by the reader only, except peerXfer (atomic,
	// read by DMA callers).
	negotiated bool
	peer       peerCaps
	peerXfer   atomic.Int64

	numRegions, numIRQs uint32
	regions             []regionLimit

	tid atomic.Int32 // the reader's locked OS thread, 0 when not running

	sendMu     sync.Mutex
	sendClosed bool // under sendMu

	stateMu sync.Mutex
	fdOpen  bool // under stateMu

	dmaMu   sync.Mutex
	closed  bool // under dmaMu
	nextID  uint16
	pending map[uint16]*dmaWaiter

	attached bool // Attach succeeded: teardown owes one Detach
	wg       sync.WaitGroup
}

// regionLimit is what the reader checks region accesses against.
type regionLimit struct {
	size  uint64
	flags pci.RegionFlags
}

func newConn(s *Server, fd int) *conn {
	c := &conn{
		s:       s,
		f:       s.cfg.Function,
		fd:      fd,
		log:     s.log.WithField("client", s.stats.clients.Add(1)),
		rx:      newReceiver(fd, s.maxMsg),
		out:     make([]byte, HeaderSize, 256),
		fdOpen:  true,
		pending: make(map[uint16]*dmaWaiter),
	}
	c.peer = peerCaps{MaxMsgFDs: defaultPeerMsgFDs, MaxDataXfer: DefaultMaxDataXfer}
	c.peerXfer.Store(int64(min(s.cfg.MaxDataXfer, DefaultMaxDataXfer)))
	return c
}

// serve attaches the function, runs the reader and returns when the
// client is gone (or the connection was dropped).
func (c *conn) serve() {
	c.log.Info("client connected")
	c.mem = dma.NewMapLimits(c.log, c.s.cfg.dmaLimits())
	c.mem.SetMessenger(c)
	c.numRegions, c.numIRQs = c.f.DeviceInfo()
	c.regions = make([]regionLimit, c.numRegions)
	for i := range c.regions {
		if info, err := c.f.RegionInfo(uint32(i)); err == nil {
			c.regions[i] = regionLimit{size: info.Size, flags: info.Flags}
		}
	}
	if err := c.attach(); err != nil {
		c.log.WithError(err).Error("function refused the client; dropping it")
		c.markClosed()
		return
	}
	c.attached = true
	c.wg.Add(1)
	go c.runReader()
	c.wg.Wait()
}

// attach calls Function.Attach; a panic there is a refusal, not a crash.
func (c *conn) attach() (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.WithFields(logrus.Fields{"panic": r, "stack": string(debug.Stack())}).Error("panic in Attach")
			err = fmt.Errorf("vfiouser: attach: panic: %v", r)
		}
	}()
	return c.f.Attach(c.mem)
}

// teardown runs after the reader is gone: detach the function (which
// stops the device's workers), close the map, close the socket.
func (c *conn) teardown() {
	c.shutdown()
	c.markClosed()
	if c.attached {
		func() {
			defer c.recoverTo("detach")
			c.f.Detach()
		}()
	}
	if err := c.mem.Close(); err != nil {
		c.log.WithError(err).Warn("closing the DMA map failed")
	}
	c.sendMu.Lock()
	c.sendClosed = true
	c.sendMu.Unlock()
	c.stateMu.Lock()
	c.fdOpen = false
	unix.Close(c.fd)
	c.stateMu.Unlock()
	c.log.Info("client disconnected")
}

func (c *conn) recoverTo(what string) {
	if r := recover(); r != nil {
		c.s.stats.panics.Add(1)
		c.log.WithFields(logrus.Fields{"panic": r, "stack": string(debug.Stack()), "during": what}).
			Error("panic while serving a client; dropping it")
	}
}

// shutdown wakes the reader and any blocked sender; the fd stays open.
func (c *conn) shutdown() {
	c.stateMu.Lock()
	if c.fdOpen {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.stateMu.Unlock()
}

// markClosed fails every pending message DMA and refuses new ones.
func (c *conn) markClosed() {
	c.dmaMu.Lock()
	defer c.dmaMu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for id, w := range c.pending {
		delete(c.pending, id)
		w.done <- errConnClosed
	}
}

var errConnClosed = fmt.Errorf("vfiouser: client disconnected: %w", unix.ENOTCONN)

// runReader is the connection's only reader. It is locked to its OS
// thread so message DMA can tell it apart by thread id (dma.ErrInHandler).
// It never unlocks: the thread goes away with it.
func (c *conn) runReader() {
	defer c.wg.Done()
	runtime.LockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	c.log.Debug("reader started")
	defer c.log.Debug("reader stopped")
	defer c.tid.Store(0)
	defer c.markClosed()
	defer c.recoverTo("handling a message")

	var m message
	for {
		err := c.rx.read(&m)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return
		case errors.Is(err, errFraming):
			c.protocolError(m.hdr, err)
			if !m.hdr.NoReply() && !m.hdr.IsReply() {
				c.sendError(m.hdr, unix.EINVAL)
			}
			c.log.WithError(err).Warn("unframeable message; dropping the client")
			return
		case errors.Is(err, io.ErrUnexpectedEOF):
			c.log.WithError(err).Warn("client closed the socket inside a message")
			return
		default:
			if !c.isShutdown() {
				c.log.WithError(err).Warn("socket error; dropping the client")
			}
			return
		}
		if !c.handle(&m) {
			return
		}
	}
}

func (c *conn) isShutdown() bool { return c.s.stopping.Load() }

// handle handles one message; false drops the connection.
func (c *conn) handle(m *message) bool {
	if m.hdr.IsReply() {
		c.routeReply(m)
		return true
	}
	err := c.dispatch(m)
	if err != nil {
		c.protocolErrorMaybe(m.hdr, err)
	}
	// The one place that honours NO_REPLY (notes 1.1): never answer it,
	// success or error.
	if m.hdr.NoReply() {
		return true
	}
	if err != nil {
		return c.sendError(m.hdr, Errno(err))
	}
	return c.sendReply(m.hdr)
}

// errProtocol marks a client mistake (bad size, argsz, index, fds...) as
// opposed to an error the function returned for a well-formed request.
type protocolErr struct{ err error }

func (e protocolErr) Error() string { return e.err.Error() }
func (e protocolErr) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return protocolErr{fmt.Errorf("vfiouser: "+format+": %w", append(args, unix.EINVAL)...)}
}

func (c *conn) protocolErrorMaybe(h Header, err error) {
	var pe protocolErr
	if errors.As(err, &pe) {
		c.protocolError(h, err)
		return
	}
	if c.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		c.log.WithFields(logrus.Fields{"cmd": h.Command, "id": h.ID}).WithError(err).Debug("command failed")
	}
}

// protocolError counts and (rate-limited) logs a client mistake.
func (c *conn) protocolError(h Header, err error) {
	c.s.stats.protocolErrors.Add(1)
	if ok, n := c.s.warns.Allow("client protocol error"); ok {
		e := c.log.WithFields(logrus.Fields{"cmd": h.Command, "id": h.ID, "size": h.Size, "flags": h.Flags}).WithError(err)
		if n > 0 {
			e = e.WithField("suppressed", n)
		}
		e.Warn("client protocol error")
	}
}

// cmdSpec is one row of the dispatch table: how many fds the command may
// carry, its payload validation and its handler. The dispatcher checks
// both before the handler runs; the handler then owns the fds.
type cmdSpec struct {
	maxFDs int
	valid  func(p []byte) bool
	fn     func(c *conn, p []byte, fds []int) error
}

var dispatchTable [CmdRegionWriteMulti + 1]cmdSpec

func init() {
	dispatchTable = [...]cmdSpec{
		CmdVersion:             {0, func(p []byte) bool { return version(p).Valid() }, (*conn).cmdVersion},
		CmdDMAMap:              {1, func(p []byte) bool { return dmaMap(p).Valid() }, (*conn).cmdDMAMap},
		CmdDMAUnmap:            {0, func(p []byte) bool { return dmaUnmap(p).Valid() }, (*conn).cmdDMAUnmap},
		CmdDeviceGetInfo:       {0, func(p []byte) bool { return deviceInfo(p).Valid() }, (*conn).cmdDeviceGetInfo},
		CmdDeviceGetRegionInfo: {0, func(p []byte) bool { return regionInfoReq(p).Valid() }, (*conn).cmdGetRegionInfo},
		CmdDeviceGetIRQInfo:    {0, func(p []byte) bool { return irqInfoReq(p).Valid() }, (*conn).cmdGetIRQInfo},
		CmdDeviceSetIRQs:       {maxMsgFDs, func(p []byte) bool { return irqSet(p).Valid() }, (*conn).cmdSetIRQs},
		CmdRegionRead:          {0, func(p []byte) bool { return regionAccess(p).Valid(false) }, (*conn).cmdRegionRead},
		CmdRegionWrite:         {0, func(p []byte) bool { return regionAccess(p).Valid(true) }, (*conn).cmdRegionWrite},
		CmdDeviceReset:         {0, func(p []byte) bool { return len(p) == 0 }, (*conn).cmdDeviceReset},
		CmdRegionWriteMulti:    {0, func(p []byte) bool { return writeMulti(p).Valid() }, (*conn).cmdWriteMulti},
	}
}

// dispatch validates a command (type, negotiation state, fd count,
// payload) and runs its handler, which builds the reply payload in c.out.
// Every fd is closed or handed over before it returns.
func (c *conn) dispatch(m *message) error {
	c.out = c.out[:HeaderSize]
	c.outFDs = c.outFDs[:0]
	h := m.hdr
	var spec cmdSpec
	if int(h.Command) < len(dispatchTable) {
		spec = dispatchTable[h.Command]
	}
	var err error
	switch {
	case m.ctrunc:
		err = badRequest("%v: more than %d fds", h.Command, maxMsgFDs)
	case h.Type() != FlagTypeCommand:
		err = badRequest("%v: message type %d", h.Command, h.Type())
	case h.IsError():
		err = badRequest("%v: error flag on a command", h.Command)
	case spec.fn == nil:
		err = badRequest("unsupported command %v", h.Command)
	case !c.negotiated && h.Command != CmdVersion:
		err = badRequest("%v before VERSION", h.Command)
	case len(m.fds) > spec.maxFDs:
		err = badRequest("%v: %d fds (at most %d)", h.Command, len(m.fds), spec.maxFDs)
	case !spec.valid(m.payload):
		err = badRequest("%v: malformed %d-byte payload", h.Command, len(m.payload))
	}
	if err != nil {
		closeFDs(m.fds)
		return err
	}
	if h.Command != CmdRegionRead && h.Command != CmdRegionWrite && h.Command != CmdRegionWriteMulti &&
		c.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		c.log.WithFields(logrus.Fields{"cmd": h.Command, "id": h.ID, "size": h.Size, "fds": len(m.fds)}).Debug("command")
	}
	return spec.fn(c, m.payload, m.fds)
}

// grow appends n zero bytes to the reply payload and returns them.
func (c *conn) grow(n int) []byte {
	l := len(c.out)
	if cap(c.out)-l < n {
		nb := make([]byte, l, l+n)
		copy(nb, c.out)
		c.out = nb
	}
	c.out = c.out[:l+n]
	b := c.out[l:]
	clear(b)
	return b
}

// sendReply sends the reply built in c.out (and c.outFDs) to request h.
func (c *conn) sendReply(h Header) bool {
	Header{ID: h.ID, Command: h.Command, Size: uint32(len(c.out)), Flags: FlagTypeReply}.Put(c.out)
	return c.send(c.out, c.outFDs)
}

// sendError sends a header-only error reply (flags reply|error, notes 1.1).
func (c *conn) sendError(h Header, errno unix.Errno) bool {
	var b [HeaderSize]byte
	Header{ID: h.ID, Command: h.Command, Size: HeaderSize, Flags: FlagTypeReply | FlagError, Error: uint32(errno)}.Put(b[:])
	return c.send(b[:], nil)
}

// send writes one message under the send mutex; false if the socket is
// gone (the reader then stops).
func (c *conn) send(b []byte, fds []int) bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.sendClosed {
		return false
	}
	if err := sendMsg(c.fd, b, fds); err != nil {
		if !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
			c.log.WithError(err).Warn("sending to the client failed")
		}
		return false
	}
	return true
}
