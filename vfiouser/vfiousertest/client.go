// Package vfiousertest implements a vfio-user client that behaves like
// QEMU 11.1.3's vfio-user-pci, for testing vfio-user servers and devices.
package vfiousertest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/vfiouser"
	"golang.org/x/sys/unix"
)

var le = binary.LittleEndian

// QEMUVersionJSON is the capability text QEMU 11.1.3 sends in VERSION
// (notes 2.2); with the 4-byte version and the NUL the request is 214 bytes.
const QEMUVersionJSON = `{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": true}}`

// Client limits, as QEMU's.
const (
	clientMaxMsgFDs   = 16
	clientMaxDataXfer = 1 << 20
	DefaultTimeout    = 5 * time.Second
)

// Errors.
var (
	// ErrClosed: the connection is gone (the server closed it, or Close).
	ErrClosed = errors.New("vfiousertest: connection closed")
	// ErrTimeout: no reply within the timeout. QEMU would now consider
	// the device dead.
	ErrTimeout = errors.New("vfiousertest: no reply within the timeout")
)

// ReplyError is an error reply from the server (flags reply|error).
type ReplyError struct {
	Command vfiouser.Command
	Errno   unix.Errno
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("vfiousertest: %v: error reply: %v", e.Command, e.Errno)
}

func (e *ReplyError) Unwrap() error { return e.Errno }

// Reply is a received reply.
type Reply struct {
	Header  vfiouser.Header
	Payload []byte
	Fds     []int // owned by the caller
}

// ServerCaps is what the server advertised in VERSION.
type ServerCaps struct {
	Major, Minor  uint16
	JSON          string
	MaxMsgFDs     int
	MaxDataXfer   int
	PgSizes       uint64
	MaxDMAMaps    int
	WriteMultiple bool
}

// Client is a vfio-user client connection: a fake QEMU. See README.md
// and TestDeviceTestExample for a device test written with it.
//
// A test dials the server's socket, negotiates, maps guest RAM and then
// drives the device:
//
//	c, err := vfiousertest.Dial(ctx, "/run/dev.sock")
//	if err != nil { t.Fatal(err) }
//	defer func() {
//		if err := c.Close(); err != nil { t.Error(err) } // protocol violations
//	}()
//	if err := c.Negotiate(); err != nil { t.Fatal(err) }
//	ram := dmatest.NewRAM(t, 1<<20)
//	if err := c.MapRAM(ram, 0); err != nil { t.Fatal(err) }
//	id, err := c.ReadConfig(0, 4)
//	evs, err := c.EnableMSIX(t, 4) // eventfds the device signals
//
// The client is strict where QEMU is: every reply is checked (id, command,
// reply flag, exact size per shared/reference/vfio-user-notes.md table 1.2,
// no fds except the one on a region-info reply with the MMAP flag), a reply
// to a NO_REPLY message or to no request at all is a violation, and so is
// a reply later than the timeout (5 s, as QEMU's x-msg-timeout). A call
// that sees a violation returns it; Err and Close return every violation
// seen, including those seen by the reader between calls.
//
// The client serves the server's DMA_READ and DMA_WRITE requests from the
// RAM it mapped (with or without fd, as QEMU serves any guest address), on
// its own reader goroutine, which Close joins. Raw, RawCall and friends send
// malformed input for robustness tests.
//
// Methods may be called from several goroutines; like QEMU, requests are
// numbered from one 16-bit counter and replies are paired by id.
type Client struct {
	fd int
	// Timeout is how long a call waits for its reply; DefaultTimeout
	// unless changed before use.
	Timeout time.Duration

	sendMu sync.Mutex

	// ramMu guards rams and keeps their mappings alive while the reader
	// copies: Unmap and Close unmap them under the write lock.
	ramMu sync.RWMutex
	rams  []ramMap // sorted by iova; the client's own mappings

	mu         sync.Mutex
	nextID     uint16
	calls      map[uint16]*call
	posted     map[uint16]bool // NO_REPLY ids whose reply would be a violation
	violations []error
	closed     bool
	caps       ServerCaps

	wg       sync.WaitGroup
	done     chan struct{} // closed when the reader is gone
	closeErr error
	once     sync.Once

	dmaReads, dmaWrites atomic.Uint64
}

type call struct {
	cmd   vfiouser.Command
	reqSz int
	ch    chan Reply
	check func(r Reply) error
}

type ramMap struct {
	iova uint64
	mem  []byte
}

