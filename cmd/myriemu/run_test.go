package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tdabi "github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// TestMain lets TestSignal run this test binary as the real command.
func TestMain(m *testing.M) {
	if path := os.Getenv("MYRIEMU_TEST_DIAL"); path != "" {
		os.Exit(dialExit(path))
	}
	if os.Getenv("MYRIEMU_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"myriemu"}, strings.Fields(os.Getenv("MYRIEMU_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRunCommands(t *testing.T) {
	tests := []struct {
		args   string
		code   int
		stdout string // substring wanted on stdout ("" = stdout empty)
		stderr string // substring wanted on stderr ("" = stderr empty)
	}{
		{args: "", code: 2, stderr: "Usage:"},
		{args: "help", code: 0, stdout: "myriemu serve --device KIND,socket=PATH"},
		{args: "help serve", code: 0, stdout: "Exit status:\n  0  stopped by SIGTERM, SIGINT or SIGHUP"},
		{args: "serve --device myri10ge,socket=/tmp/x.sock,slices=0", code: 2,
			stderr: "myriemu serve: --device \"myri10ge,socket=/tmp/x.sock,slices=0\": slices=0: want a number 1..32\nRun 'myriemu help serve' for usage."},
		{args: "serve --device myri10ge,socket=/tmp/x.sock,mac=garbage", code: 2, stderr: "mac=garbage: not a MAC address"},
		{args: "serve --device testdev,socket=/tmp/x.sock --socket-mode 0800", code: 2, stderr: "--socket-mode"},
		{args: "serve --device testdev,socket=/tmp/x.sock --socket-group no-such-group-here", code: 2, stderr: "--socket-group"},
		{args: "serve --device testdev,fd=1", code: 2, stderr: "want a descriptor number >= 3"},
		{args: "--help", code: 0, stdout: "Run 'myriemu help serve'"},
		{args: "help serve", code: 0, stdout: "testdev    generic test function 1234:7e57"},
		{args: "help nope", code: 2, stderr: `no help for "nope"`},
		{args: "version", code: 0, stdout: "myriemu devel"},
		{args: "frobnicate", code: 2, stderr: `unknown command "frobnicate"`},
		{args: "serve", code: 2, stderr: "myriemu serve: no --device given\nRun 'myriemu help serve' for usage."},
		{args: "serve --device nic", code: 2, stderr: `unknown kind "nic"`},
		{args: "serve -h", code: 0, stdout: "-log-format"},
		{args: "serve --socket /nonexistent-dir/x.sock --device testdev", code: 1,
			stderr: "myriemu: device testdev0: vfiouser: listen /nonexistent-dir/x.sock: bind: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr syncBuffer
			a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
			code := a.run(context.Background(), strings.Fields(tt.args))
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			for _, c := range []struct {
				name, got, want string
			}{{"stdout", stdout.String(), tt.stdout}, {"stderr", stderr.String(), tt.stderr}} {
				if c.want == "" && c.got != "" && c.name == "stdout" {
					t.Errorf("%s = %q, want nothing", c.name, c.got)
				}
				if !strings.Contains(c.got, c.want) {
					t.Errorf("%s = %q, want it to contain %q", c.name, c.got, c.want)
				}
			}
		})
	}
}

var readyRE = regexp.MustCompile(`^myriemu: ready( device=\S+ socket=\S+)+$`)

// startServe runs serve in-process with args; it returns the readiness
// line, the function that stops it (like SIGTERM) and waits for the exit
// status, and stderr.
func startServe(t *testing.T, args ...string) (ready string, stop func() int, stderr *syncBuffer) {
	t.Helper()
	pr, pw := io.Pipe()
	stderr = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	shutdowns := 0
	a := &app{stdout: pw, stderr: stderr, kinds: deviceKinds(), onShutdown: func() { shutdowns++ }}
	codec := make(chan int, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		code := a.run(ctx, args)
		pw.Close()
		codec <- code
	})
	lines := make(chan string)
	wg.Go(func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, pr)
		close(lines)
	})
	// Both goroutines are joined on every way out, a t.Fatal included.
	t.Cleanup(func() {
		cancel()
		for range lines {
		}
		wg.Wait()
	})
	var extra []string
	stop = func() int {
		cancel()
		code := <-codec
		for l := range lines {
			extra = append(extra, l)
		}
		if len(extra) > 0 {
			t.Errorf("more stdout after the readiness line: %q", extra)
		}
		if shutdowns != 1 {
			t.Errorf("onShutdown ran %d times, want 1", shutdowns)
		}
		return code
	}
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("serve exited before its readiness line (%d); stderr:\n%s", <-codec, stderr)
		}
		return l, stop, stderr
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("no readiness line in 10 s; stderr:\n%s", stderr)
	}
	return "", nil, nil
}

