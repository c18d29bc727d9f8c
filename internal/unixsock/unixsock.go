// Package unixsock creates listening UNIX stream sockets whose file mode
// and group are what the caller asks, whatever the process umask.
//
// bind(2) creates the socket file with mode 0777 &^ umask, so under
// umask 000 any local user could connect. Listen sets the mode (and the
// group) between bind and listen: until listen nobody can connect, so
// there is no window in which a looser mode is usable. The change goes
// through an O_PATH descriptor of the file just bound, never by a second
// path lookup, so a symlink swapped in meanwhile cannot redirect it.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultMode is the socket file mode: the owner only.
const DefaultMode os.FileMode = 0o600

// Perm is the mode and group a socket file gets.
type Perm struct {
	Mode   os.FileMode // permission bits (no type bits); 0 means DefaultMode
	GID    int         // group of the file, when SetGID
	SetGID bool
}

func (p Perm) mode() os.FileMode {
	if p.Mode == 0 {
		return DefaultMode
	}
	return p.Mode & os.ModePerm
}

// Backlog is the listen backlog of sockets made here: one client is
// served at a time, a few more may wait.
const Backlog = 4

// Listen binds a SOCK_STREAM|SOCK_CLOEXEC socket to path, gives the file
// perm, and listens. It returns the listening fd. A bind that fails with
// EADDRINUSE returns an error wrapping unix.EADDRINUSE (the caller tells a
// live server from a stale file). On any later failure the file it bound
// is removed.
func Listen(path string, perm Perm) (fd int, err error) {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return -1, fmt.Errorf("listen %s: socket path longer than %d bytes", path, len(unix.RawSockaddrUnix{}.Path)-1)
	}
	fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("listen %s: socket: %w", path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen %s: bind: %w", path, err)
	}
	if err := apply(path, perm); err != nil {
		unix.Close(fd)
		unix.Unlink(path)
		return -1, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := unix.Listen(fd, Backlog); err != nil {
		unix.Close(fd)
		unix.Unlink(path)
		return -1, fmt.Errorf("listen %s: %w", path, err)
	}
	return fd, nil
}

// ListenUnix is Listen for code that wants a *net.UnixListener (a control
// socket, say). Closing the listener removes the socket file.
func ListenUnix(path string, perm Perm) (*net.UnixListener, error) {
	fd, err := Listen(path, perm)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	l, err := net.FileListener(f) // dups the fd
	f.Close()
	if err != nil {
		unix.Unlink(path)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(true)
	return ul, nil
}

// apply gives the socket file at path perm, through an O_PATH descriptor
// that must name a socket.
func apply(path string, perm Perm) error {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the socket file: %w", err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return fmt.Errorf("stat the socket file: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.New("the socket file was replaced")
	}
	if perm.SetGID {
		if err := unix.Fchownat(pfd, "", -1, perm.GID, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown to group %d: %w", perm.GID, err)
		}
	}
	// fchmod does not work on O_PATH descriptors; the /proc link of the
	// descriptor names the same inode without another path lookup.
	mode := uint32(perm.mode())
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(pfd), mode); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("chmod %#o: %w", mode, err)
		}
		// No /proc: fchmodat2's AT_SYMLINK_NOFOLLOW (Linux 6.6) refuses a
		// symlink; older kernels get a plain chmod, then a check.
		if err := unix.Fchmodat(unix.AT_FDCWD, path, mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err := unix.Chmod(path, mode); err != nil {
				return fmt.Errorf("chmod %#o: %w", mode, err)
			}
		}
	}
	var after unix.Stat_t
	if err := unix.Lstat(path, &after); err != nil || after.Ino != st.Ino || after.Dev != st.Dev ||
		after.Mode&unix.S_IFMT != unix.S_IFSOCK || after.Mode&0o7777 != mode {
		return fmt.Errorf("the socket file did not keep mode %#o", mode)
	}
	return nil
}

// ParseMode parses an octal permission mode such as 0600 or 660; only
// permission bits are accepted.
func ParseMode(s string) (os.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v == 0 || v&^0o777 != 0 {
		return 0, fmt.Errorf("mode %q: want octal permission bits, e.g. 0600 or 0660", s)
	}
	return os.FileMode(v), nil
}
