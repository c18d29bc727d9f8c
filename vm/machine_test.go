package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"
)

// The test binary doubles as a fake QEMU: with VM_FAKE_QEMU set it parses
// the arguments vm generates, serves QMP on the -qmp socket and behaves as
// the mode says.
func TestMain(m *testing.M) {
	if mode := os.Getenv("VM_FAKE_QEMU"); mode != "" {
		os.Exit(fakeQEMU(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeQEMU modes:
//
//	ok          serve QMP until "quit", then exit 0
//	exit1       print an error like QEMU's and exit 1 at once
//	noqmp       never create the QMP socket; sleep
//	poweroff    serve QMP and exit 0 by itself after 300 ms (guest poweroff)
//	ignorequit  answer "quit" but keep running
func fakeQEMU(mode string, args []string) int {
	var sock, devID string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-qmp":
			sock = strings.TrimPrefix(strings.Split(args[i+1], ",")[0], "unix:")
		case "-device":
			var d map[string]any
			if json.Unmarshal([]byte(args[i+1]), &d) == nil {
				devID, _ = d["id"].(string)
			}
		}
	}
	fmt.Println("fake console: booting\r")
	switch mode {
	case "exit1":
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -device vfio-user-pci: Failed to connect")
		return 1
	case "noqmp":
		time.Sleep(time.Hour)
		return 0
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu:", err)
		return 1
	}
	if mode == "poweroff" {
		go func() {
			time.Sleep(300 * time.Millisecond)
			fmt.Println("fake console: reboot: Power down\r")
			os.Exit(0)
		}()
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		if quit := serveFakeQMP(c, devID); quit && mode != "ignorequit" {
			return 0
		}
	}
}

func serveFakeQMP(c net.Conn, devID string) (quit bool) {
	defer c.Close()
	fmt.Fprintln(c, `{"QMP":{"version":{"qemu":{"micro":3,"minor":1,"major":11},"package":"fake"},"capabilities":["oob"]}}`)
	// Like QEMU, read a stream of JSON objects (go-qemu sends no newlines).
	dec := json.NewDecoder(c)
	for {
		var cmd struct {
			Execute string `json:"execute"`
		}
		if err := dec.Decode(&cmd); err != nil {
			return false
		}
		switch cmd.Execute {
		case "qmp_capabilities":
			fmt.Fprintln(c, `{"return":{}}`)
		case "query-pci":
			fmt.Fprintf(c, "{\"return\":%s}\n", strings.ReplaceAll(queryPCIReply(devID), "\n", ""))
		case "quit":
			fmt.Fprintln(c, `{"return":{}}`)
			fmt.Fprintln(c, `{"event":"SHUTDOWN","data":{"guest":false,"reason":"host-qmp-quit"},"timestamp":{"seconds":1,"microseconds":2}}`)
			return true
		default:
			fmt.Fprintf(c, "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command %s has not been found\"}}\n", cmd.Execute)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for QEMU's output goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func fakeMachine(t *testing.T, mode string) (*Machine, *syncBuffer, *syncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := baseConfig()
	cfg.Binary = Binary{Path: exe, Env: []string{"VM_FAKE_QEMU=" + mode}}
	cfg.QMPSocket = filepath.Join(dir, "qmp.sock")
	cfg.Devices = []Device{{ID: "td0", Socket: filepath.Join(dir, "td0.sock")}}
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	console, stderr := &syncBuffer{}, &syncBuffer{}
	m.Console, m.Stderr = console, stderr
	t.Cleanup(func() { _ = m.Kill() })
	return m, console, stderr
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestMachineLifecycle(t *testing.T) {
	leaktest.Check(t)
	m, console, _ := fakeMachine(t, "ok")
	if err := m.Wait(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Wait before Start = %v, want ErrNotStarted", err)
	}
	if err := m.Start(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("second Start = %v, want ErrAlreadyStarted", err)
	}
	if m.Pid() == 0 {
		t.Error("Pid() = 0 after Start")
	}
	dev, err := m.Device(ctxTimeout(t, 5*time.Second), "td0")
	if err != nil {
		t.Fatal(err)
	}
	if dev.VendorID != 0x1234 || dev.DeviceID != 0x7e57 || dev.Addr() != "01:00.0" {
		t.Errorf("Device(td0) = %+v", dev)
	}
	if _, err := m.Execute(ctxTimeout(t, 5*time.Second), "no-such-command", nil); err == nil ||
		!strings.Contains(err.Error(), "has not been found") {
		t.Errorf("Execute(no-such-command) error = %v", err)
	}

	// Many waiters see the same exit.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Wait(ctxTimeout(t, 10*time.Second))
		}()
	}
	if err := m.Shutdown(ctxTimeout(t, 10*time.Second)); err != nil {
		m.Kill() // the waiters return; join them before failing
		wg.Wait()
		t.Fatalf("Shutdown = %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("waiter %d: %v", i, err)
		}
	}
	if !strings.Contains(console.String(), "fake console: booting") {
		t.Errorf("console = %q", console.String())
	}
	if _, err := os.Stat(m.cfg.QMPSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("QMP socket left behind: %v", err)
	}
	if _, err := m.Execute(context.Background(), "query-pci", nil); err == nil {
		t.Error("Execute after exit succeeded")
	}
	if err := m.Kill(); err != nil {
		t.Errorf("Kill after exit = %v", err)
	}
}

func TestMachineStartFails(t *testing.T) {
	leaktest.Check(t)
	m, _, stderr := fakeMachine(t, "exit1")
	err := m.Start(ctxTimeout(t, 10*time.Second))
	if err == nil || !strings.Contains(err.Error(), "exited before QMP") {
		t.Fatalf("Start = %v, want exited before QMP", err)
	}
	if !strings.Contains(stderr.String(), "Failed to connect") {
		t.Errorf("stderr = %q", stderr.String())
	}
	if err := m.Wait(context.Background()); err == nil {
		t.Error("Wait = nil for a QEMU that exited 1")
	}
}

func TestMachineStartTimeout(t *testing.T) {
	leaktest.Check(t)
	m, _, _ := fakeMachine(t, "noqmp")
	start := time.Now()
	err := m.Start(ctxTimeout(t, 700*time.Millisecond))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start took %v", d)
	}
	select {
	case <-m.Exited():
	default:
		t.Fatal("QEMU still running after a failed Start")
	}
}

func TestMachineGuestPoweroff(t *testing.T) {
	leaktest.Check(t)
	m, console, _ := fakeMachine(t, "poweroff")
	if err := m.Start(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if !strings.Contains(console.String(), "Power down") {
		t.Errorf("console = %q", console.String())
	}
	// Shutdown of an exited machine is a no-op.
	if err := m.Shutdown(ctxTimeout(t, time.Second)); err != nil {
		t.Errorf("Shutdown after exit = %v", err)
	}
}

func TestMachineShutdownKillsWhenQuitIgnored(t *testing.T) {
	leaktest.Check(t)
	m, _, _ := fakeMachine(t, "ignorequit")
	if err := m.Start(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	err := m.Shutdown(ctxTimeout(t, 500*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Shutdown = %v, want killed", err)
	}
	select {
	case <-m.Exited():
	default:
		t.Fatal("QEMU still running after Shutdown")
	}
}

func TestWaitContext(t *testing.T) {
	leaktest.Check(t)
	m, _, _ := fakeMachine(t, "ok")
	if err := m.Start(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(ctxTimeout(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait = %v, want deadline exceeded", err)
	}
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(context.Background()); err == nil {
		t.Error("Wait after Kill = nil, want the kill signal")
	}
}
