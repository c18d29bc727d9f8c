package vfiouser_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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
