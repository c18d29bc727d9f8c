package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// ARP (RFC 826) over Ethernet: the one protocol this program speaks on the
// wire. A request to a good guest's address draws a unicast reply from its
// kernel, which is how the program gets frames delivered to its NIC.
const (
	etherTypeARP = 0x0806
	arpRequest   = 1
	arpReply     = 2
	minFrame     = 60
)

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpFrame is a who-has target tell sender request from mac, padded to
// the minimum frame.
func arpFrame(mac [6]byte, sender, target netip.Addr) []byte {
	f := make([]byte, minFrame)
	copy(f[0:], broadcast[:])
	copy(f[6:], mac[:])
	be := binary.BigEndian
	be.PutUint16(f[12:], etherTypeARP)
	be.PutUint16(f[14:], 1)      // Ethernet
	be.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	be.PutUint16(f[20:], arpRequest)
	copy(f[22:], mac[:])
	s, t := sender.As4(), target.As4()
	copy(f[28:], s[:])
	copy(f[38:], t[:])
	return f
}

// isARPReply reports whether f is from's reply to a request sent by
// (mac, to).
func isARPReply(f []byte, mac [6]byte, from, to netip.Addr) bool {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != etherTypeARP || binary.BigEndian.Uint16(f[20:]) != arpReply {
		return false
	}
	s, t := from.As4(), to.As4()
	return bytes.Equal(f[0:6], mac[:]) && bytes.Equal(f[28:32], s[:]) && bytes.Equal(f[32:38], mac[:]) && bytes.Equal(f[38:42], t[:])
}

// arp sends a request for target from ip and waits up to d for the reply
// to land in a receive buffer.
func (n *nic) arp(ip, target netip.Addr, d time.Duration) error {
	if _, err := n.sendFrame(arpFrame(n.mac, ip, target)); err != nil {
		return fmt.Errorf("ARP request for %v: %w", target, err)
	}
	deadline := time.Now().Add(d)
	for {
		if n.receive(func(f []byte) bool { return isARPReply(f, n.mac, target, ip) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no ARP reply from %v within %v", target, d)
		}
		time.Sleep(time.Millisecond)
	}
}
