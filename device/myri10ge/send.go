package myri10ge

import (
	"encoding/binary"
	"fmt"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/header"
)

// The transmit engine (§5.4, §5.5): it takes one posted packet from a
// slice's send ring, gathers it by DMA, applies checksum offload or TSO
// segmentation and hands back the wire frames.

// sendDesc is a view of one send descriptor (mcp_kreq_ether_send, §5.4):
// 16 bytes, big-endian fields. It is always a whole descriptor: desc cuts
// it from the snapshot of the chain.
type sendDesc []byte

// addr is the guest bus address of the descriptor's bytes.
func (d sendDesc) addr() uint64 {
	return uint64(binary.BigEndian.Uint32(d[abi.SendOffAddrHigh:]))<<32 | uint64(binary.BigEndian.Uint32(d[abi.SendOffAddrLow:]))
}

// pseudoHdrOffset is where a non-TSO checksum goes, or a TSO packet's MSS.
func (d sendDesc) pseudoHdrOffset() int {
	return int(binary.BigEndian.Uint16(d[abi.SendOffPseudoHdrOff:]))
}

func (d sendDesc) length() int      { return int(binary.BigEndian.Uint16(d[abi.SendOffLength:])) }
func (d sendDesc) rdmaCount() int   { return int(d[abi.SendOffRDMACount]) }
func (d sendDesc) cksumOffset() int { return int(d[abi.SendOffCksumOffset]) }
func (d sendDesc) flags() uint8     { return d[abi.SendOffFlags] }

// A malformed chain is consumed and dropped; take says why with a
// sendFault (errors.Is), or with a wrapped *dma.Error when a DMA failed.
// Like syscall.Errno, a sendFault is a number whose text is in a table.
type sendFault uint8

const (
	errSendRing sendFault = iota + 1
	errSendNotFirst
	errSendNotPosted
	errSendTooManyDescs
	errSendLength
	errSendCksumOffset
	errTSOMSS
	errTSONoPayload
	errTSONoLast
	errTSOHeader
	errTSOSegmentTooLong
	errTSOTooManySegments
)

var sendFaultText = [...]string{
	errSendRing:           "send ring is not a whole number of descriptors",
	errSendNotFirst:       "descriptor at the ring head lacks FIRST",
	errSendNotPosted:      "continuation descriptor not posted",
	errSendTooManyDescs:   "too many descriptors in the chain",
	errSendLength:         "frame length out of range",
	errSendCksumOffset:    "checksum offsets outside the frame",
	errTSOMSS:             "TSO chain with MSS 0",
	errTSONoPayload:       "TSO chain without payload",
	errTSONoLast:          "TSO chain does not end with TSO_LAST",
	errTSOHeader:          "TSO headers not Ethernet/IP/TCP",
	errTSOSegmentTooLong:  "TSO segment longer than the largest frame",
	errTSOTooManySegments: "TSO chain expands to too many segment bytes",
}

func (f sendFault) Error() string { return sendFaultText[f] }

// sender gathers packets from one slice's send ring. Its buffers are reused
// from packet to packet; frames returned by take stay valid until the next
// call. Not safe for concurrent use (the device calls it under its lock).
type sender struct {
	// snap holds the descriptors of the chain being taken, copied out of
	// the ring once, so a guest rewriting the ring meanwhile cannot make
	// the validated lengths and the gathered ones disagree.
	snap   [abi.MaxSendDescTSO * abi.SendDescSize]byte
	buf    []byte   // the gathered byte stream
	out    []byte   // TSO segments, back to back
	frames [][]byte // what take returns
	run    dma.Run  // the transmit path's run of gathers (transmitLocked)
}

func newSender() *sender { return &sender{} }

// desc returns descriptor j of the snapshot.
func (s *sender) desc(j int) sendDesc {
	return sendDesc(s.snap[j*abi.SendDescSize : (j+1)*abi.SendDescSize : (j+1)*abi.SendDescSize])
}

// take examines the descriptor at ring index idx (mod the ring's entries).
// If its flags byte is 0 nothing is posted and n is 0. Otherwise it finds
// the chain (non-TSO: the first descriptor's rdma_count descriptors, 0
// counting as 1; TSO: the flags rule of §5.5), gathers it through mem,
// applies checksum offload or TSO segmentation, clears all 16 bytes of
// every consumed descriptor in ring and returns how many it consumed and
// the wire frames (valid until the next call). Frames are neither padded
// nor given an FCS.
//
// A malformed chain is consumed and dropped: n > 0, frames nil and err says
// why (a wrapped *dma.Error when a DMA failed). take never consumes a
// descriptor whose flags are 0 nor one that starts another packet, never
// reads outside ring and never walks more than the ring's entries.
func (s *sender) take(ring []byte, idx uint32, mem dma.Space) (n int, frames [][]byte, err error) {
	entries := len(ring) / abi.SendDescSize
	if entries == 0 || len(ring)%abi.SendDescSize != 0 {
		return 0, nil, fmt.Errorf("myri10ge: send ring of %d bytes: %w", len(ring), errSendRing)
	}
	head := int(idx % uint32(entries))
	slot := func(j int) []byte {
		o := (head + j) % entries * abi.SendDescSize
		return ring[o : o+abi.SendDescSize : o+abi.SendDescSize]
	}
	first := slot(0)
	f := first[abi.SendOffFlags]
	if f == 0 {
		return 0, nil, nil
	}
	copy(s.snap[:abi.SendDescSize], first)

	n, err = s.chain(f, entries, slot)
	if err == nil {
		if f&abi.FlagNoTSO != 0 {
			frames, err = s.plain(n, mem)
		} else {
			frames, err = s.tso(n, mem)
		}
	}
	for j := range n {
		clear(slot(j))
	}
	if err != nil {
		return n, nil, err
	}
	return n, frames, nil
}

