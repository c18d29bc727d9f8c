package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/sirupsen/logrus"
)

// Errors returned by Machine methods.
var (
	ErrAlreadyStarted = errors.New("vm: machine already started")
	ErrNotStarted     = errors.New("vm: machine not started")
	ErrExited         = errors.New("vm: QEMU has exited")
)

// Machine is one QEMU process and its QMP connection.
//
// Lifecycle (after firecracker-go-sdk's Machine): New validates, Start runs
// QEMU once and returns when QMP answers, Wait blocks until QEMU exits and
// may be called by any number of goroutines, Shutdown asks QEMU to quit over
// QMP and kills it if it does not exit in time, Kill kills at once. Cleanups
// (QMP disconnect, socket file removal) run in reverse order of setup when
// QEMU is gone. A Machine is not reusable.
type Machine struct {
	cfg  Config
	argv []string
	log  *logrus.Entry
	// Console and Stderr receive QEMU's stdout (the guest serial port) and
	// its stderr; set them before Start. nil discards.
	Console io.Writer
	Stderr  io.Writer
	// Stdin feeds the guest serial port (an interactive console); nil
	// reads nothing (/dev/null).
	Stdin io.Reader

	mu       sync.Mutex
	started  bool
	cmd      *exec.Cmd
	mon      *qmp.SocketMonitor
	cleanups []func() error
	cleaned  bool // runWait has taken the cleanups; later ones run at once

	exited  chan struct{} // closed by runWait when QEMU is gone
	waitErr error         // set before exited is closed
	wg      sync.WaitGroup
}

// New validates cfg and returns an unstarted Machine. log may be nil.
func New(cfg Config, log *logrus.Entry) (*Machine, error) {
	argv, err := cfg.Argv()
	if err != nil {
		return nil, err
	}
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	return &Machine{
		cfg:    cfg,
		argv:   argv,
		log:    log.WithField("component", "vm"),
		exited: make(chan struct{}),
	}, nil
}

// Argv returns the full QEMU command line.
func (m *Machine) Argv() []string { return append([]string(nil), m.argv...) }

// CommandLine returns the command line as one shell-quoted line, with the
// extra environment in front.
func (m *Machine) CommandLine() string { return ShellQuote(m.cfg.Binary.Env, m.argv) }

// Pid returns QEMU's process id, or 0 before Start.
func (m *Machine) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Start runs QEMU and connects to its QMP socket, retrying until the
// monitor answers, QEMU exits, or ctx ends; in the last two cases QEMU is
// killed and Start returns an error. Start may be called once.
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return ErrAlreadyStarted
	}
	m.started = true
	m.mu.Unlock()

	// A stale socket file would make QEMU fail to bind it.
	if err := os.Remove(m.cfg.QMPSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vm: remove stale QMP socket: %w", err)
	}
	cmd := exec.Command(m.argv[0], m.argv[1:]...)
	cmd.Env = append(os.Environ(), m.cfg.Binary.Env...)
	cmd.Stdin = m.Stdin
	cmd.Stdout = m.Console
	cmd.Stderr = m.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // Kill takes the whole group
		Pdeathsig: syscall.SIGKILL, // QEMU dies with us, even on a crash
	}
	if err := cmd.Start(); err != nil {
		m.closeExited(fmt.Errorf("vm: start QEMU: %w", err))
		return fmt.Errorf("vm: start QEMU: %w", err)
	}
	m.mu.Lock()
	m.cmd = cmd
	m.mu.Unlock()
	m.addCleanup(func() error {
		err := os.Remove(m.cfg.QMPSocket)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	})
	m.log.WithFields(logrus.Fields{"pid": cmd.Process.Pid, "qmp": m.cfg.QMPSocket}).Info("QEMU started")
	m.wg.Add(1)
	go m.runWait()

	mon, err := m.connectQMP(ctx)
	if err != nil {
		_ = m.Kill()
		return err
	}
	m.mu.Lock()
	m.mon = mon
	m.mu.Unlock()
	m.addCleanup(mon.Disconnect)
	m.log.WithField("qemu", mon.Version.String()).Info("QMP connected")
	return nil
}

