package vfiouser

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// explainInUse tells a live listener from a stale socket file. It looks
// in /proc/net/unix first: probing by connecting would make a live server
// accept a phantom client (and attach and detach its device).
func explainInUse(path string) error {
	fi, err := os.Lstat(path)
	if err == nil && fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("vfiouser: listen %s: path exists and is not a socket", path)
	}
	live, known := listening(path)
	if !known {
		live = probeConnect(path)
	}
	if live {
		return fmt.Errorf("vfiouser: listen %s: socket in use by a running server: %w", path, unix.EADDRINUSE)
	}
	return fmt.Errorf("vfiouser: listen %s: stale socket file (no server is listening on it); remove it: rm %s: %w",
		path, path, unix.EADDRINUSE)
}

// listening reports whether a listening AF_UNIX socket is bound to path
// in this network namespace; known is false if /proc/net/unix is unreadable.
func listening(path string) (live, known bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false, false
	}
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return false, false
	}
	const acceptCon = 0x10000 // __SO_ACCEPTCON: a listening socket
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || f[7] != abs {
			continue
		}
		if flags, err := strconv.ParseUint(f[3], 16, 32); err == nil && flags&acceptCon != 0 {
			return true, true
		}
	}
	return false, true
}

func probeConnect(path string) bool {
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(probe)
	err = unix.Connect(probe, &unix.SockaddrUnix{Name: path})
	return err == nil || errors.Is(err, unix.EAGAIN)
}
