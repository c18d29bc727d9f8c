package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Limits of the control socket.
const (
	// DefaultMaxClients is how many clients may be connected at once; one
	// more gets a GenericError and is closed.
	DefaultMaxClients = 128
	// MaxMessage is the longest JSON value a client may send: go-qemu's
	// scanner reads at most 64 KiB lines, so nothing longer is legitimate.
	MaxMessage = 64 << 10
	// eventQueue is each client's queue of events not yet written; a
	// client that does not read loses events (counted, then summarised
	// in one EVENTS_DROPPED event), never stalls anyone else.
	eventQueue = 256
	// writeTimeout bounds how long a reply may wait for a client that
	// does not read; after it the client is closed.
	writeTimeout = 10 * time.Second
	// acceptBacklog is the control socket's listen backlog.
	acceptBacklog = 128
	// faultEventsPerSecond bounds FAULT_INJECTED events; the rest are
	// counted and summarised once a second.
	faultEventsPerSecond = 20
)

// Config configures a Server.
type Config struct {
	Path       string
	Targets    []Target
	Faults     *fault.Set // nil: fault commands answer GenericError
	Ports      Ports      // nil: port commands answer GenericError
	Version    string     // myriemu's version, for the greeting and query-version
	Log        *logrus.Entry
	MaxClients int
	// WriteTimeout is how long one line may wait for a client that does
	// not read before that client is closed (zero: 10 s).
	WriteTimeout time.Duration
	// Perm is the socket file's mode and group (zero: 0600, the
	// process's group), as serve's --socket-mode and --socket-group say.
	Perm unixsock.Perm
}

// Server is a listening control socket.
type Server struct {
	cfg     Config
	log     *logrus.Entry
	ln      *net.UnixListener
	targets map[string]Target
	cmds    map[string]command

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool

	wg   sync.WaitGroup
	stop chan struct{}

	faultMu         sync.Mutex
	faultWindow     time.Time
	faultInWindow   int
	faultSuppressed uint64
	faultLast       fault.Firing
}

// Listen creates the socket at cfg.Path with mode 0600 (a stale socket
// file of a dead server is replaced; a live one is an error).
func Listen(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	s := &Server{cfg: cfg, log: cfg.Log.WithField("component", "control"),
		targets: map[string]Target{}, clients: map[*client]struct{}{}, stop: make(chan struct{})}
	for _, t := range cfg.Targets {
		if _, dup := s.targets[t.Name()]; dup {
			return nil, fmt.Errorf("control: device %q given twice", t.Name())
		}
		s.targets[t.Name()] = t
	}
	s.cmds = s.commands()
	if c, err := net.Dial("unix", cfg.Path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control: %s: a server is already listening there", cfg.Path)
	}
	if fi, err := os.Lstat(cfg.Path); err == nil && fi.Mode().Type() == os.ModeSocket {
		os.Remove(cfg.Path) // stale: nobody answered
	}
	// The mode is set between bind and listen: no window in which
	// another user could connect.
	ln, err := unixsock.ListenUnix(cfg.Path, cfg.Perm)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	// unixsock's backlog suits one vfio-user client at a time; a control
	// socket takes bursts of clients (a CI starting many ctl at once).
	// listen(2) again on a listening socket only sets its backlog.
	if rc, err := ln.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Listen(int(fd), acceptBacklog) })
	}
	s.ln = ln
	if cfg.Faults != nil {
		cfg.Faults.Watch(s.faultFired)
	}
	return s, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.cfg.Path }

// Serve accepts clients until ctx is done or Close is called; it then
// closes every client, waits for their goroutines and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.wg.Go(s.runFaultSummary)
	s.log.WithField("socket", s.cfg.Path).Info("control socket listening")
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				break
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			s.log.WithError(err).Error("accept failed")
			select {
			case <-time.After(100 * time.Millisecond):
			case <-s.stop:
			}
			continue
		}
		c := newClient(s, conn)
		s.mu.Lock()
		full := len(s.clients) >= s.cfg.MaxClients
		if !full && !s.closed {
			s.clients[c] = struct{}{}
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			conn.Close()
			break
		}
		if full {
			// QEMU has no limit; we answer as it answers any refusal.
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write(errorLine(nil, classGeneric, "too many control clients"))
			conn.Close()
			s.log.WithField("max", s.cfg.MaxClients).Warn("control client refused: too many clients")
			continue
		}
		s.wg.Go(c.run)
	}
	s.wg.Wait()
	return nil
}

// Close stops accepting, closes every client and removes the socket file.
// It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	for c := range s.clients {
		c.conn.Close()
	}
	s.mu.Unlock()
	return s.ln.Close() // removes the socket file
}

// Clients returns how many clients are connected.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Emit sends an event to every client in command mode. It never blocks:
// a client whose queue is full loses the event (counted and summarised).
// data must encode as a JSON object (go-qemu requires it).
func (s *Server) Emit(event string, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	now := time.Now()
	line, err := json.Marshal(eventMsg{Event: event, Data: data,
		Timestamp: timestamp{Seconds: now.Unix(), Microseconds: int64(now.Nanosecond() / 1000)}})
	if err != nil {
		s.log.WithError(err).WithField("event", event).Error("event not encodable; dropped")
		return
	}
	line = append(line, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		c.queueEvent(line)
	}
}

type eventMsg struct {
	Event     string         `json:"event"`
	Data      map[string]any `json:"data"`
	Timestamp timestamp      `json:"timestamp"`
}

type timestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