// addCleanup registers fn to run when QEMU is gone, or runs it now if it
// already is.
func (m *Machine) addCleanup(fn func() error) {
	m.mu.Lock()
	if !m.cleaned {
		m.cleanups = append(m.cleanups, fn)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	if err := fn(); err != nil {
		m.log.WithError(err).Debug("cleanup failed")
	}
}

func (m *Machine) closeExited(err error) {
	m.waitErr = err
	close(m.exited)
}

// runWait reaps QEMU, then runs the cleanups in reverse order.
func (m *Machine) runWait() {
	defer m.wg.Done()
	err := m.cmd.Wait()
	m.log.WithError(err).Info("QEMU exited")
	m.mu.Lock()
	cleanups := m.cleanups
	m.cleanups = nil
	m.cleaned = true
	m.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		if cerr := cleanups[i](); cerr != nil {
			m.log.WithError(cerr).Debug("cleanup failed")
		}
	}
	if err != nil {
		err = fmt.Errorf("vm: QEMU: %w", err)
	}
	m.closeExited(err)
}

// connectQMP dials the QMP socket until QEMU has created it and finished
// the capabilities handshake.
func (m *Machine) connectQMP(ctx context.Context) (*qmp.SocketMonitor, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		mon, err := qmp.NewSocketMonitor("unix", m.cfg.QMPSocket, time.Second)
		if err == nil {
			if err = m.handshake(ctx, mon); err == nil {
				return mon, nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vm: QMP %s not up: %w (last error: %v)", m.cfg.QMPSocket, ctx.Err(), last)
		case <-m.exited:
			return nil, fmt.Errorf("vm: QEMU exited before QMP was up: %v", m.waitErr)
		case <-tick.C:
		}
	}
}

// handshake runs mon.Connect (banner + qmp_capabilities), which has no
// timeout of its own; closing the connection unblocks it.
func (m *Machine) handshake(ctx context.Context, mon *qmp.SocketMonitor) error {
	done := make(chan error, 1)
	go func() { done <- mon.Connect() }()
	select {
	case err := <-done:
		if err != nil {
			_ = mon.Disconnect()
		}
		return err
	case <-ctx.Done():
	case <-m.exited:
	}
	_ = mon.Disconnect()
	<-done
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return ErrExited
}

// Exited is closed when QEMU has exited and the cleanups have run.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// Wait blocks until QEMU exits or ctx ends. It returns QEMU's exit error
// (nil for exit status 0) or ctx's error. Safe for many callers.
func (m *Machine) Wait(ctx context.Context) error {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	select {
	case <-m.exited:
		m.wg.Wait()
		return m.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL to QEMU's process group and waits for it to be reaped.
// It is idempotent and safe after QEMU has exited.
func (m *Machine) Kill() error {
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	select {
	case <-m.exited:
	default:
		m.log.WithField("pid", cmd.Process.Pid).Info("killing QEMU")
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-m.exited
	}
	m.wg.Wait()
	return nil
}

// Shutdown asks QEMU to quit over QMP and waits for it to exit; if that
// fails or ctx ends first, QEMU is killed. It returns nil once QEMU is gone
// after a clean quit, or the reason it had to be killed.
func (m *Machine) Shutdown(ctx context.Context) error {
	select {
	case <-m.exited:
		return nil
	default:
	}
	_, err := m.Execute(ctx, "quit", nil)
	if err == nil {
		select {
		case <-m.exited:
			m.wg.Wait()
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	select {
	case <-m.exited: // it quit while we were asking
		m.wg.Wait()
		return nil
	default:
	}
	_ = m.Kill()
	return fmt.Errorf("vm: shutdown: killed QEMU: %w", err)
}

// Execute runs one QMP command with optional arguments and returns its
// "return" value. It gives up when ctx ends or QEMU exits.
func (m *Machine) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	m.mu.Lock()
	mon := m.mon
	m.mu.Unlock()
	if mon == nil {
		return nil, ErrNotStarted
	}
	req, err := json.Marshal(qmp.Command{Execute: command, Args: args})
	if err != nil {
		return nil, fmt.Errorf("vm: qmp %s: %w", command, err)
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := mon.Run(req)
		done <- result{out, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("vm: qmp %s: %w", command, ctx.Err())
	case <-m.exited:
		select {
		case r = <-done:
		default:
			return nil, fmt.Errorf("vm: qmp %s: %w", command, ErrExited)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("vm: qmp %s: %w", command, r.err)
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.out, &resp); err != nil {
		return nil, fmt.Errorf("vm: qmp %s: reply: %w", command, err)
	}
	return resp.Return, nil
}
