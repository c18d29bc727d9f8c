package link

import (
	"github.com/myriemu/myriemu/fabric/vhostuser"
)

// vhostUser is the vhost-user transport: a virtio-net guest's rings,
// served by fabric/vhostuser on a UNIX socket QEMU connects to. The carrier
// is up while the guest's rings run.
type vhostUser struct {
	l *Link
	b *vhostuser.Backend
}

func openVhostUser(l *Link) (transport, error) {
	v := &vhostUser{l: l}
	b, err := vhostuser.Listen(vhostuser.Config{
		Path:     l.cfg.Addr,
		Perm:     l.cfg.Perm,
		Transmit: l.in,
		Carrier: func(up bool) {
			if up {
				l.setFar(v)
			} else {
				l.clearFar(v)
			}
		},
		Log: l.log,
	})
	if err != nil {
		return nil, err
	}
	v.b = b
	return v, nil
}

func (v *vhostUser) addr() string { return v.l.cfg.Addr }

func (v *vhostUser) start(l *Link) { l.wg.Go(v.b.Serve) }

func (v *vhostUser) shutdown() { v.b.Close() }

func (v *vhostUser) writeFrames(frames [][]byte) error {
	v.b.Receive(frames)
	return nil
}

// VhostUserStats returns the backend's own counters, for a vhost-user link.
func (l *Link) VhostUserStats() (vhostuser.Stats, bool) {
	v, ok := l.t.(*vhostUser)
	if !ok {
		return vhostuser.Stats{}, false
	}
	return v.b.Stats(), true
}
