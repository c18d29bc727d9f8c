//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
)

// hostPeer is the test's own end of a server's switch: a dgram port
// (--port dgram=unix:PORT,unix:PEER) whose far side is this socket. It
// keeps every frame the switch floods or forwards to it and, given an
// address, answers ARP requests and ICMP echo requests for it, so that a
// guest can ping "the wire" without a second guest.
type hostPeer struct {
	conn *net.UnixConn
	port *net.UnixAddr // the server's end, where answers go
	mac  net.HardwareAddr
	ip   net.IP // nil: answer nothing
	keep bool   // keep the frames received
	wg   sync.WaitGroup

	mu       sync.Mutex
	frames   [][]byte
	received int
	answered int
}

// newHostPeer listens on peerPath; answers go to portPath, the server's
// end. ip may be nil (answer nothing); keep keeps every frame.
func newHostPeer(peerPath, portPath string, mac net.HardwareAddr, ip net.IP, keep bool) (*hostPeer, error) {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: peerPath, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	p := &hostPeer{conn: c, port: &net.UnixAddr{Name: portPath, Net: "unixgram"}, mac: mac, ip: ip.To4(), keep: keep}
	p.wg.Go(p.run)
	return p, nil
}

func (p *hostPeer) run() {
	buf := make([]byte, 65536)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			return
		}
		f := buf[:n]
		p.mu.Lock()
		p.received++
		if p.keep {
			p.frames = append(p.frames, bytes.Clone(f))
		}
		p.mu.Unlock()
		if reply := p.answer(f); reply != nil {
			if _, err := p.conn.WriteToUnix(reply, p.port); err == nil {
				p.mu.Lock()
				p.answered++
				p.mu.Unlock()
			}
		}
	}
}

// answer returns the ARP reply or ICMP echo reply to f, or nil.
func (p *hostPeer) answer(f []byte) []byte {
	if p.ip == nil || len(f) < 14 {
		return nil
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0806: // ARP request for our address
		a := f[14:]
		if len(a) < 28 || binary.BigEndian.Uint16(a[6:8]) != 1 || !bytes.Equal(a[24:28], p.ip) {
			return nil
		}
		r := make([]byte, 42)
		copy(r[0:6], a[8:14])
		copy(r[6:12], p.mac)
		binary.BigEndian.PutUint16(r[12:14], 0x0806)
		copy(r[14:20], a[0:6]) // htype, ptype, hlen, plen
		binary.BigEndian.PutUint16(r[20:22], 2)
		copy(r[22:28], p.mac)
		copy(r[28:32], p.ip)
		copy(r[32:38], a[8:14])  // their MAC
		copy(r[38:42], a[14:18]) // their IP
		return r
	case 0x0800: // ICMP echo request to our address
		ip := f[14:]
		if len(ip) < 20 {
			return nil
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || total > len(ip) || total < ihl+8 || ip[9] != 1 || !bytes.Equal(ip[16:20], p.ip) ||
			binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 || ip[ihl] != 8 {
			return nil
		}
		r := bytes.Clone(f[:14+total])
		copy(r[0:6], f[6:12])
		copy(r[6:12], p.mac)
		rip := r[14:]
		copy(rip[12:16], ip[16:20]) // swapping the addresses keeps the header checksum
		copy(rip[16:20], ip[12:16])
		icmp := rip[ihl:total]
		icmp[0] = 0 // echo reply
		icmp[2], icmp[3] = 0, 0
		binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
		return r
	}
	return nil
}

// checksum is the Internet checksum of b.
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// close stops the peer and returns the frames it received.
func (p *hostPeer) close() [][]byte {
	p.conn.Close()
	p.wg.Wait()
	return p.frames
}

// counts returns how many frames the peer received and answered so far.
func (p *hostPeer) counts() (received, answered int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received, p.answered
}
