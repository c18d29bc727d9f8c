package myri10ge

import (
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// rxRing is one receive ring's bookkeeping (§5.2): entries the driver has
// posted and entries the device has filled, both counting up forever.
type rxRing struct {
	posted, consumed uint32
}

func (r *rxRing) avail() uint32 { return r.posted - r.consumed }

const (
	ringSmall = 0
	ringBig   = 1
)

// slice is one queue set: a send ring, two receive rings, an rx_done ring
// and an interrupt block with its two tokens (§6.2).
type slice struct {
	idx int

	// Transmit.
	tx       *sender
	txIdx    uint32 // descriptors consumed
	sendDone uint32 // packets completed: send_done_count

	// Receive.
	rx         [2]rxRing
	hold       *rxHold // frames waiting for buffers (rxhold.go)
	rxDoneAddr uint64
	rxDoneSet  bool
	rxDoneIdx  uint32

	// Interrupt block (SET_STATS_DMA_V2 or the obsolete 40-byte form).
	statsAddr uint64
	statsOff  int // 0, or abi.ObsoleteStatsOff for the legacy layout
	statsSet  bool

	// Tokens: true while the device holds them.
	irqToken, rxToken bool
	rxPending         bool   // rx_done entries the driver may not have seen
	txReported        uint32 // send_done_count in the last block
	lastIRQ           time.Time
	timer             *time.Timer // coalescing: a deferred interrupt

	// halted is set by a DMA abort: the slice's firmware stops until the
	// driver resets the NIC, as a real board's would after a PCIe error.
	halted bool

	block [abi.IRQDataSize]byte // scratch for the interrupt block
}

func newSlice(idx int) *slice { return &slice{idx: idx, tx: newSender(), hold: new(rxHold)} }

// reset is CMD_RESET for one slice: counters to zero, both tokens home.
// The caller has discarded the held frames (discardHeldLocked).
func (s *slice) reset() {
	s.stopTimer()
	tx, hold := s.tx, s.hold
	*s = slice{idx: s.idx, tx: tx, hold: hold, irqToken: true, rxToken: true}
}

func (s *slice) stopTimer() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}