// Dial connects to the server's socket and starts the client's reader.
// While the server's backlog is full (it serves one client at a time) it
// retries until ctx is done.
func Dial(ctx context.Context, path string) (*Client, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vfiousertest: socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err == nil {
			break
		}
		if err == unix.EINTR {
			continue
		}
		// A listener with a full backlog refuses a non-blocking connect
		// with EAGAIN until it accepts.
		if err == unix.EAGAIN && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
			continue
		}
		unix.Close(fd)
		if ctxErr := ctx.Err(); ctxErr != nil && err == unix.EAGAIN {
			err = ctxErr
		}
		return nil, fmt.Errorf("vfiousertest: connect %s: %w", path, err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vfiousertest: connect %s: %w", path, err)
	}
	return NewClient(fd), nil
}

// NewClient wraps a connected socket (e.g. one end of a socketpair); the
// client owns fd from now on.
func NewClient(fd int) *Client {
	c := &Client{
		fd:      fd,
		Timeout: DefaultTimeout,
		calls:   make(map[uint16]*call),
		posted:  make(map[uint16]bool),
		done:    make(chan struct{}),
	}
	c.wg.Add(1)
	go c.runReader()
	return c
}

// Close shuts the connection, joins the reader and closes the socket. It
// returns every protocol violation seen (Err). Idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
		c.wg.Wait()
		c.ramMu.Lock()
		for _, r := range c.rams {
			unix.Munmap(r.mem)
		}
		c.rams = nil
		c.ramMu.Unlock()
		c.sendMu.Lock()
		unix.Close(c.fd)
		c.fd = -1
		c.sendMu.Unlock()
	})
	return c.Err()
}

// Done is closed when the connection is gone (server closed it, or Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns every protocol violation the client has seen, or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.violations...)
}

func (c *Client) violationCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.violations)
}

func (c *Client) violationsSince(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) <= n {
		return nil
	}
	return errors.Join(c.violations[n:]...)
}

func (c *Client) violate(format string, args ...any) error {
	err := fmt.Errorf("vfiousertest: protocol violation: "+format, args...)
	c.mu.Lock()
	c.violations = append(c.violations, err)
	c.mu.Unlock()
	return err
}

// Caps returns what the server advertised in VERSION.
func (c *Client) Caps() ServerCaps {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.caps
}

// DMAStats counts the DMA_READ and DMA_WRITE requests the client served.
func (c *Client) DMAStats() (reads, writes uint64) { return c.dmaReads.Load(), c.dmaWrites.Load() }

// allocID returns a free message id (not awaiting a reply).
func (c *Client) allocIDLocked() uint16 {
	id := c.nextID
	for c.calls[id] != nil {
		id++
	}
	c.nextID = id + 1
	return id
}

// send writes one message (one sendmsg, fds attached).
func (c *Client) send(b []byte, fds []int) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for len(b) > 0 {
		n, err := unix.SendmsgN(c.fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.EPIPE || err == unix.ECONNRESET {
				return ErrClosed
			}
			return fmt.Errorf("vfiousertest: sendmsg: %w", err)
		}
		b, oob = b[n:], nil
	}
	return nil
}

// request builds a command message: header then payload.
func request(id uint16, cmd vfiouser.Command, flags uint32, payload []byte) []byte {
	b := make([]byte, vfiouser.HeaderSize+len(payload))
	vfiouser.Header{ID: id, Command: cmd, Size: uint32(len(b)), Flags: flags}.Put(b)
	copy(b[vfiouser.HeaderSize:], payload)
	return b
}

// do sends a command and waits for its reply, which check validates (on
// success replies; error replies must be header-only). fds are sent with
// the request and stay owned by the caller.
func (c *Client) do(cmd vfiouser.Command, payload []byte, fds []int, check func(Reply) error) (Reply, error) {
	before := c.violationCount()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Reply{}, ErrClosed
	}
	id := c.allocIDLocked()
	cl := &call{cmd: cmd, reqSz: vfiouser.HeaderSize + len(payload), ch: make(chan Reply, 1), check: check}
	c.calls[id] = cl
	delete(c.posted, id)
	c.mu.Unlock()

	if err := c.send(request(id, cmd, vfiouser.FlagTypeCommand, payload), fds); err != nil {
		c.mu.Lock()
		delete(c.calls, id)
		c.mu.Unlock()
		return Reply{}, err
	}
	r, err := c.wait(id, cl)
	if v := c.violationsSince(before); v != nil {
		err = errors.Join(err, v)
	}
	return r, err
}

func (c *Client) wait(id uint16, cl *call) (Reply, error) {
	t := time.NewTimer(c.Timeout)
	defer t.Stop()
	select {
	case r, ok := <-cl.ch:
		if !ok {
			return Reply{}, ErrClosed
		}
		if r.Header.IsError() {
			return r, &ReplyError{Command: cl.cmd, Errno: unix.Errno(r.Header.Error)}
		}
		return r, nil
	case <-t.C:
		c.mu.Lock()
		if c.calls[id] == cl {
			delete(c.calls, id)
			// A reply arriving after this is late: QEMU desyncs on it.
			c.posted[id] = true
		}
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("vfiousertest: %v id %d: %w", cl.cmd, id, ErrTimeout)
	}
}

