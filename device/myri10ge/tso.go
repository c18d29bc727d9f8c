package myri10ge

import (
	"encoding/binary"
	"fmt"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fabric"
)

// TCP segmentation offload (§5.5). The device recomputes every length,
// sequence number and checksum; nothing the stack pre-seeded is trusted.

// Header layouts the segmenter parses (offsets within each header).
const (
	tsoEthHdrLen   = 14
	tsoEthTypeOff  = 12
	tsoVLANLen     = 4
	tsoMaxVLANTags = 2 // 802.1Q, and 802.1ad outside it

	tsoEthTypeIPv4  = 0x0800
	tsoEthTypeIPv6  = 0x86DD
	tsoEthTypeVLAN  = 0x8100
	tsoEthTypeQinQ  = 0x88A8
	tsoIPProtoTCP   = 6
	tsoIPv6HopByHop = 0
	tsoIPv6DestOpts = 60
	tsoMaxIPv6Ext   = 8 // extension headers walked before giving up

	tsoIPv4MinLen    = 20
	tsoIPv4TotLenOff = 2
	tsoIPv4IDOff     = 4
	tsoIPv4FragOff   = 6 // flags and fragment offset
	tsoIPv4ProtoOff  = 9
	tsoIPv4CsumOff   = 10
	tsoIPv4SrcOff    = 12 // source then destination, 8 bytes
	tsoIPv4MFOffMask = 0x3FFF

	tsoIPv6Len       = 40
	tsoIPv6PayLenOff = 4
	tsoIPv6NextOff   = 6
	tsoIPv6SrcOff    = 8 // source then destination, 32 bytes

	tsoTCPMinLen  = 20
	tsoTCPSeqOff  = 4
	tsoTCPDoffOff = 12
	tsoTCPFlagOff = 13
	tsoTCPCsumOff = 16

	tsoTCPFin = 0x01
	tsoTCPPsh = 0x08
	tsoTCPCwr = 0x80
)

// tsoMaxOutBytes bounds what one TSO chain may expand to, headers repeated
// in every segment included, so a guest cannot make the device allocate
// without limit with a tiny MSS under big headers. Linux's worst case, 64
// KiB cut by an MSS of a few dozen bytes under ~256 bytes of headers, is
// about half of it.
const tsoMaxOutBytes = 2 << 20

// tsoOutBufBytes is the first size of the segment buffer: room for 64 KiB
// cut by MSS 536 under 128 bytes of headers, so common chains never
// regrow it.
const tsoOutBufBytes = 128 << 10

// tsoHeaders locates the headers of a TSO packet.
type tsoHeaders struct {
	l3, l4, end int // IP header, TCP header, first payload byte
	ipv6        bool
}

