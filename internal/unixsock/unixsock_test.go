package unixsock

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain lets a test run this binary as another user to dial a socket.
func TestMain(m *testing.M) {
	if path := os.Getenv("UNIXSOCK_TEST_DIAL"); path != "" {
		os.Exit(dialExit(path))
	}
	os.Exit(m.Run())
}

// dialExit connects to path: 0 on success, 13 on EACCES, 1 otherwise.
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

// openDir returns a directory every user can search, so only a socket's
// own mode decides who connects.
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // the test's and this call's
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// withUmask runs f under umask mask. umask is per process: the tests of
// this package do not run in parallel.
func withUmask(mask int, f func()) {
	old := unix.Umask(mask)
	defer unix.Umask(old)
	f()
}

// DialAs runs this test binary as uid/gid to connect to path and returns
// its exit code (0 connected, 13 EACCES). The binary is copied into a
// directory that user can read.
func dialAs(t *testing.T, uid, gid uint32, path string) int {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(openDir(t), "dialer")
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"UNIXSOCK_TEST_DIAL=" + path}
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

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is not a socket: %v", path, fi.Mode())
	}
	return fi.Mode().Perm()
}

func TestModeIgnoresUmask(t *testing.T) {
	dir := openDir(t)
	for _, tt := range []struct {
		name string
		perm Perm
		want os.FileMode
	}{
		{"default", Perm{}, 0o600},
		{"group", Perm{Mode: 0o660}, 0o660},
		{"type bits dropped", Perm{Mode: os.ModeSocket | 0o640}, 0o640},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "s.sock")
			var fd int
			var err error
			withUmask(0, func() { fd, err = Listen(path, tt.perm) })
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Unlink(path)
			defer unix.Close(fd)
			if got := modeOf(t, path); got != tt.want {
				t.Errorf("mode %#o under umask 000, want %#o", got, tt.want)
			}
		})
	}
}

// TestOtherUserCannotConnect: under umask 000 the socket is still 0600 and
// another local user gets EACCES; the same user is let in when the mode
// is 0666 (so the check is the socket's mode, not the directory).
func TestOtherUserCannotConnect(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	dir := openDir(t)
	const nobody = 65534
	for _, tt := range []struct {
		mode os.FileMode
		want int
	}{{0, 13}, {0o666, 0}} {
		path := filepath.Join(dir, "s.sock")
		var fd int
		var err error
		withUmask(0, func() { fd, err = Listen(path, Perm{Mode: tt.mode}) })
		if err != nil {
			t.Fatal(err)
		}
		got := dialAs(t, nobody, nobody, path)
		unix.Close(fd)
		unix.Unlink(path)
		if got != tt.want {
			t.Errorf("mode %#o: uid %d's connect exited %d, want %d (0 connected, 13 EACCES)", tt.mode, nobody, got, tt.want)
		}
	}
}

func TestGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another group")
	}
	path := filepath.Join(openDir(t), "g.sock")
	fd, err := Listen(path, Perm{Mode: 0o660, GID: 65534, SetGID: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Unlink(path)
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Gid != 65534 || st.Mode&0o777 != 0o660 {
		t.Errorf("gid %d mode %#o, want 65534 and 0660", st.Gid, st.Mode&0o777)
	}
}

func TestListenErrors(t *testing.T) {
	dir := openDir(t)
	path := filepath.Join(dir, "busy.sock")
	fd, err := Listen(path, Perm{})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Unlink(path)
	defer unix.Close(fd)
	if _, err := Listen(path, Perm{}); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second Listen: %v, want EADDRINUSE", err)
	}
	if _, err := Listen(filepath.Join(dir, string(make([]byte, 120))), Perm{}); err == nil {
		t.Error("an over-long path was accepted")
	}
	if _, err := Listen(filepath.Join(dir, "no-such-dir", "s.sock"), Perm{}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing directory: %v, want ENOENT", err)
	}
}

func TestListenUnix(t *testing.T) {
	path := filepath.Join(openDir(t), "ctl.sock")
	var l *net.UnixListener
	var err error
	withUmask(0, func() { l, err = ListenUnix(path, Perm{}) })
	if err != nil {
		t.Fatal(err)
	}
	if got := modeOf(t, path); got != 0o600 {
		t.Errorf("mode %#o, want 0600", got)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want os.FileMode
		ok   bool
	}{{"0600", 0o600, true}, {"660", 0o660, true}, {"0", 0, false}, {"1777", 0, false}, {"rw", 0, false}, {"0800", 0, false}} {
		got, err := ParseMode(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMode(%q) = %#o, %v; want %#o, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