func TestServe(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	ready, stop, stderr := startServe(t, "serve", "--socket", a, "--device", "testdev",
		"--device", "testdev,socket="+b+",name=td9", "--log-format", "json", "--log-level", "debug")
	want := fmt.Sprintf("myriemu: ready device=testdev0 socket=%s device=td9 socket=%s", a, b)
	if ready != want || !readyRE.MatchString(ready) {
		t.Errorf("readiness line\n%q, want\n%q", ready, want)
	}
	for _, path := range []string{a, b} {
		readIDs(t, path)
	}
	// Reconnecting works (QEMU hot-unplug/plug).
	readIDs(t, a)

	start := time.Now()
	if code := stop(); code != 0 {
		t.Errorf("exit %d after the signal, want 0; stderr:\n%s", code, stderr)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("shutdown took %v, want < 1 s", d)
	}
	for _, path := range []string{a, b} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s still there after shutdown: %v", path, err)
		}
	}
	logs := stderr.String()
	for _, s := range []string{`"component":"myriemu"`, `"device":"td9"`, `"component":"vfiouser"`, `"msg":"ready"`, `"level":"debug"`} {
		if !strings.Contains(logs, s) {
			t.Errorf("JSON logs lack %s:\n%s", s, logs)
		}
	}
}

// readIDs connects a fake QEMU to path and checks the testdev identity in
// config space and in the BAR0 ID register.
func readIDs(t *testing.T, path string) {
	t.Helper()
	c, err := vfiousertest.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("client saw protocol violations: %v", err)
		}
	}()
	if err := c.Negotiate(); err != nil {
		t.Fatal(err)
	}
	id, err := c.ReadConfig32(0)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	if err := c.ReadRegion(tdabi.RegsBAR, tdabi.RegID, b[:]); err != nil {
		t.Fatal(err)
	}
	if bar := binary.LittleEndian.Uint32(b[:]); id != tdabi.IDValue || bar != tdabi.IDValue {
		t.Errorf("%s: config ID %#x, BAR0 ID %#x, want %#x", path, id, bar, tdabi.IDValue)
	}
}

func TestServeSocketInUseOrStale(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	_, stop, _ := startServe(t, "serve", "--socket", live, "--device", "testdev")
	defer stop()

	stale := filepath.Join(dir, "stale.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd) // the file stays: a crashed server's leftover

	ok := filepath.Join(dir, "ok.sock")
	tests := []struct {
		name, socket, want string
	}{
		{"stale", stale, "stale socket file (no server is listening on it); remove it: rm " + stale},
		{"in use", live, "socket in use by a running server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
			// The first device listens, the second fails: nothing is left behind.
			code := a.run(context.Background(), []string{"serve", "--socket", ok, "--device", "testdev",
				"--socket", tt.socket, "--device", "testdev"})
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.want)
			}
			if stdout.String() != "" {
				t.Errorf("stdout %q, want no readiness line", stdout.String())
			}
			if _, err := os.Lstat(ok); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the first device's socket was left behind: %v", err)
			}
		})
	}
	if _, err := os.Lstat(stale); err != nil {
		t.Errorf("the stale socket was removed behind the user's back: %v", err)
	}
}

