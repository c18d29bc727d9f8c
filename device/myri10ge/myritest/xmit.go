package myritest

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The driver's side of the send ring: how the Linux myri10ge driver turns a
// packet into send descriptors (myri10ge_xmit) and posts them to BAR0
// (myri10ge_submit_req). Written from the driver's source, in our own
// words; the device's view is in shared/reference/myri10ge-device-interface.md
// §5.4 and §5.5.

// Send descriptor (mcp_kreq_ether_send): 16 bytes, big-endian fields. The
// driver's ABI, repeated here because it is the driver's half of the
// contract and the device package keeps its copy unexported.
const (
	txDescSize      = 16
	txOffAddrHigh   = 0x0
	txOffAddrLow    = 0x4
	txOffPseudoHdr  = 0x8
	txOffLength     = 0xA
	txOffRDMACount  = 0xD
	txOffCksumOff   = 0xE
	txOffFlags      = 0xF
	txDoorbellOff   = 0xC // the final 4-byte store covers bytes 12..15
	txPIOStoreBytes = 8   // __iowrite64_copy on x86-64
)

// Send flags; values are shared between the TSO and non-TSO meanings.
const (
	txFlagSmall    = 0x01
	txFlagTSOHdr   = 0x01
	txFlagFirst    = 0x02
	txFlagAlignOdd = 0x04
	txFlagCksum    = 0x08
	txFlagTSOLast  = 0x08
	txFlagNoTSO    = 0x10
	txFlagTSOChop  = 0x10
	txFlagTSOPld   = 0x20
)

const (
	txMaxSendDesc    = 12   // MXGEFW_MAX_SEND_DESC
	txMaxSendDescTSO = 64   // MYRI10GE_MAX_SEND_DESC_TSO
	txSendSmallSize  = 1520 // MXGEFW_SEND_SMALL_SIZE
	txEthZLen        = 60   // ETH_ZLEN: eth_skb_pad's target
	txMaxCksumStart  = 255  // larger csum_start: skb_checksum_help
	txMaxCksumPos    = 127  // larger csum_start+csum_offset: skb_checksum_help
)

// ErrTooManyDescs is EncodeSend's answer when a packet needs more
// descriptors than the driver allows (12, or 64 for TSO). The driver then
// linearizes a non-TSO skb and tries again, or drops a TSO one.
var ErrTooManyDescs = errors.New("myritest: packet needs too many send descriptors")

// TxFrag is a piece of a packet at a guest bus address: the skb's linear
// part or one of its page fragments, as DMA-mapped by the driver.
type TxFrag struct {
	Addr uint64
	Len  int
}

// TxPacket describes a packet the way the driver sees an skb.
type TxPacket struct {
	// Frags are the DMA-mapped pieces in order; the first is the linear
	// part (skb_headlen). Their lengths add up to Len.
	Frags []TxFrag
	Len   int // total bytes (skb->len)
	// CsumStart > 0 means CHECKSUM_PARTIAL: the checksum covers
	// [CsumStart, Len) and goes at CsumStart+CsumOffset, where the stack
	// has left the pseudo-header seed.
	CsumStart, CsumOffset int
	// MSS > 0 means TSO (skb_is_gso, gso_size). HdrLen is then the L2+L3+L4
	// header length (skb_transport_offset + tcp_hdrlen), CsumStart the
	// transport offset, and IPv6 tells TSO6 from TSO.
	MSS    int
	HdrLen int
	IPv6   bool
}

