package myri10ge

import (
	"encoding/binary"
	"time"
)

// defaultCoalDelay is the driver's default, until it writes its own.
const defaultCoalDelay = 75 * time.Microsecond

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

	coalDelay time.Duration
	dummyRDMA bool

	linkEvent linkEvent // reported through slice 0's interrupt block
}

// resetFirmwareLocked is CMD_RESET (§4.3 #1): stop the data path, forget
// every configuration, hand both tokens back to the device and zero the
// send rings so no stale flags survive.
func (n *NIC) resetFirmwareLocked() {
	n.fw = fwState{
		maxFrame:   1518,
		smallBytes: 128 - rxPad,
		bigBytes:   4096,
		intrqSlots: 2 * rxRingEntries,
		numSlices:  1,
		mac:        [6]byte(n.cfg.MAC),
		allMulti:   true,
		mcast:      make(map[[6]byte]struct{}),
		coalDelay:  defaultCoalDelay,
		dummyRDMA:  n.fw.dummyRDMA, // a board reset does not stop it; only the driver does
	}
	n.drops = dropCounters{}
	n.epoch++
	for _, s := range n.slices {
		s.reset()
		clear(n.bar0[sendRingOff(s.idx) : sendRingOff(s.idx)+sendRingBytes])
	}
	binary.BigEndian.PutUint32(n.bar0[intrCoalOff:], uint32(defaultCoalDelay/time.Microsecond))
}

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
func (n *NIC) handoffLocked(int, uint64, int) {
	n.stats.Handoffs++
	n.resetFirmwareLocked()
	n.confirmLocked(offBootHandoff, "handoff confirm")
	n.log.WithField("length", n.be32(offBootHandoff+0x10)).Info("firmware handoff")
}

// dummyRDMALocked acknowledges the dummy RDMA switch (§3.7); the periodic
// host reads it enables exist to work around chipsets we do not have.
func (n *NIC) dummyRDMALocked(int, uint64, int) {
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