// TestSignal runs the real command (this test binary, see TestMain) and
// stops it with SIGTERM, as a supervisor does (SIGINT and SIGHUP alike):
// exit 0 promptly (well within a supervisor's stop timeout; a loaded CI
// machine took 1.05 s once, so the bound is 10 s), no socket file left behind.
func TestSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "td.sock")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			// GORACE: under -race the runtime sleeps 1 s at exit by default.
			cmd.Env = append(os.Environ(), "MYRIEMU_TEST_RUN_MAIN=1", "GORACE=atexit_sleep_ms=0",
				"MYRIEMU_TEST_ARGS=serve --log-level trace --socket "+sock+" --device testdev")
			var stderr syncBuffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			sc := bufio.NewScanner(out)
			if !sc.Scan() {
				cmd.Wait()
				t.Fatalf("no readiness line; stderr:\n%s", stderr.String())
			}
			if line := sc.Text(); line != "myriemu: ready device=testdev0 socket="+sock {
				t.Errorf("readiness line %q", line)
			}
			readIDs(t, sock)
			start := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(out)
			err = cmd.Wait()
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("exit took %v after %v, want < 10 s; stderr:\n%s", d, sig, stderr.String())
			}
			if err != nil {
				t.Errorf("exit after %v: %v; stderr:\n%s", sig, err, stderr.String())
			}
			if len(rest) > 0 {
				t.Errorf("more stdout after the readiness line: %q", rest)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket still there after %v: %v", sig, err)
			}
		})
	}
}

// TestServeMyri10geWithCapture serves two NICs on one switch with a
// capture, and checks the identity through config space and that the
// capture is a pcap file once serve has stopped.
func TestServeMyri10geWithCapture(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	pcap := filepath.Join(dir, "wire.pcap")
	ready, stop, stderr := startServe(t, "serve",
		"--device", "myri10ge,socket="+a+",mac=00:60:dd:00:00:0a",
		"--device", "myri10ge,socket="+b+",slices=4", "--pcap", pcap)
	if want := "myriemu: ready device=myri10ge0 socket=" + a + " device=myri10ge1 socket=" + b; ready != want {
		t.Errorf("readiness line %q, want %q", ready, want)
	}
	c, err := vfiousertest.Dial(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Negotiate(); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadConfig32(0)
	if err != nil {
		t.Fatal(err)
	}
	if got != 0x000814c1 {
		t.Errorf("vendor/device %#08x, want 0x000814c1", got)
	}
	c.Close()
	if code := stop(); code != 0 {
		t.Fatalf("serve exit %d; stderr:\n%s", code, stderr)
	}
	data, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	// A nanosecond pcap header: magic a1b23c4d (little-endian on disk).
	if len(data) < 24 || binary.LittleEndian.Uint32(data) != 0xa1b23c4d {
		t.Errorf("capture %d bytes, not a nanosecond pcap file", len(data))
	}
}

func TestFirmwareCommand(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr syncBuffer
	a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
	if code := a.run(context.Background(), []string{"firmware", "--out", dir}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, name := range []string{"myri10ge_eth_z8e.dat", "myri10ge_rss_ethp_z8e.dat"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// The driver's checks (§3.6): a multiple of 8, header pointer at
		// 0x3C, header inside the file.
		hdr := binary.BigEndian.Uint32(b[0x3C:])
		if len(b)%8 != 0 || hdr%4 != 0 || int(hdr)+0xC0 > len(b) || string(b[hdr+4:hdr+8]) != "ETH " {
			t.Errorf("%s: not a firmware image the driver accepts", name)
		}
	}
	if code := a.run(context.Background(), []string{"firmware"}); code != 2 {
		t.Errorf("firmware without --out: exit %d, want 2", code)
	}
}
