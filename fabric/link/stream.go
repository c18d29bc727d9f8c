package link

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/unixsock"
)

// QEMU's stream netdev (net/stream.c, net/net.c net_fill_rstate) frames
// each packet as a 4-byte big-endian length and then the packet's bytes,
// with no other header.

// maxSkip is the largest length prefix a stream reader skips over: QEMU's
// own receive buffer (NET_BUFSIZE, 4096 + 65536 bytes). A longer one is
// not a frame at all but garbage, and a byte stream cannot be resynchronised
// after garbage: the connection is dropped.
const maxSkip = 4096 + 65536

// Stream decoding outcomes other than a frame.
var (
	errRunt     = errors.New("frame shorter than an Ethernet header")
	errOversize = errors.New("frame longer than the wire's largest frame")
	errDesync   = errors.New("length prefix beyond any frame: stream out of sync")
)

// streamReader decodes QEMU stream framing.
type streamReader struct {
	r   *bufio.Reader
	buf []byte // MaxFrame bytes
}

func newStreamReader(r io.Reader) *streamReader {
	return &streamReader{r: bufio.NewReaderSize(r, 256<<10), buf: make([]byte, fabric.MaxFrame)}
}

// next returns the next frame, valid until the following call. errRunt and
// errOversize mean a frame was skipped whole (the stream is still in step);
// errDesync and I/O errors end the stream. n is the length prefix read.
func (s *streamReader) next() (frame []byte, n int, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
		return nil, 0, err
	}
	u := binary.BigEndian.Uint32(hdr[:])
	if u > maxSkip {
		return nil, int(min(u, 1<<31-1)), errDesync
	}
	n = int(u)
	switch {
	case n < fabric.MinFrame:
		if _, err := s.r.Discard(n); err != nil {
			return nil, n, noEOF(err)
		}
		return nil, n, errRunt
	case n > fabric.MaxFrame:
		if _, err := s.r.Discard(n); err != nil {
			return nil, n, noEOF(err)
		}
		return nil, n, errOversize
	}
	if _, err := io.ReadFull(s.r, s.buf[:n]); err != nil {
		return nil, n, noEOF(err)
	}
	return s.buf[:n], n, nil
}

// buffered reports whether a whole next frame (prefix included) is already
// buffered, so the reader can batch without blocking.
func (s *streamReader) buffered() bool {
	if s.r.Buffered() < 4 {
		return false
	}
	hdr, _ := s.r.Peek(4)
	n := int(binary.BigEndian.Uint32(hdr))
	return n >= fabric.MinFrame && n <= fabric.MaxFrame && s.r.Buffered() >= 4+n
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendStreamFrame appends f in stream framing to b.
func appendStreamFrame(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// streamConn is one connected stream: the far side while it lasts.
type streamConn struct {
	c    net.Conn
	wbuf []byte // used by writeFrames only, on the delivery goroutine
}

func (s *streamConn) writeFrames(frames [][]byte) error {
	b := s.wbuf[:0]
	for _, f := range frames {
		b = appendStreamFrame(b, f)
	}
	s.wbuf = b
	_, err := s.c.Write(b)
	if err != nil {
		// A partial write leaves the peer mid-frame: the connection
		// cannot go on. Closing it ends its reader, which drops the
		// carrier (a client then redials).
		s.c.Close()
	}
	return err
}

// stream is the stream transport: a listener (server) or a dialer that
// reconnects (client).
type stream struct {
	l       *Link
	network string // "tcp" or "unix"
	address string
	ln      net.Listener // server only

	mu         sync.Mutex // guards conns, down and cancelDial
	conns      map[net.Conn]bool
	down       bool
	cancelDial context.CancelFunc // aborts a connect in progress
}

// setCancelDial registers how shutdown aborts a connect in progress, and
// reports false if shutdown has already happened.
func (s *stream) setCancelDial(cancel context.CancelFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelDial = cancel
	return !s.down
}

func splitAddr(addr string) (network, address string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}

func openStream(l *Link) (transport, error) {
	s := &stream{l: l, conns: map[net.Conn]bool{}}
	s.network, s.address = splitAddr(l.cfg.Addr)
	if !l.cfg.Server {
		return s, nil
	}
	if s.network == "unix" {
		removeStaleSocket(s.address)
	}
	var ln net.Listener
	var err error
	if s.network == "unix" {
		// The socket file gets the mode and group of serve's other
		// sockets (0600 by default), whatever the umask.
		ln, err = unixsock.ListenUnix(s.address, l.cfg.Perm)
	} else {
		ln, err = net.Listen(s.network, s.address)
	}
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s.ln = ln
	return s, nil
}

// removeStaleSocket removes a UNIX socket file nobody listens on any more
// (left by a server that was killed), so a restarted server can listen.
func removeStaleSocket(path string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
}

func (s *stream) addr() string {
	if s.ln != nil {
		if s.network == "unix" {
			return "unix:" + s.ln.Addr().String()
		}
		return s.ln.Addr().String()
	}
	return s.l.cfg.Addr
}

func (s *stream) start(l *Link) {
	if s.ln != nil {
		l.wg.Go(s.runAccept)
	} else {
		l.wg.Go(s.runDial)
	}
}

func (s *stream) shutdown() {
	if s.ln != nil {
		s.ln.Close() // first, so that no peer reconnects in between
	}
	s.mu.Lock()
	s.down = true
	if s.cancelDial != nil {
		s.cancelDial()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// track records c as open, or closes it and reports false when the link is
// shutting down.
func (s *stream) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		c.Close()
		return false
	}
	s.conns[c] = true
	return true
}

func (s *stream) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// runAccept accepts peers. The newest connection is the far side: a peer
// that restarted without its old connection being torn down (a dead host
// sends no FIN) is back at once, and the older connection is closed.
func (s *stream) runAccept() {
	log := s.l.log.WithField("addr", s.addr())
	log.Debug("accepting")
	defer log.Debug("accept stopped")
	var prev net.Conn
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.l.closing() {
				return
			}
			s.l.warn.Warn(log.WithError(err), "accept", "accepting a stream peer failed")
			if !s.l.sleep(100 * time.Millisecond) {
				return
			}
			continue
		}
		if !s.track(c) {
			return
		}
		if prev != nil {
			prev.Close() // its reader ends and clears it unless already replaced
		}
		prev = c
		log.WithField("peer", c.RemoteAddr().String()).Info("stream peer connected")
		s.l.wg.Go(func() { s.serveConn(c) })
	}
}

