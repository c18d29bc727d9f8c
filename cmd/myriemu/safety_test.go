package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/myriemu/myriemu/device/testdev"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// dialExit connects to the UNIX socket path and returns the exit status
// TestMain uses for MYRIEMU_TEST_DIAL: 0 connected, 13 EACCES, 1 other.
func dialExit(path string) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	switch {
	case err == nil:
		return 0
	case errors.Is(err, unix.EACCES):
		return 13
	}
	return 1
}

// openDir returns a temporary directory every user can search, so only a
// socket's own mode decides who connects.
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// dialAs runs a copy of this test binary as uid/gid to connect to path
// and returns its exit status (0 connected, 13 EACCES).
func dialAs(t *testing.T, uid, gid uint32, path string) int {
	t.Helper()
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(openDir(t), "dialer")
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"MYRIEMU_TEST_DIAL=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestSocketsUnderUmask000 runs the real command under umask 000 (issue 8
// case 4): its sockets are still 0600, another local user cannot connect,
// the owner can.
func TestSocketsUnderUmask000(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a second user's client")
	}
	dir := openDir(t)
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	cmd := exec.Command("/bin/sh", "-c", `umask 000 && exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "MYRIEMU_TEST_RUN_MAIN=1", "GORACE=atexit_sleep_ms=0",
		"MYRIEMU_TEST_ARGS=serve --device testdev,socket="+a+" --device testdev,socket="+b)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	if !bufio.NewScanner(out).Scan() {
		t.Fatalf("no readiness line; stderr:\n%s", stderr.String())
	}
	// The control: a file this shell creates under the same umask is 0666.
	probe := filepath.Join(dir, "probe")
	if err := exec.Command("/bin/sh", "-c", `umask 000 && : > "$0"`, probe).Run(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(probe); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("umask 000 not in effect for the child: %v %v", fi.Mode(), err)
	}
	for _, path := range []string{a, b} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v under umask 000, want a 0600 socket", path, fi.Mode())
		}
		if code := dialAs(t, 65534, 65534, path); code != 13 {
			t.Errorf("%s: uid 65534's connect exited %d, want 13 (EACCES)", path, code)
		}
		readIDs(t, path) // the owner is served
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
}

// TestSocketModeAndGroup: a supervisor's group gets in with --socket-mode
// 0660 --socket-group.
func TestSocketModeAndGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the socket another group and run its client")
	}
	leaktest.Check(t)
	sock := filepath.Join(openDir(t), "g.sock")
	_, stop, stderr := startServe(t, "serve", "--device", "testdev,socket="+sock, "--socket-mode", "0660", "--socket-group", "65534")
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o660 || st.Gid != 65534 {
		t.Errorf("mode %#o gid %d, want 0660 and 65534", st.Mode&0o777, st.Gid)
	}
	if code := dialAs(t, 12345, 65534, sock); code != 0 {
		t.Errorf("a member of the socket's group could not connect (exit %d)", code)
	}
	if code := dialAs(t, 12345, 12345, sock); code != 13 {
		t.Errorf("a user outside the group: exit %d, want 13 (EACCES)", code)
	}
	if code := stop(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr)
	}
}

// TestPcapSymlinkRefused (issue 8 case 5): --pcap naming a symlink is
// refused, exit 1, and the link's target is untouched.
func TestPcapSymlinkRefused(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	target, link := filepath.Join(dir, "precious"), filepath.Join(dir, "wire.pcap")
	if err := os.WriteFile(target, []byte("someone else's file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "td.sock")
	var stdout, stderr syncBuffer
	a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
	code := a.run(context.Background(), []string{"serve", "--device", "testdev,socket=" + sock, "--pcap", link})
	if code != 1 || !strings.Contains(stderr.String(), "is a symlink; not following it") {
		t.Errorf("exit %d, stderr %q; want 1 and the symlink named", code, stderr.String())
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "someone else's file" {
		t.Errorf("the symlink's target now holds %q (%v)", b, err)
	}
	if stdout.String() != "" {
		t.Errorf("readiness line printed: %q", stdout.String())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestFailedStartKeepsCapture (issue 8 case 5): a start that fails on its
// second socket leaves the capture of an earlier run as it was.
func TestFailedStartKeepsCapture(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	pcap := filepath.Join(dir, "wire.pcap")
	earlier := []byte("the capture of the run that found the bug")
	if err := os.WriteFile(pcap, earlier, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
	code := a.run(context.Background(), []string{"serve", "--pcap", pcap,
		"--device", "testdev,socket=" + filepath.Join(dir, "ok.sock"),
		"--device", "testdev,socket=" + filepath.Join(dir, "missing", "x.sock")})
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if b, err := os.ReadFile(pcap); err != nil || !bytes.Equal(b, earlier) {
		t.Errorf("the existing capture now holds %d bytes (%v), want it untouched", len(b), err)
	}
}

// flooder is a testdev with a port on the wire that sends full-size
// broadcast frames until it is closed: traffic for the capture without a
// guest.
type flooder struct {
	*testdev.Device
	port *fabric.SwitchPort
	stop chan struct{}
	wg   sync.WaitGroup
}

func newFlooder(env deviceEnv) (device, error) {
	d, err := testdev.New(env.Name, env.Log)
	if err != nil {
		return nil, err
	}
	f := &flooder{Device: d, port: env.Wire.NewPort(env.Name), stop: make(chan struct{})}
	f.port.Attach(fabrictest.NewReceiver(16))
	frame := fabrictest.Frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, [6]byte{2, 0, 0, 0, 0, 1}, 0x88b5, make([]byte, 1500))
	f.wg.Go(func() { f.runFlood(frame) })
	return f, nil
}

func (f *flooder) runFlood(frame []byte) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.port.Send([][]byte{frame, frame, frame, frame})
		}
	}
}

func (f *flooder) Close() error {
	close(f.stop)
	f.wg.Wait()
	f.port.Detach()
	return f.Device.Close()
}

// TestCaptureOnFullDisk (issue 8 case 5): the capture file on a 64 KiB
// tmpfs fills up; the error is logged at once (before shutdown), the file
// holds whole records only, and serve exits 1 at shutdown.
func TestCaptureOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	leaktest.Check(t)
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("myriemu-test", small, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	defer unix.Unmount(small, unix.MNT_DETACH)
	pcap := filepath.Join(small, "wire.pcap")

	kinds := deviceKinds()
	kinds["flooder"] = deviceKind{help: "test traffic", check: func(map[string]string) error { return nil }, new: newFlooder}
	pr, pw := io.Pipe()
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &app{stdout: pw, stderr: &stderr, kinds: kinds}
	codec := make(chan int, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		code := a.run(ctx, []string{"serve", "--pcap", pcap, "--device", "flooder,socket=" + filepath.Join(dir, "f.sock")})
		pw.Close()
		codec <- code
	})
	wg.Go(func() { io.Copy(io.Discard, pr) }) // ends when run closes pw
	// stopServe stops serve and returns its exit status; it also runs on
	// every way out of the test, so both goroutines are always joined.
	stopServe := sync.OnceValue(func() int {
		cancel()
		code := <-codec
		wg.Wait()
		return code
	})
	defer stopServe()

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "capture stopped: writing the pcap stream failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no capture error logged within 30 s; stderr:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "no space left on device") || !strings.Contains(stderr.String(), "file="+pcap) {
		t.Errorf("the error line lacks the cause or the file:\n%s", stderr.String())
	}
	if code := stopServe(); code != 1 {
		t.Errorf("exit %d after a full disk, want 1; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "capture incomplete") {
		t.Errorf("no 'capture incomplete' at shutdown:\n%s", stderr.String())
	}
	data, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, _, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v: the file must end on a whole record", n, err)
		}
		n++
	}
	if n < 10 {
		t.Errorf("%d records in %d bytes, want the file filled with whole records", n, len(data))
	}
}

// TestServeOnHandedOverFD: fd=N serves on a supervisor's listening socket;
// the readiness line names its path, and the file stays after exit.
func TestServeOnHandedOverFD(t *testing.T) {
	leaktest.Check(t)
	path := filepath.Join(t.TempDir(), "sup.sock")
	fd, err := unixsock.Listen(path, unixsock.Perm{})
	if err != nil {
		t.Fatal(err)
	}
	ready, stop, stderr := startServe(t, "serve", "--device", "testdev,fd="+strconv.Itoa(fd)+",name=td")
	if want := "myriemu: ready device=td socket=" + path; ready != want {
		t.Errorf("readiness line %q, want %q", ready, want)
	}
	readIDs(t, path)
	if code := stop(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the supervisor's socket file was removed: %v", err)
	}
}

// TestReconnectLoopCannotFloodTheLog (issue 8 finding 6): a client that
// reconnects 50 times with one protocol error each gets one budget of
// warnings for the device, not one per connection.
func TestReconnectLoopCannotFloodTheLog(t *testing.T) {
	leaktest.Check(t)
	sock := filepath.Join(t.TempDir(), "td.sock")
	_, stop, stderr := startServe(t, "serve", "--device", "testdev,socket="+sock, "--log-level", "warn")
	const conns = 5 * ratelog.Burst
	start := time.Now()
	for range conns {
		c, err := vfiousertest.Dial(context.Background(), sock)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Negotiate(); err != nil {
			t.Fatal(err)
		}
		if err := c.ReadRegion(7, 0, nil); err == nil { // count 0: a protocol error
			t.Error("a zero-length region read succeeded")
		}
		c.Close()
	}
	readIDs(t, sock) // still serving; also waits for the last client's teardown
	// The budget refills one line per Interval: a slow machine may earn more.
	budget := ratelog.Burst + int(time.Since(start)/ratelog.Interval)
	if code := stop(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr)
	}
	if n := strings.Count(stderr.String(), "client protocol error"); n < ratelog.Burst || n > budget {
		t.Errorf("%d warning lines for %d connections with one error each, want %d..%d (one budget per device)",
			n, conns, ratelog.Burst, budget)
	}
}
