package link

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/unixsock"
)

// QEMU's dgram netdev (net/dgram.c) sends each packet as one datagram with
// no header, to the remote address, and takes whatever arrives on the
// local one.

// checkDatagram classifies one received datagram of n bytes (n may exceed
// fabric.MaxFrame: the read buffer is one byte larger, so that a longer
// datagram shows as truncated rather than passing as a whole frame).
func checkDatagram(n int) error {
	switch {
	case n < fabric.MinFrame:
		return errRunt
	case n > fabric.MaxFrame:
		return errOversize
	}
	return nil
}

// inFrame hands one frame read whole from a datagram or TAP file to the
// switch, or counts and drops it. f may be one byte longer than the
// largest frame (a longer read was truncated). batch is a one-element
// scratch slice.
func (l *Link) inFrame(f []byte, batch [][]byte) {
	switch err := checkDatagram(len(f)); {
	case errors.Is(err, errRunt):
		l.badInput(&l.c.inRunt, "runt", "runt frame dropped", len(f))
	case errors.Is(err, errOversize):
		l.badInput(&l.c.inOversize, "oversize", "oversized frame dropped", len(f))
	default:
		batch[0] = f
		l.in(batch)
	}
}

// dgram is the dgram transport: one socket bound to the local address,
// sending to the remote one. It has no carrier of its own: the link is up
// from Start to Close.
type dgram struct {
	l      *Link
	pc     net.PacketConn
	remote net.Addr
	unlink string // the socket file to remove on close (UNIX datagrams)
}

func openDgram(l *Link) (transport, error) {
	network, local := splitAddr(l.cfg.Addr)
	_, remote := splitAddr(l.cfg.Remote)
	d := &dgram{l: l}
	var err error
	if network == "unix" {
		removeStaleDgram(local)
		d.remote = &net.UnixAddr{Name: remote, Net: "unixgram"}
		var uc *net.UnixConn
		uc, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"})
		if err == nil {
			d.pc, d.unlink = uc, local
			// A datagram socket has no listen step to hide behind: the
			// file exists with the umask's mode from bind until here.
			err = applyPerm(local, l.cfg.Perm)
			if err != nil {
				uc.Close()
				os.Remove(local)
			}
		}
	} else {
		var ra *net.UDPAddr
		if ra, err = net.ResolveUDPAddr("udp", remote); err != nil {
			return nil, fmt.Errorf("remote %s: %w", remote, err)
		}
		d.remote = ra
		d.pc, err = net.ListenPacket("udp", local)
	}
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return d, nil
}

// removeStaleDgram removes a datagram socket file left by a process that
// was killed: binding fails on an existing path, and a datagram socket has
// no listener to ask whether it is still in use, so any socket file there
// is taken to be ours from a previous run.
func removeStaleDgram(path string) {
	removeStaleSocketFile(path)
}

// applyPerm gives a datagram socket file perm's mode and group.
func applyPerm(path string, perm unixsock.Perm) error {
	mode := perm.Mode & os.ModePerm
	if mode == 0 {
		mode = unixsock.DefaultMode
	}
	if perm.SetGID {
		if err := os.Lchown(path, -1, perm.GID); err != nil {
			return err
		}
	}
	return os.Chmod(path, mode)
}

func (d *dgram) addr() string {
	if ua, ok := d.pc.LocalAddr().(*net.UnixAddr); ok {
		return "unix:" + ua.Name
	}
	return d.pc.LocalAddr().String()
}

func (d *dgram) start(l *Link) {
	l.setFar(d)
	l.wg.Go(d.runRead)
}

func (d *dgram) shutdown() {
	d.pc.Close()
	if d.unlink != "" {
		os.Remove(d.unlink)
	}
}

func (d *dgram) writeFrames(frames [][]byte) error {
	for _, f := range frames {
		if _, err := d.pc.WriteTo(f, d.remote); err != nil {
			return err
		}
	}
	return nil
}

// runRead feeds the switch every well-formed datagram until Close.
func (d *dgram) runRead() {
	log := d.l.log.WithField("addr", d.addr())
	log.Debug("receiving")
	defer log.Debug("receive stopped")
	buf := make([]byte, fabric.MaxFrame+1)
	batch := make([][]byte, 1)
	for {
		n, _, err := d.pc.ReadFrom(buf)
		if err != nil {
			if d.l.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// A refused send (ICMP port unreachable while the peer is
			// away) surfaces here on Linux; the socket is still fine.
			d.l.warn.Warn(log.WithError(err), "read", "datagram receive failed")
			if !d.l.sleep(10e6) {
				return
			}
			continue
		}
		d.l.inFrame(buf[:n], batch)
	}
}
