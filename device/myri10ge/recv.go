package myri10ge

import (
	"encoding/binary"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/internal/header"
	"github.com/sirupsen/logrus"
)

// recvDesc is a view of one receive ring entry (mcp_kreq_ether_recv,
// §5.2): the bus address of a buffer the driver posted, big-endian. It is
// always a whole entry: recvDescAt cuts it from a ring.
type recvDesc []byte

func (d recvDesc) addrLow() uint32 { return binary.BigEndian.Uint32(d[abi.RecvOffAddrLow:]) }

// addr is the guest bus address of the buffer.
func (d recvDesc) addr() uint64 {
	return host64(binary.BigEndian.Uint32(d[abi.RecvOffAddrHigh:]), d.addrLow())
}

// recvDescAt is the view of the receive entry at BAR0 offset off.
func (n *NIC) recvDescAt(off uint64) recvDesc {
	return recvDesc(n.bar0[off : off+abi.RecvDescSize : off+abi.RecvDescSize])
}

// dropCounters are the firmware's receive drop counters, reported in the
// interrupt block (§6.1) and reset by CMD_RESET.
type dropCounters struct {
	unicastFiltered, multicastFiltered uint32
	linkError                          uint32 // arrived while the data path was stopped
	runt, overrun                      uint32
	pause                              uint32 // PAUSE frames received (pause.go)
	noSmall, noBig                     uint32
}

// fields renders the drop counters for the detach log line, so that a
// receive drop can be told apart from a filtered frame after the fact.
func (d dropCounters) fields() logrus.Fields {
	return logrus.Fields{
		"drop_unicast_filtered": d.unicastFiltered, "drop_multicast_filtered": d.multicastFiltered,
		"drop_link_error": d.linkError, "drop_runt": d.runt, "drop_overrun": d.overrun,
		"drop_no_small": d.noSmall, "drop_no_big": d.noBig,
	}
}

// smallRingWrittenLocked looks at a store into slice i's small receive
// ring; see recvRingWrittenLocked.
func (n *NIC) smallRingWrittenLocked(i int, rel uint64, size int) {
	n.recvRingWrittenLocked(n.slices[i], false, rel, size)
}

// bigRingWrittenLocked looks at a store into slice i's big receive ring.
func (n *NIC) bigRingWrittenLocked(i int, rel uint64, size int) {
	n.recvRingWrittenLocked(n.slices[i], true, rel, size)
}

// recvRingWrittenLocked looks at a store into a receive ring. The driver
// posts buffers in aligned groups of 8: it copies the group with the
// first entry's addr_low set to 0xFFFFFFFF, then stores the real addr_low
// (§5.2). A store that leaves a group's first addr_low valid is the
// doorbell for those 8 buffers.
func (n *NIC) recvRingWrittenLocked(s *slice, big bool, rel uint64, size int) {
	base := smallRingOff(s.idx)
	ring := &s.rx[ringSmall]
	if big {
		base, ring = bigRingOff(s.idx), &s.rx[ringBig]
	}
	const groupBytes = abi.RecvGroup * abi.RecvDescSize
	for g := rel / groupBytes; g*groupBytes < rel+uint64(size) && g < rxRingEntries/abi.RecvGroup; g++ {
		first := g * groupBytes                  // entry 8g
		lowEnd := first + abi.RecvOffAddrLow + 3 // last byte of its addr_low
		if !covers(rel, size, lowEnd) || n.recvDescAt(base+first).addrLow() == abi.RecvInvalidLow {
			continue
		}
		want := (ring.posted / abi.RecvGroup) % (rxRingEntries / abi.RecvGroup)
		switch {
		case uint32(g) != want:
			n.guestErrorLocked("receive buffers posted out of order", "group", g)
		case ring.avail()+abi.RecvGroup > rxRingEntries:
			n.guestErrorLocked("receive ring overfilled", "posted", ring.avail())
		default:
			ring.posted += abi.RecvGroup
			n.drainPostedLocked(s)
		}
	}
}

// Deliver implements fabric.Receiver: frames from the wire.
func (n *NIC) Deliver(frames [][]byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	touched := uint64(0)
	for _, f := range frames {
		if s := n.receiveLocked(f); s != nil {
			touched |= 1 << s.idx
		}
	}
	for _, s := range n.slices {
		if touched&(1<<s.idx) != 0 {
			n.maybeInterruptLocked(s)
		}
	}
	if touched != 0 && n.pio.win != nil {
		n.kickPollerLocked()
	}
}

// accepts is the receive filter (§5.3 step 1).
func (n *NIC) accepts(dst []byte) bool {
	d := [6]byte(dst)
	switch {
	case n.fw.promisc:
		return true
	case d[0]&1 == 0:
		if d != n.fw.mac {
			n.drops.unicastFiltered++
			return false
		}
		return true
	case d == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} || n.fw.allMulti:
		return true
	}
	if _, ok := n.fw.mcast[d]; ok {
		return true
	}
	n.drops.multicastFiltered++
	return false
}