// EncodeSend builds the send descriptors for p exactly as the driver's
// myri10ge_xmit does, each 16 bytes in BAR0 (big-endian) order:
//   - every DMA piece is cut so that no descriptor crosses a txBoundary
//     (2048 or 4096: the driver's tx_boundary) address boundary;
//   - non-TSO: flags NO_TSO on every descriptor, FIRST on the first, SMALL
//     when Len <= 1520, CKSUM with cksum_offset = CsumStart (then what is
//     left of it in later descriptors) and pseudo_hdr_offset = CsumStart +
//     CsumOffset, ALIGN_ODD where the bytes before a descriptor are odd;
//     rdma_count is the descriptor count in the first descriptor, 1 in the
//     others;
//   - TSO: header descriptors TSO_HDR (the first also FIRST) cut exactly at
//     HdrLen; payload descriptors TSO_PLD, FIRST where an MSS segment
//     starts, CHOP where one ends strictly inside, SMALL when MSS <= 1520;
//     rdma_count filled in retroactively per run of descriptors between
//     cuts; pseudo_hdr_offset = MSS everywhere; cksum_offset the transport
//     offset counting down (IPv4) or the TCP header length (IPv6); TSO_LAST
//     on the descriptors of the last segment, walking back from the last
//     descriptor to the first one with CHOP or FIRST.
//
// Like the driver, a non-TSO packet whose CsumStart exceeds 255 or whose
// checksum position exceeds 127 is sent without CKSUM: the driver computes
// that checksum in software first (skb_checksum_help), and so must the
// caller. Also like the driver, a non-TSO packet shorter than 60 bytes is
// padded to 60 (eth_skb_pad): p must then be linear (one non-empty
// fragment) and the caller must have zeroed the 60-Len bytes that follow
// it, as skb_pad does. The driver keeps a buffer's high address word for
// all its pieces, so a fragment crossing a 4 GiB boundary gets a wrong
// address after the crossing; EncodeSend reproduces that too.
//
// A packet needing more descriptors than the driver allows gives
// ErrTooManyDescs; a TxPacket the driver could never see (lengths that do
// not add up, TSO without CHECKSUM_PARTIAL or headers) is an error.
func EncodeSend(p TxPacket, txBoundary int) ([][16]byte, error) {
	if txBoundary < 64 || txBoundary > 1<<15 || txBoundary&(txBoundary-1) != 0 {
		return nil, fmt.Errorf("myritest: tx boundary %d is not a power of two in 64..32768", txBoundary)
	}
	sum := 0
	for _, f := range p.Frags {
		if f.Len < 0 {
			return nil, fmt.Errorf("myritest: fragment length %d", f.Len)
		}
		sum += f.Len
	}
	if sum != p.Len || p.Len == 0 {
		return nil, fmt.Errorf("myritest: fragments hold %d bytes, packet length %d", sum, p.Len)
	}
	mss := p.MSS
	maxDescs := txMaxSendDesc
	if mss > 0 {
		maxDescs = txMaxSendDescTSO
		if p.CsumStart <= 0 || p.HdrLen <= p.CsumStart || p.HdrLen >= p.Len {
			return nil, fmt.Errorf("myritest: TSO needs CHECKSUM_PARTIAL and 0 < CsumStart %d < HdrLen %d < Len %d", p.CsumStart, p.HdrLen, p.Len)
		}
	}

	// Checksum offload set-up.
	cksumOff, pseudoHdr := 0, 0
	var oddFlag uint8
	flags := uint8(txFlagNoTSO | txFlagFirst)
	if p.CsumStart > 0 {
		cksumOff, pseudoHdr = p.CsumStart, p.CsumStart+p.CsumOffset
		if mss == 0 && (cksumOff > txMaxCksumStart || pseudoHdr > txMaxCksumPos) {
			cksumOff, pseudoHdr = 0, 0 // software checksum
		} else {
			oddFlag = txFlagAlignOdd
			flags |= txFlagCksum
		}
	}

	// cumLen: negative while in the TSO headers, then the offset within
	// the current MSS segment; for non-TSO, the bytes before.
	cumLen := 0
	frags := p.Frags
	switch {
	case mss > 0:
		flags = txFlagTSOHdr | txFlagFirst
		cumLen = -p.HdrLen
		if p.IPv6 {
			cksumOff = p.HdrLen - p.CsumStart // tcp_hdrlen
		}
		pseudoHdr = mss
	case p.Len <= txSendSmallSize:
		flags |= txFlagSmall
		if p.Len < txEthZLen {
			var lin []TxFrag
			for _, f := range frags {
				if f.Len > 0 {
					lin = append(lin, f)
				}
			}
			if len(lin) != 1 {
				return nil, fmt.Errorf("myritest: a %d-byte packet is padded to %d and must be one fragment, not %d", p.Len, txEthZLen, len(lin))
			}
			lin[0].Len += txEthZLen - p.Len
			frags = lin
		}
	}

	descs := make([][16]byte, 0, maxDescs)
	// rdma is the number of descriptors of the current run before the
	// current one; the run's first descriptor gets the run's length once
	// it is known.
	rdma := 0
	setRDMA := func(i, v int) {
		if i >= 0 && i < len(descs) {
			descs[i][txOffRDMACount] = byte(v)
		}
	}
	for _, f := range frags {
		low, high := uint32(f.Addr), uint32(f.Addr>>32)
		length := f.Len
		for length > 0 {
			if len(descs) == maxDescs {
				return nil, fmt.Errorf("myritest: %d-byte packet, MSS %d: %w", p.Len, mss, ErrTooManyDescs)
			}
			boundary := (low + uint32(txBoundary)) &^ uint32(txBoundary-1)
			seglen := min(int(boundary-low), length)
			flagsNext := flags &^ txFlagFirst
			cumNext := cumLen + seglen
			if mss > 0 {
				setRDMA(len(descs)-rdma, rdma+1)
				if cumLen >= 0 { // payload
					chop := cumNext > mss
					cumNext %= mss
					nextFirst := cumNext == 0
					if chop {
						flags |= txFlagTSOChop
					}
					if nextFirst {
						flagsNext |= txFlagFirst
					}
					switch {
					case nextFirst:
						rdma = -1 // the next run starts after this one
					case chop:
						rdma = 0 // the next run starts inside this one
					}
				} else if cumNext >= 0 { // the headers end here: cut
					rdma = -1
					cumNext = 0
					seglen = -cumLen
					flagsNext = txFlagTSOPld | txFlagFirst
					if mss <= txSendSmallSize {
						flagsNext |= txFlagSmall
					}
				}
			}
			var d [16]byte
			binary.BigEndian.PutUint32(d[txOffAddrHigh:], high)
			binary.BigEndian.PutUint32(d[txOffAddrLow:], low)
			binary.BigEndian.PutUint16(d[txOffPseudoHdr:], uint16(pseudoHdr))
			binary.BigEndian.PutUint16(d[txOffLength:], uint16(seglen))
			d[txOffRDMACount] = 1
			d[txOffCksumOff] = byte(cksumOff)
			d[txOffFlags] = flags
			if cumLen&1 != 0 {
				d[txOffFlags] |= oddFlag
			}
			descs = append(descs, d)

			low += uint32(seglen) // the high word stays: the driver's way
			length -= seglen
			cumLen = cumNext
			flags = flagsNext
			rdma++
			if cksumOff != 0 && !(mss > 0 && p.IPv6) {
				if cksumOff > seglen {
					cksumOff -= seglen
				} else {
					cksumOff = 0
				}
			}
		}
	}
	setRDMA(len(descs)-rdma, rdma)
	if mss > 0 {
		for i := len(descs) - 1; i >= 0; i-- {
			descs[i][txOffFlags] |= txFlagTSOLast
			if descs[i][txOffFlags]&(txFlagTSOChop|txFlagFirst) != 0 {
				break
			}
		}
	}
	return descs, nil
}

