package myri10ge

import (
	"encoding/binary"
	"time"
)

// BAR0 layout chosen by the device and handed to the driver by command
// (§2.2). Every per-slice area is spaced for MaxSlices slices.
const (
	sendRingBase    = 0x200000 // + slice*sendRingStride
	sendRingStride  = 0x4000
	sendRingEntries = 1024 // GET_SEND_RING_SIZE = 16 KiB
	smallRingBase   = 0x300000
	bigRingBase     = 0x340000
	rxRingStride    = 0x1000
	rxRingEntries   = 512      // GET_RX_RING_SIZE = 4 KiB; both rings
	irqAckBase      = 0x3E0000 // claim pair of slice s at +8s
	irqDeassertOff  = 0x3E0400
	intrCoalOff     = 0x3E0408
	rssTableOff     = 0x3E0800

	sendRingBytes = sendRingEntries * sendDescSize
	rxRingBytes   = rxRingEntries * recvDescSize

	defaultCoalDelay = 75 * time.Microsecond // the driver's default, until it writes its own
)

func sendRingOff(s int) uint64  { return sendRingBase + uint64(s)*sendRingStride }
func smallRingOff(s int) uint64 { return smallRingBase + uint64(s)*rxRingStride }
func bigRingOff(s int) uint64   { return bigRingBase + uint64(s)*rxRingStride }

// linkEvent is a link report waiting for the next interrupt block.
type linkEvent uint8

const (
	linkEventNone linkEvent = iota
	linkEventUp             // link came up (ETHERNET_UP, or carrier while up)
	linkEventLost           // carrier lost while up
	linkEventDown           // ETHERNET_DOWN: the one report with link_down set
)

// fwState is what the firmware knows beyond the per-slice state. Its zero
// value plus resetFirmwareLocked's assignments are the state after
// CMD_RESET; the fields are grouped as the commands that set them.
type fwState struct {
	running bool // between ETHERNET_UP and ETHERNET_DOWN

	// Buffer geometry (SET_MTU, SET_SMALL/BIG_BUFFER_SIZE, SET_INTRQ_SIZE).
	maxFrame   int // SET_MTU: longest frame accepted, without FCS
	smallBytes int // frames up to this length use the small ring
	bigBytes   int // chunk size of big-ring buffers
	intrqSlots int // rx_done slots per slice

	// Filters (SET_MAC_ADDRESS, PROMISC, ALLMULTI, multicast groups).
	mac      [6]byte
	promisc  bool
	allMulti bool
	mcast    map[[6]byte]struct{}

	// Slices and RSS (ENABLE_RSS_QUEUES, SET_RSS_*).
	numSlices    int
	multiTx      bool
	rssTableSize int
	rssEnabled   bool
	rssHashType  uint32

	flowControl bool
	tsoMode     uint32
	coalDelay   time.Duration
	dummyRDMA   bool

	linkEvent linkEvent // reported through slice 0's interrupt block
}

// resetFirmwareLocked is CMD_RESET (§4.3 #1): stop the data path, forget
// every configuration, hand both tokens back to the device and zero the
// send rings so no stale flags survive.
func (n *NIC) resetFirmwareLocked() {
	n.fw = fwState{
		maxFrame:    1518,
		smallBytes:  128 - rxPad,
		bigBytes:    4096,
		intrqSlots:  2 * rxRingEntries,
		numSlices:   1,
		mac:         [6]byte(n.cfg.MAC),
		allMulti:    true,
		mcast:       make(map[[6]byte]struct{}),
		flowControl: true,
		coalDelay:   defaultCoalDelay,
		dummyRDMA:   n.fw.dummyRDMA, // a board reset does not stop it; only the driver does
	}
	n.drops = dropCounters{}
	n.epoch++
	for _, s := range n.slices {
		s.reset()
		clear(n.bar0[sendRingOff(s.idx) : sendRingOff(s.idx)+sendRingBytes])
	}
	binary.BigEndian.PutUint32(n.bar0[intrCoalOff:], uint32(defaultCoalDelay/time.Microsecond))
}

// covers reports whether a write of n bytes at off touches byte b.
func covers(off uint64, n int, b uint64) bool { return off <= b && b < off+uint64(n) }