// chain finds how many descriptors the packet whose first descriptor (flags
// f) is in s.snap consumes, copying those the packet may use into s.snap.
// It returns an error, with the count to consume anyway, when the chain is
// malformed.
func (s *sender) chain(f uint8, entries int, slot func(int) []byte) (int, error) {
	if f&abi.FlagFirst == 0 {
		// §5.4 step 1.1: skip the descriptor.
		return 1, fmt.Errorf("myri10ge: send flags %#02x: %w", f, errSendNotFirst)
	}
	n := 1
	if f&abi.FlagNoTSO != 0 {
		// Non-TSO: rdma_count descriptors, each posted and none starting
		// a packet of its own.
		want := max(s.desc(0).rdmaCount(), 1)
		n = s.extend(n, min(want, entries), abi.MaxSendDesc, slot, startsPacket)
		if want > abi.MaxSendDesc {
			return n, fmt.Errorf("myri10ge: send rdma_count %d, at most %d: %w", want, abi.MaxSendDesc, errSendTooManyDescs)
		}
		if n < want {
			return n, fmt.Errorf("myri10ge: send descriptor %d of %d: %w", n, want, errSendNotPosted)
		}
		return n, nil
	}
	// TSO (§5.5): take descriptors while they are posted and either not
	// FIRST or payload; a later packet's first descriptor is FIRST without
	// TSO_PLD (or still 0 until its doorbell).
	n = s.extend(n, entries, abi.MaxSendDescTSO, slot, startsTSOPacket)
	if n > abi.MaxSendDescTSO {
		return n, fmt.Errorf("myri10ge: send TSO chain of %d descriptors, at most %d: %w", n, abi.MaxSendDescTSO, errSendTooManyDescs)
	}
	if s.desc(n-1).flags()&abi.FlagTSOLast == 0 {
		return n, fmt.Errorf("myri10ge: send TSO chain of %d descriptors: %w", n, errTSONoLast)
	}
	return n, nil
}

// extend grows a chain of n descriptors while the next one is posted
// (flags != 0) and does not start something else (ends(flags) false), up
// to limit descriptors. The first keep of them are copied into s.snap. It
// returns the chain's new length.
func (s *sender) extend(n, limit, keep int, slot func(int) []byte, ends func(flags uint8) bool) int {
	for n < limit {
		d := slot(n)
		fl := d[abi.SendOffFlags]
		if fl == 0 || ends(fl) {
			break
		}
		if n < keep {
			copy(s.snap[n*abi.SendDescSize:], d)
		}
		n++
	}
	return n
}

// startsPacket: in a non-TSO chain, a FIRST descriptor is the next packet.
func startsPacket(flags uint8) bool { return flags&abi.FlagFirst != 0 }

// startsTSOPacket: in a TSO chain, FIRST without TSO_PLD is the next
// packet's first descriptor (a FIRST payload descriptor only starts a segment).
func startsTSOPacket(flags uint8) bool { return flags&(abi.FlagFirst|abi.FlagTSOPld) == abi.FlagFirst }

// plain gathers a non-TSO packet of n descriptors and applies checksum
// offload (§5.4 step 1.4).
func (s *sender) plain(n int, mem dma.Space) ([][]byte, error) {
	total := 0
	for j := range n {
		total += s.desc(j).length()
	}
	if total < fabric.MinFrame || total > fabric.MaxFrame {
		return nil, fmt.Errorf("myri10ge: send frame of %d bytes, want %d..%d: %w", total, fabric.MinFrame, fabric.MaxFrame, errSendLength)
	}
	frame, err := s.gather(n, total, mem)
	if err != nil {
		return nil, err
	}
	first := s.desc(0)
	if first.flags()&abi.FlagCksum != 0 {
		// The field at pos holds the stack's pseudo-header seed and lies
		// inside the summed range (the driver's pos = csum_start +
		// csum_offset): the generic NETIF_F_HW_CSUM contract.
		cs, pos := first.cksumOffset(), first.pseudoHdrOffset()
		if cs > total || pos < cs || pos+2 > total {
			return nil, fmt.Errorf("myri10ge: send checksum from %d into %d of a %d-byte frame: %w", cs, pos, total, errSendCksumOffset)
		}
		c := ^checksumFold(onesSum(frame[cs:], 0))
		// pos - cs is the driver's csum_offset (§5.4).
		if c == 0 && pos-cs == header.UDPChecksumOff {
			// In a UDP (or UDP-Lite) header 0 means "no checksum", so a
			// computed 0 goes out as its other representation (RFC 768).
			// Everywhere else 0x0000 stays: a correct ones'-complement
			// computation never yields 0xFFFF (RFC 1624), and tools like
			// tshark flag a TCP checksum of 0xFFFF as bad.
			c = 0xFFFF
		}
		binary.BigEndian.PutUint16(frame[pos:], c)
	}
	s.frames = append(s.frames[:0], frame)
	return s.frames, nil
}

// gather reads the n descriptors of the snapshot, total bytes in all, into
// s.buf and returns them.
func (s *sender) gather(n, total int, mem dma.Space) ([]byte, error) {
	if cap(s.buf) < total {
		s.buf = make([]byte, max(total, fabric.MaxFrame)) // one size fits every non-TSO frame
	}
	buf := s.buf[:total:total]
	off := 0
	for j := range n {
		d := s.desc(j)
		l := d.length()
		if _, err := mem.ReadAt(buf[off:off+l], d.addr()); err != nil {
			return nil, fmt.Errorf("myri10ge: send gather of descriptor %d: %w", j, err)
		}
		off += l
	}
	return buf, nil
}