// tsoParse parses Ethernet (with up to two VLAN tags), IPv4 or IPv6 (hop-by-hop and
// destination-options extension headers allowed) and TCP at the start of h.
func tsoParse(h []byte) (tsoHeaders, error) {
	var t tsoHeaders
	if len(h) < tsoEthHdrLen {
		return t, fmt.Errorf("%d-byte Ethernet header: %w", len(h), errTSOHeader)
	}
	et := binary.BigEndian.Uint16(h[tsoEthTypeOff:])
	off := tsoEthHdrLen
	for tags := 0; (et == tsoEthTypeVLAN || et == tsoEthTypeQinQ) && tags < tsoMaxVLANTags; tags++ {
		if len(h) < off+tsoVLANLen {
			return t, fmt.Errorf("truncated VLAN tag: %w", errTSOHeader)
		}
		et = binary.BigEndian.Uint16(h[off+2:])
		off += tsoVLANLen
	}
	t.l3 = off
	switch et {
	case tsoEthTypeIPv4:
		if len(h) < off+tsoIPv4MinLen || h[off]>>4 != 4 {
			return t, fmt.Errorf("bad IPv4 header: %w", errTSOHeader)
		}
		ihl := int(h[off]&0xF) * 4
		if ihl < tsoIPv4MinLen || len(h) < off+ihl {
			return t, fmt.Errorf("IPv4 header length %d: %w", ihl, errTSOHeader)
		}
		if p := h[off+tsoIPv4ProtoOff]; p != tsoIPProtoTCP {
			return t, fmt.Errorf("IPv4 protocol %d: %w", p, errTSOHeader)
		}
		if binary.BigEndian.Uint16(h[off+tsoIPv4FragOff:])&tsoIPv4MFOffMask != 0 {
			return t, fmt.Errorf("IPv4 fragment: %w", errTSOHeader)
		}
		t.l4 = off + ihl
	case tsoEthTypeIPv6:
		if len(h) < off+tsoIPv6Len || h[off]>>4 != 6 {
			return t, fmt.Errorf("bad IPv6 header: %w", errTSOHeader)
		}
		t.ipv6 = true
		next, l4 := h[off+tsoIPv6NextOff], off+tsoIPv6Len
		for ext := 0; next != tsoIPProtoTCP; ext++ {
			if (next != tsoIPv6HopByHop && next != tsoIPv6DestOpts) || ext == tsoMaxIPv6Ext || len(h) < l4+8 {
				return t, fmt.Errorf("IPv6 next header %d: %w", next, errTSOHeader)
			}
			next, l4 = h[l4], l4+(int(h[l4+1])+1)*8
		}
		t.l4 = l4
	default:
		return t, fmt.Errorf("EtherType %#04x: %w", et, errTSOHeader)
	}
	if len(h) < t.l4+tsoTCPMinLen {
		return t, fmt.Errorf("truncated TCP header: %w", errTSOHeader)
	}
	doff := int(h[t.l4+tsoTCPDoffOff]>>4) * 4
	if doff < tsoTCPMinLen || len(h) < t.l4+doff {
		return t, fmt.Errorf("TCP data offset %d: %w", doff, errTSOHeader)
	}
	t.end = t.l4 + doff
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
		if pld < 0 && d.flags()&flagTSOPld != 0 {
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

	id := binary.BigEndian.Uint16(hdr[t.l3+tsoIPv4IDOff:])
	seq := binary.BigEndian.Uint32(hdr[t.l4+tsoTCPSeqOff:])
	tcpFlags := hdr[t.l4+tsoTCPFlagOff]
	// Pseudo-header without its length: addresses and protocol.
	var pseudo uint32
	if t.ipv6 {
		pseudo = onesSum(hdr[t.l3+tsoIPv6SrcOff:t.l3+tsoIPv6SrcOff+32], tsoIPProtoTCP)
	} else {
		pseudo = onesSum(hdr[t.l3+tsoIPv4SrcOff:t.l3+tsoIPv4SrcOff+8], tsoIPProtoTCP)
	}
	pseudo = uint32(checksumFold(pseudo))

	s.frames = s.frames[:0]
	off := 0
	for k := range nseg {
		chunk := pay[k*mss : min((k+1)*mss, len(pay))]
		f := out[off : off+hlen+len(chunk) : off+hlen+len(chunk)]
		copy(f, hdr)
		copy(f[hlen:], chunk)
		ip, tcp := f[t.l3:t.l4], f[t.l4:]
		if t.ipv6 {
			binary.BigEndian.PutUint16(ip[tsoIPv6PayLenOff:], uint16(len(f)-t.l3-tsoIPv6Len))
		} else {
			binary.BigEndian.PutUint16(ip[tsoIPv4TotLenOff:], uint16(len(f)-t.l3))
			binary.BigEndian.PutUint16(ip[tsoIPv4IDOff:], id+uint16(k))
			binary.BigEndian.PutUint16(ip[tsoIPv4CsumOff:], 0)
			binary.BigEndian.PutUint16(ip[tsoIPv4CsumOff:], ^checksumFold(onesSum(ip, 0)))
		}
		binary.BigEndian.PutUint32(tcp[tsoTCPSeqOff:], seq+uint32(k)*uint32(mss))
		fl := tcpFlags
		if k > 0 {
			fl &^= tsoTCPCwr
		}
		if k < nseg-1 {
			fl &^= tsoTCPFin | tsoTCPPsh
		}
		tcp[tsoTCPFlagOff] = fl
		binary.BigEndian.PutUint16(tcp[tsoTCPCsumOff:], 0)
		sum := onesSum(tcp, pseudo+uint32(len(tcp)))
		binary.BigEndian.PutUint16(tcp[tsoTCPCsumOff:], ^checksumFold(sum))
		s.frames = append(s.frames, f)
		off += len(f)
	}
	return s.frames
}
