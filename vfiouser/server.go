// Package vfiouser serves one PCI function to a vfio-user client (QEMU's
// vfio-user-pci) over a UNIX socket.
package vfiouser

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Function is what the server needs of the function it serves;
// *pci.Function implements it.
//
// All methods except Attach and Detach are called from the connection's
// reader, one at a time, in the client's order. They must be quick (QEMU
// kills the device after 5 s without a reply) and must not perform message
// DMA (dma.ErrInHandler). Slices passed in (p, data) are only valid during
// the call. SetIRQs takes ownership of fds always (also on error).
type Function interface {
	DeviceInfo() (numRegions, numIRQs uint32)
	RegionInfo(index uint32) (pci.RegionInfo, error)
	IRQInfo(index uint32) (pci.IRQInfo, error)
	ReadRegion(index uint32, off uint64, p []byte) error
	WriteRegion(index uint32, off uint64, p []byte) error
	SetIRQs(index, flags, start, count uint32, fds []int, data []byte) error
	Reset()
	// Attach is called when a client connects, with that client's fresh
	// DMA map; Detach when it leaves, before the map is closed.
	Attach(mem *dma.Map) error
	Detach()
}

// Config configures a Server.
type Config struct {
	Path     string // UNIX socket path
	Function Function
	// Log has component=vfiouser and device=<name>; nil logs to logrus'
	// standard logger with component=vfiouser.
	Log *logrus.Entry
	// Limits bound each client's DMA maps (zero fields: the dma
	// defaults); Limits.MaxMaps is advertised as max_dma_maps (at most
	// 65535). Limits.Budget is the process-wide pool shared with the
	// other devices' servers; nil: per-client limits only.
	Limits dma.Limits
	// MaxPendingDMA bounds the server's own DMA_READ/DMA_WRITE requests
	// awaiting the client's reply (each holds up to MaxDataXfer bytes);
	// 0 means DefaultMaxPendingDMA. Past it a device's DMA fails ENOBUFS.
	MaxPendingDMA int
	// MaxDataXfer is the largest data count in one message, advertised as
	// max_data_xfer_size. 0 means DefaultMaxDataXfer; else 4096..64 MiB.
	MaxDataXfer int
	// Perm is the socket file's mode and group, whatever the umask; the
	// zero value is 0600 with the process's group.
	Perm unixsock.Perm
}

// sleepOrStop pauses after a failed accept; false if ctx ended meanwhile.
func sleepOrStop(ctx context.Context) bool {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("vfiouser: server closed")

// Server serves one Function on one socket, one client at a time.
type Server struct {
	cfg    Config
	log    *logrus.Entry
	lfd    int
	sockID fileID // the socket file we bound, so Close unlinks only ours

	texts      [][]byte // VERSION reply texts
	maxMsg     int
	dmaTimeout time.Duration

	limitRefusals atomic.Uint64 // DMA_MAPs refused by a limit

	// stopping is set once, by stop under mu (Close called or ctx done):
	// accept no more. Atomic so that the accept loop and the client's
	// reader can read it without mu.
	stopping atomic.Bool

	mu        sync.Mutex
	serving   bool
	closed    bool
	conn      *conn // current client, nil between clients
	serveDone chan struct{}

	closeOnce sync.Once
	closeErr  error

	// warns limits client-mistake warnings for the server's whole life,
	// not per connection: a reconnect loop gets no fresh budget.
	warns ratelog.Limiter

	stats struct{ clients, protocolErrors, panics atomic.Uint64 }
}

// Stats counts what a server has seen since Listen.
type Stats struct {
	Clients        uint64 // connections accepted
	ProtocolErrors uint64 // malformed or out-of-range client messages
	Panics         uint64 // handler panics recovered (each dropped its client)
	LimitRefusals  uint64 // DMA_MAPs refused by a limit (also ProtocolErrors)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Clients:        s.stats.clients.Load(),
		ProtocolErrors: s.stats.protocolErrors.Load(),
		Panics:         s.stats.panics.Load(),
		LimitRefusals:  s.limitRefusals.Load(),
	}
}

type fileID struct{ dev, ino uint64 }