// post sends a NO_REPLY command; a reply to it is a violation.
func (c *Client) post(cmd vfiouser.Command, payload []byte) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	id := c.allocIDLocked()
	c.posted[id] = true
	c.mu.Unlock()
	return c.send(request(id, cmd, vfiouser.FlagTypeCommand|vfiouser.FlagNoReply, payload), nil)
}

// runReader reads every message from the server: replies go to their
// calls, DMA_READ/DMA_WRITE requests are served from mapped RAM.
func (c *Client) runReader() {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		c.closed = true
		for id, cl := range c.calls {
			delete(c.calls, id)
			close(cl.ch)
		}
		c.mu.Unlock()
		close(c.done)
	}()
	oob := make([]byte, unix.CmsgSpace(4*clientMaxMsgFDs))
	var hb [vfiouser.HeaderSize]byte
	for {
		var fds []int
		n, f, err := recvFull(c.fd, hb[:], oob)
		fds = append(fds, f...)
		if err != nil {
			closeAll(fds)
			if n > 0 {
				c.violate("server closed the socket inside a header (%d of 16 bytes)", n)
			}
			return
		}
		h, _ := vfiouser.DecodeHeader(hb[:])
		if h.Size < vfiouser.HeaderSize || h.Size > clientMaxDataXfer+4096 {
			closeAll(fds)
			c.violate("message %v with size %d; the stream cannot be followed", h, h.Size)
			return
		}
		payload := make([]byte, h.Size-vfiouser.HeaderSize)
		if len(payload) > 0 {
			_, f, err = recvFull(c.fd, payload, oob)
			fds = append(fds, f...)
			if err != nil {
				closeAll(fds)
				c.violate("server closed the socket inside message %v", h)
				return
			}
		}
		if h.IsReply() {
			c.routeReply(Reply{Header: h, Payload: payload, Fds: fds})
			continue
		}
		c.serveRequest(h, payload, fds)
	}
}