// faultFired turns firings into FAULT_INJECTED events, at most
// faultEventsPerSecond a second; the rest are summarised by
// runFaultSummary. It runs on the door's goroutine and never blocks long.
func (s *Server) faultFired(f fault.Firing) {
	s.faultMu.Lock()
	now := time.Now()
	if now.Sub(s.faultWindow) >= time.Second {
		s.faultWindow, s.faultInWindow = now, 0
	}
	if s.faultInWindow >= faultEventsPerSecond {
		s.faultSuppressed++
		s.faultLast = f
		s.faultMu.Unlock()
		return
	}
	s.faultInWindow++
	s.faultMu.Unlock()
	s.Emit("FAULT_INJECTED", firingData(f))
}

func firingData(f fault.Firing) map[string]any {
	return map[string]any{"rule": f.Rule, "fault": f.Fault, "door": f.Door, "device": f.Device,
		"op": f.Op, "seq": f.Seq, "args": f.Args}
}

// runFaultSummary emits one FAULT_INJECTED summary a second while
// firings are being suppressed.
func (s *Server) runFaultSummary() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.faultMu.Lock()
		n, last := s.faultSuppressed, s.faultLast
		s.faultSuppressed = 0
		s.faultMu.Unlock()
		if n > 0 {
			d := firingData(last)
			d["summarised"] = n
			s.Emit("FAULT_INJECTED", d)
		}
	}
}

// client is one connection.
type client struct {
	srv  *Server
	conn *net.UnixConn
	log  *logrus.Entry

	writeMu sync.Mutex // one JSON line at a time

	// events: set once the client has sent a command after negotiation
	// (go-qemu reads the negotiation reply with a decoder whose buffered
	// bytes it then throws away, so nothing may follow that reply until
	// the client speaks again).
	events  atomic.Bool
	queue   chan []byte
	dropped atomic.Uint64
	done    chan struct{}
	after   []func() // run once the current reply is written (reader only)
}

// afterReply runs fn once the reply to the current command is written:
// events a command causes follow its reply, as QEMU's do.
func (c *client) afterReply(fn func()) { c.after = append(c.after, fn) }

func newClient(s *Server, conn *net.UnixConn) *client {
	return &client{srv: s, conn: conn, log: s.log, queue: make(chan []byte, eventQueue), done: make(chan struct{})}
}

func (c *client) queueEvent(line []byte) {
	if !c.events.Load() {
		return
	}
	select {
	case c.queue <- line:
	default:
		c.dropped.Add(1)
	}
}

// run serves the client until it leaves or the server closes.
func (c *client) run() {
	defer func() {
		c.conn.Close()
		c.srv.mu.Lock()
		delete(c.srv.clients, c)
		c.srv.mu.Unlock()
	}()
	c.log.Debug("control client connected")
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(c.done)
	wg.Go(c.runEvents)

	if err := c.write(greeting(c.srv.cfg.Version)); err != nil {
		return
	}
	r := bufio.NewReaderSize(c.conn, 4096)
	fr := framer{max: MaxMessage}
	negotiated := false
	for {
		b, err := r.ReadByte()
		if err != nil {
			if fr.pending() && !errors.Is(err, net.ErrClosed) {
				c.log.Debug("control client left in the middle of a message")
			}
			return
		}
		var reply []byte
		switch fr.feed(b) {
		case frameNone:
			continue
		case frameTooLong:
			reply = errorLine(nil, classGeneric, fmt.Sprintf("JSON message longer than %d bytes", MaxMessage))
		case frameTooDeep:
			reply = errorLine(nil, classGeneric, "JSON nesting too deep")
		case frameJunk:
			reply = errorLine(nil, classGeneric, "JSON parse error: input outside a JSON object")
		case frameValue:
			reply = c.handle(fr.take(), &negotiated)
		}
		if err := c.write(reply); err != nil {
			return
		}
		for _, fn := range c.after {
			fn()
		}
		c.after = c.after[:0]
	}
}

// runEvents writes queued events until the client is done.
func (c *client) runEvents() {
	for {
		select {
		case <-c.done:
			return
		case line := <-c.queue:
			if n := c.dropped.Swap(0); n > 0 {
				now := time.Now()
				l, _ := json.Marshal(eventMsg{Event: "EVENTS_DROPPED", Data: map[string]any{"count": n},
					Timestamp: timestamp{now.Unix(), int64(now.Nanosecond() / 1000)}})
				if c.write(append(l, '\n')) != nil {
					return
				}
			}
			if c.write(line) != nil {
				return
			}
		}
	}
}

// write sends one line; a client that does not take it within
// writeTimeout is closed.
func (c *client) write(line []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	d := c.srv.cfg.WriteTimeout
	if d <= 0 {
		d = writeTimeout
	}
	c.conn.SetWriteDeadline(time.Now().Add(d))
	_, err := c.conn.Write(line)
	if err != nil {
		c.conn.Close()
	}
	return err
}

func greeting(version string) []byte {
	major, minor, micro := parseVersion(version)
	g := map[string]any{"QMP": map[string]any{
		"version": map[string]any{
			"qemu":    map[string]int{"major": major, "minor": minor, "micro": micro},
			"package": "myriemu " + version,
		},
		"capabilities": []string{},
	}}
	b, _ := json.Marshal(g)
	return append(b, '\n')
}

// parseVersion reads vMAJOR.MINOR.MICRO; anything else is 0.0.0.
func parseVersion(v string) (major, minor, micro int) {
	if n, _ := fmt.Sscanf(v, "v%d.%d.%d", &major, &minor, &micro); n != 3 {
		return 0, 0, 0
	}
	return
}