// Listen binds and listens on cfg.Path now, so a client can connect as
// soon as it returns. A socket file that exists but has no listener (a
// crashed server's leftover) is an error naming the fix; a live one is
// reported as in use. Nothing is removed behind the user's back.
func Listen(cfg Config) (*Server, error) {
	if cfg.Path == "" {
		return nil, errors.New("vfiouser: listen: empty socket path")
	}
	cfg, log, err := cfg.prepare()
	if err != nil {
		return nil, err
	}
	fd, err := unixsock.Listen(cfg.Path, cfg.Perm)
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, explainInUse(cfg.Path)
		}
		return nil, fmt.Errorf("vfiouser: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(cfg.Path, &st); err != nil {
		unix.Close(fd)
		unix.Unlink(cfg.Path)
		return nil, fmt.Errorf("vfiouser: listen %s: stat: %w", cfg.Path, err)
	}
	return newServer(cfg, log, fd, fileID{uint64(st.Dev), st.Ino}), nil
}

// newServer returns a server on the listening socket lfd; Close removes
// the file at cfg.Path if it is still sockID.
func newServer(cfg Config, log *logrus.Entry, lfd int, sockID fileID) *Server {
	return &Server{
		cfg:    cfg,
		log:    log,
		lfd:    lfd,
		sockID: sockID,
		texts:  versionReplies(cfg.MaxDataXfer, cfg.dmaLimits().MaxMaps),
		maxMsg: cfg.MaxDataXfer + 4096,

		dmaTimeout: dmaReplyTimeout,
	}
}

// Path returns the socket path.
func (s *Server) Path() string { return s.cfg.Path }

// Serve accepts clients one at a time and serves each until it leaves;
// then it detaches the function, closes that client's DMA map (munmap,
// close fds) and accepts the next. It returns when ctx is done (ctx.Err())
// or the server is closed (ErrServerClosed); either way the current
// client is dropped first and the server accepts no more. Serve may be
// called once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed || s.stopping.Load():
		s.mu.Unlock()
		return ErrServerClosed
	case s.serving:
		s.mu.Unlock()
		return errors.New("vfiouser: Serve called twice")
	}
	s.serving = true
	s.serveDone = make(chan struct{})
	s.mu.Unlock()
	defer close(s.serveDone)

	stop := context.AfterFunc(ctx, s.stop)
	defer stop()
	s.log.Info("vfio-user server listening")
	defer s.log.Info("vfio-user server stopped")
	for {
		nfd, _, err := unix.Accept4(s.lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			if s.stopping.Load() {
				break
			}
			switch err {
			case unix.EINTR, unix.ECONNABORTED, unix.EAGAIN:
				continue
			}
			// EMFILE and friends: the listener stays; report and go on
			// after a pause rather than spin.
			s.log.WithError(err).Error("accept failed")
			if !sleepOrStop(ctx) {
				break
			}
			continue
		}
		s.mu.Lock()
		if s.stopping.Load() {
			s.mu.Unlock()
			unix.Close(nfd)
			break
		}
		c := newConn(s, nfd)
		s.conn = c
		s.mu.Unlock()

		c.serve()

		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		c.teardown()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return ErrServerClosed
}

// stop makes Serve return: no more accepts, the current client dropped.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping.Swap(true) {
		return
	}
	// shutdown wakes a blocked accept (EINVAL); the fd stays open until
	// Close, so no other goroutine can get its number meanwhile.
	unix.Shutdown(s.lfd, unix.SHUT_RDWR)
	if s.conn != nil {
		s.conn.shutdown()
	}
}

// Close stops accepting, drops the current client, waits for Serve to
// finish and removes the socket file (if it is still the one Listen
// created). It is idempotent and safe to call concurrently.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.mu.Lock()
		s.closed = true
		done := s.serveDone
		s.mu.Unlock()
		if done != nil {
			<-done
		}
		if err := unix.Close(s.lfd); err != nil {
			s.closeErr = fmt.Errorf("vfiouser: close %s: %w", s.cfg.Path, err)
		}
		var st unix.Stat_t
		if unix.Stat(s.cfg.Path, &st) == nil && (fileID{uint64(st.Dev), st.Ino}) == s.sockID {
			if err := unix.Unlink(s.cfg.Path); err != nil && s.closeErr == nil {
				s.closeErr = fmt.Errorf("vfiouser: remove %s: %w", s.cfg.Path, err)
			}
		}
	})
	return s.closeErr
}

// Errno is the errno carried by err (errors.As a unix.Errno), EINVAL when
// it carries none. It is what an error reply sends.
func Errno(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	return unix.EINVAL
}
