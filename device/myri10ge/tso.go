package myri10ge

import (
	"fmt"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/header"
)

// TCP segmentation offload (§5.5). The device recomputes every length,
// sequence number and checksum; nothing the stack pre-seeded is trusted.

// tsoMaxOutBytes bounds what one TSO chain may expand to, headers repeated
// in every segment included, so a guest cannot make the device allocate
// without limit with a tiny MSS under big headers. Linux's worst case, 64
// KiB cut by an MSS of a few dozen bytes under ~256 bytes of headers, is
// about half of it.
const tsoMaxOutBytes = 2 << 20

// maxTSOBytes bounds a TSO chain's bytes, headers included.
const maxTSOBytes = 65536 + 1024

// tsoOutBufBytes is the first size of the segment buffer: room for 64 KiB
// cut by MSS 536 under 128 bytes of headers, so common chains never
// regrow it.
const tsoOutBufBytes = 128 << 10

// tsoHeaders locates the headers of a TSO packet.
type tsoHeaders struct {
	l3, l4, end int // IP header, TCP header, first payload byte
	ipv6        bool
}

// tsoParse finds Ethernet (with up to two VLAN tags), IPv4 or IPv6 (hop-by-hop
// and destination-options extension headers allowed) and TCP at the start of
// h.
func tsoParse(h []byte) (tsoHeaders, error) {
	var t tsoHeaders
	l, ok := header.Parse(h)
	switch {
	case !ok:
		return t, fmt.Errorf("Ethernet or IP header not valid: %w", errTSOHeader)
	case l.EtherType != header.EtherTypeIPv4 && l.EtherType != header.EtherTypeIPv6:
		return t, fmt.Errorf("EtherType %#04x: %w", l.EtherType, errTSOHeader)
	case l.L4 == 0:
		return t, fmt.Errorf("no transport header (IPv4 fragment or IPv6 extension headers): %w", errTSOHeader)
	case l.Proto != header.ProtoTCP:
		return t, fmt.Errorf("IP protocol %d: %w", l.Proto, errTSOHeader)
	}
	tcp := header.TCP(h[l.L4:])
	if !tcp.Valid() {
		return t, fmt.Errorf("TCP header not valid: %w", errTSOHeader)
	}
	t.l3, t.l4, t.end = l.L3, l.L4, l.L4+tcp.HeaderLength()
	t.ipv6 = l.EtherType == header.EtherTypeIPv6
	return t, nil
}

// tso gathers a TSO chain of n descriptors and cuts it into MSS-sized TCP
// segments (§5.5).
func (s *sender) tso(n int, mem dma.Space) ([][]byte, error) {
	mss := s.desc(0).pseudoHdrOffset()
	if mss == 0 {
		return nil, fmt.Errorf("myri10ge: send: %w", errTSOMSS)
	}
	// H: the bytes before the first payload descriptor.
	hlen, total, pld := 0, 0, -1
	for j := range n {
		d := s.desc(j)
		if pld < 0 && d.flags()&abi.FlagTSOPld != 0 {
			pld, hlen = j, total
		}
		total += d.length()
	}
	if pld < 0 || total == hlen {
		return nil, fmt.Errorf("myri10ge: send TSO chain of %d descriptors: %w", n, errTSONoPayload)
	}
	if total > maxTSOBytes {
		return nil, fmt.Errorf("myri10ge: send TSO chain of %d bytes, at most %d: %w", total, maxTSOBytes, errSendLength)
	}
	if seg := hlen + min(mss, total-hlen); seg > fabric.MaxFrame {
		return nil, fmt.Errorf("myri10ge: send TSO segment of %d bytes (MSS %d), at most %d: %w", seg, mss, fabric.MaxFrame, errTSOSegmentTooLong)
	}
	nseg := (total - hlen + mss - 1) / mss
	if out := nseg*hlen + total - hlen; out > tsoMaxOutBytes {
		return nil, fmt.Errorf("myri10ge: send TSO chain makes %d segments of %d bytes, at most %d in all: %w", nseg, hlen+mss, tsoMaxOutBytes, errTSOTooManySegments)
	}
	buf, err := s.gather(n, total, mem)
	if err != nil {
		return nil, err
	}
	hdr, pay := buf[:hlen], buf[hlen:]
	t, err := tsoParse(hdr)
	if err != nil {
		return nil, fmt.Errorf("myri10ge: send TSO: %w", err)
	}
	if t.end != hlen {
		return nil, fmt.Errorf("myri10ge: send TSO headers end at %d, header descriptors hold %d: %w", t.end, hlen, errTSOHeader)
	}
	return s.segment(hdr, pay, t, mss), nil
}

// segment emits hdr+chunk for every mss-sized chunk of pay, with lengths,
// IPv4 ID, TCP sequence number, flags and checksums fixed up.
func (s *sender) segment(hdr, pay []byte, t tsoHeaders, mss int) [][]byte {
	hlen := len(hdr)
	nseg := (len(pay) + mss - 1) / mss
	if need := nseg*hlen + len(pay); cap(s.out) < need {
		s.out = make([]byte, max(need, tsoOutBufBytes))
	}
	out := s.out[:cap(s.out)]

	tcp0 := header.TCP(hdr[t.l4:])
	seq, tcpFlags := tcp0.Seq(), tcp0.Flags()
	var id uint16
	// Pseudo-header without its length: addresses and protocol.
	var pseudo uint32
	if t.ipv6 {
		pseudo = onesSum(header.IPv6(hdr[t.l3:]).Addresses(), header.ProtoTCP)
	} else {
		id = header.IPv4(hdr[t.l3:]).ID()
		pseudo = onesSum(header.IPv4(hdr[t.l3:]).Addresses(), header.ProtoTCP)
	}
	pseudo = uint32(checksumFold(pseudo))

	s.frames = s.frames[:0]
	off := 0
	for k := range nseg {
		chunk := pay[k*mss : min((k+1)*mss, len(pay))]
		f := out[off : off+hlen+len(chunk) : off+hlen+len(chunk)]
		copy(f, hdr)
		copy(f[hlen:], chunk)
		ip, tcp := f[t.l3:t.l4], header.TCP(f[t.l4:])
		if t.ipv6 {
			header.IPv6(ip).SetPayloadLength(uint16(len(f) - t.l3 - header.IPv6Size))
		} else {
			ip4 := header.IPv4(ip)
			ip4.SetTotalLength(uint16(len(f) - t.l3))
			ip4.SetID(id + uint16(k))
			ip4.SetChecksum(0)
			ip4.SetChecksum(^checksumFold(onesSum(ip, 0)))
		}
		tcp.SetSeq(seq + uint32(k)*uint32(mss))
		fl := tcpFlags
		if k > 0 {
			fl &^= header.TCPFlagCwr
		}
		if k < nseg-1 {
			fl &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		tcp.SetFlags(fl)
		tcp.SetChecksum(0)
		tcp.SetChecksum(^checksumFold(onesSum(tcp, pseudo+uint32(len(tcp)))))
		s.frames = append(s.frames, f)
		off += len(f)
	}
	return s.frames
}