// Store is one store the driver makes to BAR0: len(Data) bytes at Off.
type Store struct {
	Off  uint64
	Data []byte
}

// SubmitOrder returns the BAR0 stores by which the driver posts descs at
// index idx of a send ring of entries descriptors (a power of two) at BAR0
// offset ringOff, in the driver's order (myri10ge_submit_req):
//   - the first descriptor is copied with flags 0;
//   - when idx+len(descs) < entries-1 the descriptors are copied forward,
//     two at a time, an odd last one alone;
//   - otherwise descriptors len-1 down to 1 are copied one at a time
//     backwards (wrapping), then the first one;
//   - each 16-byte copy is two ascending 8-byte stores (__iowrite64_copy);
//   - last, bytes 12..15 of the first descriptor, with its real flags, in
//     one 4-byte store: the doorbell.
func SubmitOrder(ringOff uint64, entries, idx int, descs [][16]byte) []Store {
	if len(descs) == 0 || entries <= 0 {
		return nil
	}
	mask := entries - 1
	idx &= mask
	first := descs[0]
	first[txOffFlags] = 0
	src := func(i int) []byte {
		if i == 0 {
			return first[:]
		}
		return descs[i][:]
	}
	var stores []Store
	copyDesc := func(slot, i int) {
		b := src(i)
		for o := 0; o < txDescSize; o += txPIOStoreBytes {
			stores = append(stores, Store{
				Off:  ringOff + uint64(slot)*txDescSize + uint64(o),
				Data: append([]byte(nil), b[o:o+txPIOStoreBytes]...),
			})
		}
	}
	cnt := len(descs)
	i := 0
	if idx+cnt < mask {
		for ; i < cnt-1; i += 2 {
			copyDesc(idx+i, i)
			copyDesc(idx+i+1, i+1)
		}
	} else {
		for j := cnt - 1; j > 0; j-- {
			copyDesc((idx+j)&mask, j)
		}
	}
	if i < cnt {
		copyDesc(idx+i, i) // i is 0 after a backwards copy
	}
	stores = append(stores, Store{
		Off:  ringOff + uint64(idx)*txDescSize + txDoorbellOff,
		Data: append([]byte(nil), descs[0][txDoorbellOff:txDescSize]...),
	})
	return stores
}
