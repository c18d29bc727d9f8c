package vfiouser

import (
	"fmt"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// prepare checks cfg, fills its defaults and returns the server's logger.
func (cfg Config) prepare() (Config, *logrus.Entry, error) {
	if cfg.Function == nil {
		return cfg, nil, fmt.Errorf("vfiouser: listen %s: no Function", cfg.Path)
	}
	if cfg.MaxDataXfer == 0 {
		cfg.MaxDataXfer = DefaultMaxDataXfer
	}
	if cfg.MaxDataXfer < MinMaxDataXfer || cfg.MaxDataXfer > MaxMaxDataXfer {
		return cfg, nil, fmt.Errorf("vfiouser: listen %s: MaxDataXfer %d out of range %d..%d",
			cfg.Path, cfg.MaxDataXfer, MinMaxDataXfer, MaxMaxDataXfer)
	}
	log := cfg.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger()).WithField("component", "vfiouser")
	}
	return cfg, log.WithField("socket", cfg.Path), nil
}

// ListenFD serves on fd, a listening UNIX stream socket handed over by a
// supervisor (the --fd convention of QEMU's backend programs). The server
// owns fd from then on, also when ListenFD fails. cfg.Path is ignored:
// the socket's bound path (or "fd:N") names it in logs, its mode is the
// supervisor's business, and Close leaves the file alone.
func ListenFD(cfg Config, fd int) (*Server, error) {
	cfg.Path = fmt.Sprintf("fd:%d", fd)
	if err := checkListeningUnix(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vfiouser: listen %s: %w", cfg.Path, err)
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		if u, ok := sa.(*unix.SockaddrUnix); ok && u.Name != "" {
			cfg.Path = u.Name
		}
	}
	cfg, log, err := cfg.prepare()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	unix.CloseOnExec(fd)
	// A zero sockID matches no file: Close unlinks nothing.
	return newServer(cfg, log, fd, fileID{}), nil
}

// checkListeningUnix reports why fd is not a listening AF_UNIX stream
// socket, or nil.
func checkListeningUnix(fd int) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return err
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_STREAM {
		return fmt.Errorf("not a UNIX stream socket (domain %d, type %d)", domain, typ)
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc == 0 {
		return fmt.Errorf("socket is not listening")
	}
	return nil
}
