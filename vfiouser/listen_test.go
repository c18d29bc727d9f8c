package vfiouser_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/myriemu/myriemu/vfiouser"
	"golang.org/x/sys/unix"
)

// TestListenFD serves on a socket a supervisor made: the client gets the
// device, and Close leaves the supervisor's file where it is.
func TestListenFD(t *testing.T) {
	leaktest.Check(t)
	fake := newFake(t)
	path := filepath.Join(socketDir(t), "sup.sock")
	lfd, err := unixsock.Listen(path, unixsock.Perm{})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	log, _ := testLogger()
	s, err := vfiouser.ListenFD(vfiouser.Config{Function: fake, Log: log}, lfd)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Errorf("Path %q, want the bound path %q", s.Path(), path)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	defer s.Close()
	c := negotiated(t, path)
	if _, err := c.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, vfiouser.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the supervisor's socket file was removed: %v", err)
	}
}

func TestListenFDRefusesOtherFDs(t *testing.T) {
	fake := newFake(t)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	if _, err := vfiouser.ListenFD(vfiouser.Config{Function: fake}, p[0]); err == nil {
		t.Error("a pipe was accepted")
	}
	sfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vfiouser.ListenFD(vfiouser.Config{Function: fake}, sfd); err == nil {
		t.Error("a socket that does not listen was accepted")
	}
	if err := unix.Close(sfd); !errors.Is(err, unix.EBADF) {
		t.Errorf("the refused fd was not closed (close: %v)", err)
	}
}

func TestListenErrors(t *testing.T) {
	leaktest.Check(t)
	fake := newFake(t)
	dir := socketDir(t)

	// Stale: a socket file nobody listens on.
	stale := filepath.Join(dir, "stale.sock")
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	_, err := vfiouser.Listen(vfiouser.Config{Path: stale, Function: fake})
	if err == nil || !strings.Contains(err.Error(), "rm "+stale) || !strings.Contains(err.Error(), "stale") {
		t.Errorf("stale socket: %v, want an error naming `rm %s`", err, stale)
	}

	// Live: another server listens.
	live := startServerWith(t, "live", fake, 0)
	_, err = vfiouser.Listen(vfiouser.Config{Path: live.Path, Function: fake})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("live socket: %v, want \"in use\"", err)
	}
	// Telling live from stale must not connect to the live server: a
	// phantom client would be accepted before ours (one at a time, in
	// order) and attach the function.
	lc := negotiated(t, live.Path)
	if a, _, _ := fake.Counts(); a != 1 {
		t.Errorf("function attached %d times for one client: the probe connected", a)
	}
	lc.Close()

	// Not a socket.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if _, err = vfiouser.Listen(vfiouser.Config{Path: plain, Function: fake}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("plain file: %v", err)
	}
	long := filepath.Join(dir, strings.Repeat("x", 120))
	if _, err = vfiouser.Listen(vfiouser.Config{Path: long, Function: fake}); err == nil {
		t.Error("over-long path accepted")
	}
	for _, x := range []int{100, 1 << 30} {
		if _, err = vfiouser.Listen(vfiouser.Config{Path: filepath.Join(dir, "x"), Function: fake, MaxDataXfer: x}); err == nil {
			t.Errorf("MaxDataXfer %d accepted", x)
		}
	}
	if _, err = vfiouser.Listen(vfiouser.Config{Path: filepath.Join(dir, "x")}); err == nil {
		t.Error("nil Function accepted")
	}
}

func TestCloseAndServeLifecycle(t *testing.T) {
	leaktest.Check(t)
	fake := newFake(t)
	path := filepath.Join(socketDir(t), "life.sock")

	// Close without Serve unlinks; idempotent.
	s := listenQuiet(t, path, fake)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
	if err := s.Serve(context.Background()); !errors.Is(err, vfiouser.ErrServerClosed) {
		t.Errorf("Serve after Close: %v", err)
	}

	// ctx cancellation ends Serve and drops the client; Close still cleans up.
	s = listenQuiet(t, path, fake)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer s.Close() // joins Serve also after a t.Fatal; idempotent
	c := negotiated(t, path)
	if err := s.Serve(ctx); err == nil || errors.Is(err, vfiouser.ErrServerClosed) {
		t.Errorf("second Serve: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve after cancel: %v", err)
	}
	<-c.Done()
	if a, d, _ := fake.Counts(); a != d {
		t.Errorf("attaches %d detaches %d after Serve returned", a, d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Close while a client is connected and a Serve is blocked.
	s = listenQuiet(t, path, fake)
	go func() { done <- s.Serve(context.Background()) }()
	defer s.Close()
	c = negotiated(t, path)
	// A replaced socket file is not ours to remove.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, vfiouser.ErrServerClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
	<-c.Done()
}

func TestCloseLeavesForeignSocketFile(t *testing.T) {
	leaktest.Check(t)
	fake := newFake(t)
	path := filepath.Join(socketDir(t), "f.sock")
	s := listenQuiet(t, path, fake)
	os.Remove(path)
	os.WriteFile(path, []byte("someone else's"), 0o600)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Errorf("Close removed or changed a file it did not create: %q, %v", b, err)
	}
}