// bar0WrittenLocked runs the side effects of a BAR0 write whose bytes are
// already stored (§2.4). Most of BAR0 is plain memory; only the windows
// below react.
func (n *NIC) bar0WrittenLocked(off uint64, size int) {
	end := off + uint64(size)
	switch {
	case off < sendRingBase:
		// Header, EEPROM strings and the firmware staging area: memory.
	case end <= sendRingBase+MaxSlices*sendRingStride:
		s := int((off - sendRingBase) / sendRingStride)
		if s < len(n.slices) {
			n.sendWrittenLocked(n.slices[s], off-sendRingOff(s), size)
		}
	case off >= smallRingBase && end <= bigRingBase+MaxSlices*rxRingStride:
		big := off >= bigRingBase
		base := uint64(smallRingBase)
		if big {
			base = bigRingBase
		}
		s := int((off - base) / rxRingStride)
		if s < len(n.slices) {
			n.recvRingWrittenLocked(n.slices[s], big, off-base-uint64(s)*rxRingStride, size)
		}
	case off >= offSendGo && end <= offSendStop+MaxSlices*64:
		// SEND_GO/SEND_STOP (§5.7): hints for a polling firmware. Rings
		// are processed at their doorbell, so a GO only prompts a rescan.
		if off < offSendStop {
			if s := int((off - offSendGo) / 64); s < len(n.slices) {
				n.transmitLocked(n.slices[s])
			}
		}
	case off >= irqAckBase && end <= irqAckBase+MaxSlices*8:
		s := int((off - irqAckBase) / 8)
		if s < len(n.slices) {
			n.claimLocked(n.slices[s], (off-irqAckBase)%8 >= 4)
		}
	case covers(off, size, irqDeassertOff):
		n.deassertLocked()
	case covers(off, size, intrCoalOff):
		us := binary.BigEndian.Uint32(n.bar0[intrCoalOff:])
		n.fw.coalDelay = time.Duration(us) * time.Microsecond
	case covers(off, size, offCmd+blockSize-1):
		n.commandLocked()
	case covers(off, size, offBootHandoff+blockSize-1):
		n.handoffLocked()
	case covers(off, size, offDummyRDMA+blockSize-1):
		n.dummyRDMALocked()
	}
}

// be32 reads a big-endian word of BAR0.
func (n *NIC) be32(off uint64) uint32 { return binary.BigEndian.Uint32(n.bar0[off:]) }

// host64 joins the high and low words of a host bus address.
func host64(hi, lo uint32) uint64 { return uint64(hi)<<32 | uint64(lo) }

// confirmLocked DMAs the 0xFFFFFFFF confirmation word the driver polls
// for after a handoff or dummy RDMA (§3.6, §3.7).
func (n *NIC) confirmLocked(block uint64, what string) {
	addr := host64(n.be32(block), n.be32(block+4))
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], n.be32(block+8))
	if err := n.storeHostLocked(addr, w); err != nil {
		n.dmaFailedLocked(err, what)
	}
}

// handoffLocked acknowledges a firmware file load (§3.6). The file's code
// is not run: this package is the firmware. The driver expects a board
// that restarted, so the state resets as for CMD_RESET.
func (n *NIC) handoffLocked() {
	n.stats.Handoffs++
	n.resetFirmwareLocked()
	n.confirmLocked(offBootHandoff, "handoff confirm")
	n.log.WithField("length", n.be32(offBootHandoff+0x10)).Info("firmware handoff")
}

// dummyRDMALocked acknowledges the dummy RDMA switch (§3.7); the periodic
// host reads it enables exist to work around chipsets we do not have.
func (n *NIC) dummyRDMALocked() {
	n.fw.dummyRDMA = n.be32(offDummyRDMA+0x14) != 0
	n.confirmLocked(offDummyRDMA, "dummy RDMA confirm")
}

// storeHostLocked writes the four bytes w to host memory as one store.
func (n *NIC) storeHostLocked(addr uint64, w [4]byte) error {
	if !n.attached {
		return errNotAttached
	}
	return n.host.Mem.Store32(addr, binary.NativeEndian.Uint32(w[:]))
}
