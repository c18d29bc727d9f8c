package myri10ge

import (
	"encoding/binary"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// defaultCoalDelay is the driver's default, until it writes its own.
const defaultCoalDelay = 75 * time.Microsecond

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
	rssTableSize int
	rssEnabled   bool

	coalDelay time.Duration

	linkEvent linkEvent // reported through slice 0's interrupt block

	// Flow control (pause.go): PAUSE frames honoured, transmission
	// held until pauseUntil, the dropped_pause last reported.
	flowControl   bool
	txPaused      bool
	pauseUntil    time.Time
	pauseReported uint32
}

// resetFirmwareLocked is CMD_RESET (§4.3 #1): stop the data path, forget
// every configuration, hand both tokens back to the device and zero the
// send rings so no stale flags survive.
func (n *NIC) resetFirmwareLocked() {
	n.fw = fwState{
		maxFrame:   1518,
		smallBytes: 128 - abi.RxPad,
		bigBytes:   4096,
		intrqSlots: 2 * rxRingEntries,
		numSlices:  1,
		mac:        [6]byte(n.cfg.MAC),
		allMulti:   true,
		mcast:      make(map[[6]byte]struct{}),
		coalDelay:  defaultCoalDelay,
	}
	n.drops = dropCounters{}
	n.epoch++
	for _, s := range n.slices {
		n.discardHeldLocked(s)
		s.reset()
		clear(n.bar0[sendRingOff(s.idx) : sendRingOff(s.idx)+sendRingBytes])
	}
	n.markAllUnpostedLocked()
	binary.BigEndian.PutUint32(n.bar0[intrCoalOff:], uint32(defaultCoalDelay/time.Microsecond))
}
