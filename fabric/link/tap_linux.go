package link

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/myriemu/myriemu/fabric"
	"golang.org/x/sys/unix"
)

// tap is the TAP transport: frames are read from and written to the
// interface's file, one frame per read or write, with no packet
// information header (IFF_NO_PI) and no virtio-net header.
type tap struct {
	l    *Link
	f    *os.File
	name string
}

// openTAP attaches to the TAP interface cfg.Addr, creating it if missing
// (it then lasts as long as the link, unless made persistent beforehand
// with `ip tuntap add`), sets its MTU to the link's and brings it up.
func openTAP(l *Link) (transport, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(l.cfg.Addr)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("interface name %q: %w", l.cfg.Addr, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", l.cfg.Addr, err)
	}
	name := ifr.Name()
	if err := setLinkMTUUp(name, l.cfg.mtu()); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, so reads wait in the runtime's poller and Close
	// interrupts them.
	return &tap{l: l, f: os.NewFile(uintptr(fd), "/dev/net/tun:"+name), name: name}, nil
}

// setLinkMTUUp sets interface name's MTU and raises it administratively.
func setLinkMTUUp(name string, mtu int) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for interface ioctls: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(mtu))
	if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("set %s MTU %d: %w", name, mtu, err)
	}
	ifr, _ = unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get %s flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

func (t *tap) addr() string { return t.name }

func (t *tap) start(l *Link) {
	l.setFar(t)
	l.wg.Go(t.runRead)
}

func (t *tap) shutdown() { t.f.Close() }

func (t *tap) writeFrames(frames [][]byte) error {
	for _, f := range frames {
		if _, err := t.f.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// runRead feeds the switch every frame the interface transmits until Close.
func (t *tap) runRead() {
	log := t.l.log.WithField("ifname", t.name)
	log.Debug("receiving")
	defer log.Debug("receive stopped")
	// One byte beyond the largest frame, so that a longer one (an MTU
	// raised behind our back) shows as oversized instead of whole.
	buf := make([]byte, fabric.MaxFrame+1)
	batch := make([][]byte, 1)
	for {
		n, err := t.f.Read(buf)
		if err != nil {
			if t.l.closing() || errors.Is(err, fs.ErrClosed) {
				return
			}
			t.l.warn.Warn(log.WithError(err), "read", "TAP read failed")
			if !t.l.sleep(10e6) {
				return
			}
			continue
		}
		t.l.inFrame(buf[:n], batch)
	}
}
