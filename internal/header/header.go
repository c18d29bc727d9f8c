// Package header reads and rewrites Ethernet, 802.1Q, IPv4, IPv6, TCP and
// UDP headers in place, as byte views with validity checks.
//
// Each view is a byte slice starting at its header. Call Valid before any
// other method: the accessors assume the length and fields Valid checks.
// Parse finds the layers of a whole frame.
package header

import "encoding/binary"

// Ethernet (IEEE 802.3) and 802.1Q/802.1ad tags.
//
//	0      6      12     14
//	| dst  | src  | type |
const (
	EthernetMinSize = 14
	ethTypeOff      = 12
	VLANTagSize     = 4 // TPID (the EtherType that announced it) and TCI, then the inner EtherType

	EtherTypeIPv4 = 0x0800
	EtherTypeIPv6 = 0x86DD
	EtherTypeVLAN = 0x8100 // 802.1Q
	EtherTypeQinQ = 0x88A8 // 802.1ad, outside an 802.1Q tag

	// MaxVLANTags is how many tags Parse walks: 802.1ad outside 802.1Q.
	MaxVLANTags = 2
)

// Ethernet is a view of an Ethernet header.
type Ethernet []byte

// Valid reports whether b holds a whole Ethernet header.
func (b Ethernet) Valid() bool { return len(b) >= EthernetMinSize }

// Type is the EtherType (of the first tag, if the frame is tagged).
func (b Ethernet) Type() uint16 { return binary.BigEndian.Uint16(b[ethTypeOff:]) }

// IP protocol numbers (RFC 790 and the IANA registry).
const (
	ProtoTCP        = 6
	ProtoUDP        = 17
	ipv6HopByHop    = 0
	ipv6DestOptions = 60
)

// IPv4 (RFC 791, section 3.1).
//
//	0        4         8        16       20
//	|ver|ihl | tos     | total length    |
//	| identification   |flags| frag off  |
//	| ttl    | proto   | header checksum |
//	| source address                     |
//	| destination address                |
const (
	IPv4MinSize     = 20
	ipv4TotalLenOff = 2
	ipv4IDOff       = 4
	ipv4FragOff     = 6
	ipv4ProtoOff    = 9
	ipv4ChecksumOff = 10
	ipv4AddrsOff    = 12
	ipv4AddrsSize   = 8
	ipv4MFOffMask   = 0x3FFF // More Fragments and the fragment offset
)

// IPv4 is a view of an IPv4 header.
type IPv4 []byte

// Valid reports whether b starts with an IPv4 header: version 4 and a
// header length (IHL) of at least 20 bytes that b holds. The total length
// field is not checked: the headers of a TSO chain carry the stack's
// placeholder.
func (b IPv4) Valid() bool {
	if len(b) < IPv4MinSize || b[0]>>4 != 4 {
		return false
	}
	hl := b.HeaderLength()
	return hl >= IPv4MinSize && hl <= len(b)
}

// HeaderLength is IHL in bytes.
func (b IPv4) HeaderLength() int { return int(b[0]&0xF) * 4 }

// Protocol is the transport protocol number.
func (b IPv4) Protocol() uint8 { return b[ipv4ProtoOff] }

// IsFragment reports whether b is a fragment (More Fragments set or a
// nonzero offset): its transport header, if any, is not whole here.
func (b IPv4) IsFragment() bool {
	return binary.BigEndian.Uint16(b[ipv4FragOff:])&ipv4MFOffMask != 0
}

// Addresses are the source and destination addresses, 8 bytes.
func (b IPv4) Addresses() []byte { return b[ipv4AddrsOff : ipv4AddrsOff+ipv4AddrsSize] }

// ID is the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[ipv4IDOff:]) }

// SetID sets the identification field.
func (b IPv4) SetID(id uint16) { binary.BigEndian.PutUint16(b[ipv4IDOff:], id) }

// SetTotalLength sets the total length field.
func (b IPv4) SetTotalLength(n uint16) { binary.BigEndian.PutUint16(b[ipv4TotalLenOff:], n) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[ipv4ChecksumOff:], c) }

// IPv6 (RFC 8200, section 3) and the extension headers Parse walks
// (section 4.3 hop-by-hop, 4.6 destination options: next header, length
// in 8-byte units not counting the first 8).
//
//	0        4       12       16       24       32
//	|ver| traffic class | flow label           |
//	| payload length    | next hdr | hop limit |
//	| source address (16), destination address (16)
const (
	IPv6Size         = 40
	ipv6PayloadLnOff = 4
	ipv6NextOff      = 6
	ipv6AddrsOff     = 8
	ipv6AddrsSize    = 32
	ipv6ExtMinSize   = 8
	// maxIPv6Ext is how many extension headers Parse walks before it
	// gives up on finding the transport header.
	maxIPv6Ext = 8
)

// IPv6 is a view of an IPv6 fixed header.
type IPv6 []byte