// runDial connects to the server and reconnects with exponential backoff
// (100 ms doubling to 2 s) whenever the connection ends, until Close.
func (s *stream) runDial() {
	log := s.l.log.WithField("addr", s.address)
	log.Debug("dialing")
	defer log.Debug("dial stopped")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !s.setCancelDial(cancel) {
		return
	}
	const first, most = 100 * time.Millisecond, 2 * time.Second
	backoff := first
	var d net.Dialer
	for !s.l.closing() {
		c, err := d.DialContext(ctx, s.network, s.address)
		if err != nil {
			if s.l.closing() {
				return
			}
			s.l.warn.Warn(log.WithError(err).WithField("retry_in", backoff), "dial", "connecting the stream failed; retrying")
			if !s.l.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, most)
			continue
		}
		if !s.track(c) {
			return
		}
		backoff = first
		log.Info("stream connected")
		s.serveConn(c)
		log.Info("stream disconnected; reconnecting")
	}
}

// serveConn makes c the far side and feeds the switch what it reads until
// c ends.
func (s *stream) serveConn(c net.Conn) {
	defer s.untrack(c)
	far := &streamConn{c: c}
	s.l.setFar(far)
	defer s.l.clearFar(far)
	r := newStreamReader(c)
	batch := make([][]byte, 0, 64)
	bufs := make([][]byte, 0, 64)
	for {
		f, n, err := r.next()
		switch {
		case err == nil:
		case errors.Is(err, errRunt):
			s.l.badInput(&s.l.c.inRunt, "runt", "runt stream frame dropped", n)
			continue
		case errors.Is(err, errOversize):
			s.l.badInput(&s.l.c.inOversize, "oversize", "oversized stream frame dropped", n)
			continue
		case errors.Is(err, errDesync):
			s.l.badInput(&s.l.c.inDesync, "desync", "stream length prefix out of range; dropping the connection", n)
			return
		default:
			if !s.l.closing() && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.l.log.WithError(err).Debug("stream read ended")
			}
			return
		}
		// Batch what is already buffered; each frame needs its own copy
		// because the reader reuses its buffer.
		batch = batch[:0]
		for i := 0; ; i++ {
			if i == len(bufs) {
				bufs = append(bufs, make([]byte, fabric.MaxFrame))
			}
			batch = append(batch, append(bufs[i][:0], f...))
			if len(batch) == cap(batch) || !r.buffered() {
				break
			}
			if f, _, err = r.next(); err != nil {
				break // cannot happen: buffered() checked the bounds
			}
		}
		s.l.in(batch)
	}
}

// removeStaleSocketFile removes path if it is a socket file.
func removeStaleSocketFile(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		os.Remove(path)
	}
}
