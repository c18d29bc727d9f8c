package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/myriemu/myriemu/fabric"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// pcapMode is the mode of a capture file serve creates: guest traffic is
// the owner's to read, like the sockets.
const pcapMode = 0o600

// openPcap opens the capture file for writing: created if missing,
// truncated if it is a regular file, never through a symlink (O_NOFOLLOW:
// --pcap /tmp/x cannot be turned into a write to another file), and only
// a regular file or a FIFO with a reader (tshark -i on a FIFO).
func openPcap(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, pcapMode)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("pcap %s: is a symlink; not following it (give the target's path)", path)
	case errors.Is(err, unix.ENXIO):
		return nil, fmt.Errorf("pcap %s: a FIFO with no reader (start the reader first)", path)
	case err != nil:
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := unix.Ftruncate(fd, 0); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("pcap %s: truncate: %w", path, err)
		}
	case unix.S_IFIFO:
	default:
		unix.Close(fd)
		return nil, fmt.Errorf("pcap %s: not a regular file or a FIFO", path)
	}
	// Blocking writes: the capture's own goroutine does them.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// startCapture opens path and starts capturing into it. A write error
// later is logged at once by the capture (with the file name) and stops it.
func startCapture(path string, root *logrus.Entry) (*fabric.Capture, error) {
	f, err := openPcap(path)
	if err != nil {
		return nil, err
	}
	c, err := fabric.NewCapture(f, fabric.CaptureConfig{Log: root.WithFields(logrus.Fields{"component": "fabric", "file": path})})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	root.WithField("file", path).Info("capturing")
	return c, nil
}

// stopCapture detaches the capture from the wire and closes it; a capture
// that stopped on a write error is an error (serve exits 1).
func stopCapture(wire *fabric.Switch, c *fabric.Capture, path string, root *logrus.Entry) error {
	wire.SetCapture(nil)
	err := c.Close()
	st := c.Stats()
	e := root.WithFields(logrus.Fields{"file": path, "frames": st.Frames, "bytes": st.Bytes, "dropped": st.Dropped, "write_errors": st.WriteErrors})
	if err != nil {
		e.WithError(err).Error("capture incomplete")
		return fmt.Errorf("capture %s incomplete: %w", path, err)
	}
	e.Info("capture written")
	return nil
}