// Valid reports whether b starts with an IPv6 header (version 6, 40 bytes).
func (b IPv6) Valid() bool { return len(b) >= IPv6Size && b[0]>>4 == 6 }

// NextHeader is the protocol of the header after the fixed one.
func (b IPv6) NextHeader() uint8 { return b[ipv6NextOff] }

// Addresses are the source and destination addresses, 32 bytes.
func (b IPv6) Addresses() []byte { return b[ipv6AddrsOff : ipv6AddrsOff+ipv6AddrsSize] }

// SetPayloadLength sets the payload length field.
func (b IPv6) SetPayloadLength(n uint16) { binary.BigEndian.PutUint16(b[ipv6PayloadLnOff:], n) }

// TCP (RFC 9293, section 3.1).
//
//	0        16       32
//	| src port| dst port |
//	| sequence number    |
//	| acknowledgment     |
//	|doff|rsv| flags | window |
//	| checksum| urgent   |
const (
	TCPMinSize     = 20
	tcpSeqOff      = 4
	tcpDataOffOff  = 12
	tcpFlagsOff    = 13
	tcpChecksumOff = 16

	TCPFlagFin = 0x01
	TCPFlagPsh = 0x08
	TCPFlagCwr = 0x80
)

// TCP is a view of a TCP header.
type TCP []byte

// Valid reports whether b holds a TCP header of at least 20 bytes whose
// data offset is at least 20 and inside b.
func (b TCP) Valid() bool {
	if len(b) < TCPMinSize {
		return false
	}
	hl := b.HeaderLength()
	return hl >= TCPMinSize && hl <= len(b)
}

// HeaderLength is the data offset in bytes.
func (b TCP) HeaderLength() int { return int(b[tcpDataOffOff]>>4) * 4 }

// Seq is the sequence number.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[tcpSeqOff:]) }

// SetSeq sets the sequence number.
func (b TCP) SetSeq(s uint32) { binary.BigEndian.PutUint32(b[tcpSeqOff:], s) }

// Flags is the flags byte (CWR ... FIN).
func (b TCP) Flags() uint8 { return b[tcpFlagsOff] }

// SetFlags sets the flags byte.
func (b TCP) SetFlags(f uint8) { b[tcpFlagsOff] = f }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[tcpChecksumOff:], c) }

// UDP (RFC 768).
const (
	UDPSize = 8
	// UDPChecksumOff is where the checksum sits in a UDP header, in which
	// 0 means "no checksum".
	UDPChecksumOff = 6
)

// PortsSize is the length of the source and destination ports that start
// TCP and UDP headers alike.
const PortsSize = 4

// Layers is where Parse found each header of a frame.
type Layers struct {
	EtherType uint16 // after any VLAN tags
	L3        int    // offset of the IP header
	// L4 is the offset of the transport header and Proto its protocol;
	// L4 is 0 when the frame is not IP, is an IPv4 fragment, or has
	// IPv6 extension headers Parse does not walk.
	L4    int
	Proto uint8
}

// Parse finds the headers of the Ethernet frame f: up to MaxVLANTags
// tags, then a valid IPv4 or IPv6 header (IPv6 hop-by-hop and destination
// options walked), then the start of the transport header. It does not
// look inside the transport header; check it with its view's Valid. ok is
// false when f has no whole Ethernet header, or when it announces IPv4 or
// IPv6 and the header is not valid: a frame to treat as opaque.
func Parse(f []byte) (l Layers, ok bool) {
	if !Ethernet(f).Valid() {
		return l, false
	}
	et, off := Ethernet(f).Type(), EthernetMinSize
	for tags := 0; (et == EtherTypeVLAN || et == EtherTypeQinQ) && tags < MaxVLANTags; tags++ {
		if len(f) < off+VLANTagSize {
			return l, false
		}
		et = binary.BigEndian.Uint16(f[off+2:])
		off += VLANTagSize
	}
	l.EtherType, l.L3 = et, off
	switch et {
	case EtherTypeIPv4:
		ip := IPv4(f[off:])
		if !ip.Valid() {
			return l, false
		}
		if !ip.IsFragment() {
			l.L4, l.Proto = off+ip.HeaderLength(), ip.Protocol()
		}
	case EtherTypeIPv6:
		ip := IPv6(f[off:])
		if !ip.Valid() {
			return l, false
		}
		next, l4 := ip.NextHeader(), off+IPv6Size
		for ext := 0; next == ipv6HopByHop || next == ipv6DestOptions; ext++ {
			if ext == maxIPv6Ext || len(f) < l4+ipv6ExtMinSize {
				return l, true
			}
			next, l4 = f[l4], l4+(int(f[l4+1])+1)*ipv6ExtMinSize
		}
		if l4 > len(f) {
			return l, true
		}
		l.L4, l.Proto = l4, next
	}
	return l, true
}
