package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// childServer is the "myriemu serve" every guest's cards share, run as a
// child process of run: its own process group (a Ctrl-C on the terminal
// reaches run only, which stops everything in order) and it dies with run
// whatever happens (Pdeathsig).
type childServer struct {
	cmd  *exec.Cmd
	log  *serverLog
	done chan struct{} // closed once reaped; err is set before
	err  error
	once sync.Once
}

// serverLog keeps serve's stderr (JSON log lines) in memory and in a file.
type serverLog struct {
	mu   sync.Mutex
	b    bytes.Buffer
	file io.Writer
}

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	if l.file != nil {
		_, _ = l.file.Write(p)
	}
	return len(p), nil
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer runs "exe args..." and waits for serve's readiness line.
// On error the process is gone and the error carries its output.
func startServer(ctx context.Context, exe string, args []string, logFile io.Writer) (*childServer, error) {
	s := &childServer{log: &serverLog{file: logFile}, done: make(chan struct{})}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = s.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("server: start %s: %w", exe, err)
	}
	s.cmd = cmd
	ready := make(chan struct{})
	copied := make(chan struct{})
	go func() { // runCopy: stdout carries the one readiness line
		defer close(copied)
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			if !seen && strings.HasPrefix(sc.Text(), "myriemu: ready") {
				seen = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { // runWait: reap after stdout is drained (exec.Cmd's rule)
		<-copied
		s.err = cmd.Wait()
		close(s.done)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("server exited before it was ready (%v):\n%s", s.err, indentText(s.log.String()))
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("server not ready within 30 s:\n%s", indentText(s.log.String()))
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// stop sends SIGTERM, waits up to 5 s, then kills the process group.
// It returns the server's exit error (nil for a clean stop). Idempotent.
func (s *childServer) stop() error {
	s.once.Do(func() {
		select {
		case <-s.done:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	})
	<-s.done
	return s.err
}

// logEntries returns serve's JSON log lines, decoded; other lines are
// skipped.
func logEntries(log string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// nicCounters returns, per device, the counters of its last detach (the
// NIC logs them when its QEMU goes away).
func nicCounters(entries []map[string]any) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, e := range entries {
		dev, _ := e["device"].(string)
		if msg, _ := e["msg"].(string); dev == "" || !strings.HasSuffix(msg, "detached") {
			continue
		}
		c := map[string]uint64{}
		for k, v := range e {
			if f, ok := v.(float64); ok && f >= 0 {
				c[k] = uint64(f)
			}
		}
		out[dev] = c
	}
	return out
}

// waitDetached waits until every device in names has logged its detach,
// or limit passes.
func (s *childServer) waitDetached(names []string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		got := nicCounters(logEntries(s.log.String()))
		all := true
		for _, n := range names {
			_, ok := got[n]
			all = all && ok
		}
		if all || time.Now().After(deadline) {
			return
		}
		select {
		case <-s.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serverProblems returns serve's warnings and errors, as "level: msg
// key=value ..." lines.
func serverProblems(entries []map[string]any) []string {
	var out []string
	for _, e := range entries {
		lv, _ := e["level"].(string)
		if lv != "warning" && lv != "error" && lv != "fatal" && lv != "panic" {
			continue
		}
		msg, _ := e["msg"].(string)
		var keys []string
		for k := range e {
			if k != "level" && k != "msg" && k != "time" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s", lv, msg)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%v", k, e[k])
		}
		out = append(out, b.String())
	}
	return out
}

// faultLog asks the control socket (serve --control) for the faults that
// fired, with go-qemu's QMP client; the reply's "return" is returned as
// JSON text.
func faultLog(path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no control socket at %s (this serve has no --control yet?): %w", path, err)
	}
	mon, err := qmp.NewSocketMonitor("unix", path, 2*time.Second)
	if err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- mon.Connect() }()
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		_ = mon.Disconnect()
		<-done
		return "", fmt.Errorf("control socket %s: no QMP greeting within 5 s", path)
	}
	if err != nil {
		return "", err
	}
	defer mon.Disconnect()
	type reply struct {
		out []byte
		err error
	}
	got := make(chan reply, 1)
	go func() {
		out, err := mon.Run([]byte(`{"execute":"query-fault-log"}`))
		got <- reply{out, err}
	}()
	var r reply
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		_ = mon.Disconnect()
		r = <-got
		if r.err == nil {
			r.err = fmt.Errorf("no reply within 5 s")
		}
	}
	if r.err != nil {
		return "", fmt.Errorf("query-fault-log: %w", r.err)
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.out, &resp); err != nil {
		return "", fmt.Errorf("query-fault-log: %w", err)
	}
	return string(resp.Return), nil
}

func indentText(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (nothing)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