// recvFull reads exactly len(p) bytes with their fds.
func recvFull(fd int, p, oob []byte) (int, []int, error) {
	var fds []int
	n := 0
	for n < len(p) {
		m, oobn, flags, _, err := unix.Recvmsg(fd, p[n:], oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fds, err
		}
		if oobn > 0 {
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for i := range msgs {
					if r, err := unix.ParseUnixRights(&msgs[i]); err == nil {
						fds = append(fds, r...)
					}
				}
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			fds = append(fds, -1) // marks truncation; reported as extra fds
		}
		if m == 0 {
			return n, fds, io.EOF
		}
		n += m
	}
	return n, fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func (c *Client) routeReply(r Reply) {
	h := r.Header
	c.mu.Lock()
	cl := c.calls[h.ID]
	if cl != nil {
		delete(c.calls, h.ID)
	}
	wasPosted := c.posted[h.ID]
	c.mu.Unlock()
	if cl == nil {
		closeAll(r.Fds)
		if wasPosted {
			c.violate("reply %v to a NO_REPLY or timed-out request (QEMU: \"unexpected reply\", device dead)", h)
		} else {
			c.violate("reply %v to no request", h)
		}
		return
	}
	if err := checkReply(cl, r); err != nil {
		c.violate("%v", err)
		closeAll(r.Fds)
		r.Fds = nil
		// Deliver it anyway so the caller sees the violation, not a timeout.
	}
	cl.ch <- r
}

// checkReply applies the rules every reply must follow, then the call's own.
func checkReply(cl *call, r Reply) error {
	h := r.Header
	switch {
	case h.Command != cl.cmd:
		return fmt.Errorf("reply %v to a %v request", h, cl.cmd)
	case h.Flags&^(vfiouser.FlagTypeMask|vfiouser.FlagError) != 0:
		return fmt.Errorf("reply %v has flags %#x", h, h.Flags)
	case h.IsError():
		if h.Size != vfiouser.HeaderSize {
			return fmt.Errorf("error reply %v: size %d, want 16", h, h.Size)
		}
		if h.Error == 0 {
			return fmt.Errorf("error reply %v: errno 0", h)
		}
		if len(r.Fds) > 0 {
			return fmt.Errorf("error reply %v carries %d fds", h, len(r.Fds))
		}
		return nil
	case int(h.Size) > cl.reqSz && cl.cmd != vfiouser.CmdDeviceGetRegionInfo && cl.cmd != vfiouser.CmdRegionRead:
		return fmt.Errorf("reply %v larger than its %d-byte request (QEMU: \"reply larger than recv buffer\")", h, cl.reqSz)
	}
	if cl.check != nil {
		if err := cl.check(r); err != nil {
			return fmt.Errorf("reply %v: %w", h, err)
		}
	}
	if cl.cmd != vfiouser.CmdDeviceGetRegionInfo && len(r.Fds) > 0 {
		return fmt.Errorf("reply %v carries %d fds (QEMU: \"unexpected FDs in reply\")", h, len(r.Fds))
	}
	return nil
}

// exactSize returns a check that the payload is exactly n bytes.
func exactSize(n int) func(Reply) error {
	return func(r Reply) error {
		if len(r.Payload) != n {
			return fmt.Errorf("payload %d bytes, want %d", len(r.Payload), n)
		}
		return nil
	}
}

// serveRequest answers the server's DMA_READ/DMA_WRITE (notes 1.5) as QEMU
// 11.1.3 does: from the mapped RAM, EINVAL for fds or a bad size, E2BIG
// above max_data_xfer_size, EFAULT outside RAM, ENOSYS for other commands.
func (c *Client) serveRequest(h vfiouser.Header, p []byte, fds []int) {
	reply := func(payload []byte, errno unix.Errno) {
		if h.NoReply() {
			return
		}
		flags := vfiouser.FlagTypeReply
		var b []byte
		if errno != 0 {
			flags |= vfiouser.FlagError
			b = make([]byte, vfiouser.HeaderSize)
		} else {
			b = make([]byte, vfiouser.HeaderSize+len(payload))
			copy(b[vfiouser.HeaderSize:], payload)
		}
		vfiouser.Header{ID: h.ID, Command: h.Command, Size: uint32(len(b)), Flags: flags, Error: uint32(errno)}.Put(b)
		c.send(b, nil)
	}
	if len(fds) > 0 {
		closeAll(fds)
		c.violate("server request %v carries %d fds", h, len(fds))
		reply(nil, unix.EINVAL)
		return
	}
	if h.Type() != vfiouser.FlagTypeCommand || (h.Command != vfiouser.CmdDMARead && h.Command != vfiouser.CmdDMAWrite) {
		c.violate("server sent %v, which a client does not serve", h)
		reply(nil, unix.ENOSYS)
		return
	}
	if len(p) < 16 {
		c.violate("server request %v: %d-byte payload", h, len(p))
		reply(nil, unix.EINVAL)
		return
	}
	addr, count := le.Uint64(p[0:]), le.Uint64(p[8:])
	if count > clientMaxDataXfer {
		c.violate("server request %v: count %d above max_data_xfer_size", h, count)
		reply(nil, unix.E2BIG)
		return
	}
	want := uint64(16)
	if h.Command == vfiouser.CmdDMAWrite {
		want += count
	}
	if uint64(len(p)) != want {
		c.violate("server request %v: payload %d bytes, want %d (u64 count layout)", h, len(p), want)
		reply(nil, unix.EINVAL)
		return
	}
	out := make([]byte, 16, 16+count)
	copy(out, p[:16])
	c.ramMu.RLock()
	mem := c.ramLocked(addr, count)
	if mem != nil {
		if h.Command == vfiouser.CmdDMARead {
			c.dmaReads.Add(1)
			out = append(out, mem...)
		} else {
			c.dmaWrites.Add(1)
			copy(mem, p[16:])
		}
	}
	c.ramMu.RUnlock()
	if mem == nil {
		reply(nil, unix.EFAULT)
		return
	}
	reply(out, 0)
}

// ramLocked returns the mapped RAM bytes for [addr, addr+n), or nil.
// The caller holds ramMu.
func (c *Client) ramLocked(addr, n uint64) []byte {
	i := sort.Search(len(c.rams), func(i int) bool { return c.rams[i].iova+uint64(len(c.rams[i].mem)) > addr })
	if i == len(c.rams) || addr < c.rams[i].iova {
		return nil
	}
	r := c.rams[i]
	off := addr - r.iova
	if n > uint64(len(r.mem))-off {
		return nil
	}
	return r.mem[off : off+n]
}

// capsJSON is the subset of the capability JSON the client checks.
type capsJSON struct {
	Capabilities *struct {
		MaxMsgFDs     *json.Number    `json:"max_msg_fds"`
		MaxDataXfer   *json.Number    `json:"max_data_xfer_size"`
		PgSizes       *json.Number    `json:"pgsizes"`
		MaxDMAMaps    *json.Number    `json:"max_dma_maps"`
		WriteMultiple json.RawMessage `json:"write_multiple"`
		Migration     json.RawMessage `json:"migration"`
		TwinSocket    json.RawMessage `json:"twin_socket"`
	} `json:"capabilities"`
}