// receiveLocked writes one frame into the guest's buffers and its rx_done
// slot (§5.3), or keeps it until buffers come (rxhold.go). It returns the
// slice that got it, or nil for a frame dropped or held.
func (n *NIC) receiveLocked(f []byte) *slice {
	switch {
	case !n.fw.running:
		n.drops.linkError++
	case len(f) < 14:
		n.drops.runt++
	case isPause(f):
		n.pauseLocked(f)
	case len(f) > n.fw.maxFrame:
		n.drops.overrun++
	case !n.accepts(f[:6]):
	default:
		s := n.steerLocked(f)
		landed := n.drainHoldLocked(s) // frames before f go first
		got := rxShort
		if s.hold.empty() {
			got = n.fillLocked(s, f)
		}
		switch {
		case got == rxFilled:
			n.stats.RxFrames++
			n.stats.RxBytes += uint64(len(f))
			landed = true
		case got == rxShort && n.holdLocked(s, f):
		default:
			n.stats.RxDropped++
		}
		if landed {
			return s
		}
		return nil
	}
	n.stats.RxDropped++
	return nil
}

// rxFill is what became of a frame offered to a slice's buffers.
type rxFill uint8

const (
	rxFilled rxFill = iota // written, with its rx_done slot
	rxShort                // too few buffers posted: the frame may wait
	rxFailed               // dropped: the slice cannot receive (halted, no rx_done ring, DMA failed)
)

// fillLocked copies f into slice s's buffers: the small ring for frames of
// up to small_bytes, else the big ring in chunks of the big buffer size,
// always behind the 2-byte pad (§5.3 steps 3-6). The other ring is never
// used as a fallback: the driver picks the ring by length the same way.
func (n *NIC) fillLocked(s *slice, f []byte) rxFill {
	if s.halted {
		return rxFailed
	}
	if !s.rxDoneSet {
		n.guestErrorLocked("frame for a slice without an rx_done ring", "slice", s.idx)
		return rxFailed
	}
	ringIdx, base, chunk := ringSmall, smallRingOff(s.idx), n.fw.smallBytes+abi.RxPad
	if len(f) > n.fw.smallBytes {
		ringIdx, base, chunk = ringBig, bigRingOff(s.idx), n.fw.bigBytes
	}
	r := &s.rx[ringIdx]
	need := uint32((len(f) + abi.RxPad + chunk - 1) / chunk)
	if r.avail() < need {
		n.rxShortLocked(s, ringIdx, need) // pio.go: postings the poller has not taken yet
	}
	if r.avail() < need {
		return rxShort
	}
	// The pad bytes are the driver's to ignore; only the frame is written.
	stream := -abi.RxPad // frame offset at the start of the current buffer
	for j := uint32(0); j < need; j++ {
		e := base + uint64((r.consumed+j)%rxRingEntries)*abi.RecvDescSize
		addr := n.recvDescAt(e).addr()
		lo, hi := max(stream, 0), min(stream+chunk, len(f))
		if !n.dmaWriteLocked(s, "receive buffer", addr+uint64(lo-stream), f[lo:hi]) {
			return rxFailed
		}
		stream += chunk
	}
	n.markUsedLocked(base, r.consumed, r.consumed+need)
	r.consumed += need

	slot := s.rxDoneAddr + uint64(s.rxDoneIdx%uint32(n.fw.intrqSlots))*abi.SlotSize
	var w [4]byte
	binary.BigEndian.PutUint16(w[0:], rxChecksum(f))
	binary.BigEndian.PutUint16(w[2:], uint16(len(f)))
	if !n.rxDoneStoreLocked(s, slot, w) {
		return rxFailed
	}
	s.rxDoneIdx++
	s.rxPending = true
	return rxFilled
}

// steerLocked picks the slice for a received frame: slice 0 unless several
// are enabled, then a hash of the IP addresses and ports through the
// driver's indirection table, so one flow always lands on one slice.
func (n *NIC) steerLocked(f []byte) *slice {
	ns := n.fw.numSlices
	if ns <= 1 {
		return n.slices[0]
	}
	h := flowHash(f)
	idx := int(h % uint32(ns))
	if n.fw.rssEnabled && n.fw.rssTableSize > 0 {
		idx = int(n.bar0[rssTableOff+uint64(h%uint32(n.fw.rssTableSize))])
		if idx >= ns {
			idx = 0
		}
	}
	return n.slices[idx]
}

// flowHash hashes a frame's IPv4/IPv6 addresses and TCP/UDP ports;
// anything else, and a frame whose IP header is not valid, hashes to 0.
func flowHash(f []byte) uint32 {
	l, ok := header.Parse(f)
	if !ok {
		return 0
	}
	var addrs []byte
	switch l.EtherType {
	case header.EtherTypeIPv4:
		addrs = header.IPv4(f[l.L3:]).Addresses()
	case header.EtherTypeIPv6:
		addrs = header.IPv6(f[l.L3:]).Addresses()
	default:
		return 0
	}
	h := fnv1a(fnvOffset, addrs)
	if l.L4 != 0 && (l.Proto == header.ProtoTCP || l.Proto == header.ProtoUDP) && len(f) >= l.L4+header.PortsSize {
		h = fnv1a(h, f[l.L4:l.L4+header.PortsSize])
	}
	return fmix32(h)
}

// fmix32 is MurmurHash3's finalizer. The slice comes from the hash's low
// bits (the driver's slice counts are powers of two), and the low k bits
// of FNV-1a depend only on the low k bits of each input byte: without it,
// flows whose ports differ only above bit 0 (Linux's connect() picks even
// source ports) all land on one slice of two.
func fmix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85EBCA6B
	h ^= h >> 13
	h *= 0xC2B2AE35
	h ^= h >> 16
	return h
}

// FNV-1a, inline: hash/fnv's interface value would allocate per frame.
const (
	fnvOffset = 2166136261
	fnvPrime  = 16777619
)

func fnv1a(h uint32, b []byte) uint32 {
	for _, c := range b {
		h = (h ^ uint32(c)) * fnvPrime
	}
	return h
}
