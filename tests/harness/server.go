package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ReadyPrefix starts the one line myriemu prints on stdout once every
// socket listens (contracts.md, cmd/myriemu).
const ReadyPrefix = "myriemu: ready"

// Server is a running myriemu process.
type Server struct {
	Name string
	Argv []string

	cmd  *exec.Cmd
	log  *lockedBuffer // stdout and stderr, interleaved
	done chan struct{} // closed when the process is reaped
	err  error         // exit error, set before done closes
	once sync.Once
}

// lockedBuffer collects output from several goroutines; it also mirrors
// it to an optional file and hands each complete line to onLine.
type lockedBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	file    io.Writer
	onLine  func(line string) // called with mu held; must not block
	partial []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	if l.file != nil {
		_, _ = l.file.Write(p)
	}
	if l.onLine != nil {
		l.partial = append(l.partial, p...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			l.onLine(strings.TrimRight(string(l.partial[:i]), "\r"))
			l.partial = l.partial[i+1:]
		}
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartServer runs "myriemu args..." and waits (up to readyTimeout) for its
// readiness line. The process gets its own process group and dies with the
// caller (Pdeathsig). logFile, if not nil, receives a copy of its output.
// On any error the process is already stopped.
func (e *Env) StartServer(ctx context.Context, name string, args []string, readyTimeout time.Duration, logFile io.Writer) (*Server, error) {
	bin, err := e.MyriemuBinary(ctx)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Name: name,
		Argv: append([]string{bin}, args...),
		log:  &lockedBuffer{file: logFile},
		done: make(chan struct{}),
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), EnvRunTag+"="+e.Tag)
	cmd.Stderr = s.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("harness: server %s: %w", name, err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start server %s: %w", name, err)
	}
	s.cmd = cmd

	ready := make(chan string, 1)
	copied := make(chan struct{})
	go func() { // runCopy: stdout into the log, noticing the readiness line
		defer close(copied)
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(s.log, line)
			if !sent && strings.HasPrefix(line, ReadyPrefix) {
				ready <- line
				sent = true
			}
		}
		_, _ = io.Copy(s.log, stdout)
	}()
	go func() { // runWait: reap after stdout is drained (exec.Cmd's rule)
		<-copied
		s.err = cmd.Wait()
		close(s.done)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("harness: server %s exited before its readiness line (%v); its output:\n%s",
			name, s.err, s.Log())
	case <-timer.C:
		s.Stop()
		return nil, fmt.Errorf("harness: server %s printed no %q line within %v; its output:\n%s",
			name, ReadyPrefix, readyTimeout, s.Log())
	case <-ctx.Done():
		s.Stop()
		return nil, fmt.Errorf("harness: server %s: %w", name, ctx.Err())
	}
}

// Log returns everything the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// Pid is the server's process id (for /proc/<pid>/stat: its CPU time).
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Exited is closed when the server process has been reaped.
func (s *Server) Exited() <-chan struct{} { return s.done }

// Stop sends SIGTERM, waits up to 5 s, then SIGKILLs the process group. It
// returns the exit error of a server that had already died or did not stop
// on SIGTERM; nil for a clean stop. Idempotent.
func (s *Server) Stop() error {
	var err error
	s.once.Do(func() {
		select {
		case <-s.done:
			if s.err != nil {
				err = fmt.Errorf("server %s had exited: %w", s.Name, s.err)
			}
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			if s.err != nil {
				err = fmt.Errorf("server %s: exit after SIGTERM: %w", s.Name, s.err)
			}
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			err = fmt.Errorf("server %s did not exit within 5 s of SIGTERM; killed", s.Name)
		}
	})
	return err
}
