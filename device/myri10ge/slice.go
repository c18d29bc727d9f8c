package myri10ge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/myriemu/myriemu/dma"
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
	rxDoneAddr uint64
	rxDoneSet  bool
	rxDoneIdx  uint32

	// Interrupt block (SET_STATS_DMA_V2 or the obsolete 40-byte form).
	statsAddr uint64
	statsOff  int // 0, or obsoleteStatsOff for the legacy layout
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

	block [irqDataSize]byte // scratch for the interrupt block
}

func newSlice(idx int) *slice { return &slice{idx: idx, tx: newSender()} }

// reset is CMD_RESET for one slice: counters to zero, both tokens home.
func (s *slice) reset() {
	s.stopTimer()
	tx := s.tx
	*s = slice{idx: s.idx, tx: tx, irqToken: true, rxToken: true}
}

func (s *slice) stopTimer() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// linkStateLocked is the link_up word: up while the data path runs and
// the wire has carrier.
func (n *NIC) linkStateLocked() uint32 {
	if n.fw.running && n.cfg.Port.LinkUp() {
		return linkUp
	}
	return linkDown
}

// maybeInterruptLocked reports what the driver has not seen yet, if the
// device holds the slice's interrupt token (§6.2):
//   - never write the block while the IRQ token is out: the driver's ISR
//     would spin on a valid it cannot clear;
//   - set valid bit 0 only when passing the RX token;
//   - the block (valid last) is written before the vector is raised, and
//     the rx_done entries it announces before the block.
func (n *NIC) maybeInterruptLocked(s *slice) {
	if !n.attached || !s.irqToken || !s.statsSet || s.halted {
		return
	}
	passRx := s.rxToken && s.rxPending && n.fw.running
	needTx := s.sendDone != s.txReported && n.fw.running
	link := s.idx == 0 && n.fw.linkEvent != linkEventNone
	if !passRx && !needTx && !link {
		return
	}
	// Coalescing (§6.3): keep interrupts of a slice at least the delay
	// apart; what arrives meanwhile rides on the deferred one.
	if wait := n.fw.coalDelay - time.Since(s.lastIRQ); wait > 0 {
		if s.timer == nil {
			epoch := n.epoch
			s.timer = time.AfterFunc(wait, func() {
				n.mu.Lock()
				defer n.mu.Unlock()
				if n.epoch != epoch {
					return // reset or detached since
				}
				s.timer = nil
				n.maybeInterruptLocked(s)
			})
		}
		return
	}

	b := s.block[:]
	clear(b)
	be := binary.BigEndian
	be.PutUint32(b[irqOffSendDoneCount:], s.sendDone)
	be.PutUint32(b[irqOffLinkUp:], n.linkStateLocked())
	be.PutUint32(b[irqOffRDMATags:], rdmaTagsAvailable)
	d := &n.drops
	be.PutUint32(b[irqOffDroppedUnicast:], d.unicastFiltered)
	be.PutUint32(b[irqOffDroppedMulticast:], d.multicastFiltered)
	be.PutUint32(b[irqOffDroppedLinkError:], d.linkError)
	be.PutUint32(b[irqOffDroppedRunt:], d.runt)
	be.PutUint32(b[irqOffDroppedOverrun:], d.overrun)
	be.PutUint32(b[irqOffDroppedNoSmall:], d.noSmall)
	be.PutUint32(b[irqOffDroppedNoBig:], d.noBig)
	if link && n.fw.linkEvent == linkEventDown {
		b[irqOffFlagsWord+1] = 1 // link_down: the one report ETHERNET_DOWN waits for
	}
	b[irqOffFlagsWord+2] = 1 // stats_updated
	if passRx {
		b[irqOffFlagsWord+3] = 0x01 // valid, RX token passed
	} else {
		b[irqOffFlagsWord+3] = 0x02 // valid, no RX token (§12.4)
	}

	// The legacy block starts at send_done_count; either way the word
	// holding valid goes last, as one store.
	body := b[s.statsOff:irqOffFlagsWord]
	if _, err := n.host.Mem.WriteAt(body, s.statsAddr); err != nil {
		n.dmaFailedLocked(err, "interrupt block")
		n.haltLocked(s)
		return
	}
	flagsAddr := s.statsAddr + uint64(irqOffFlagsWord-s.statsOff)
	if err := n.storeHostLocked(flagsAddr, [4]byte(b[irqOffFlagsWord:])); err != nil {
		n.dmaFailedLocked(err, "interrupt block")
		n.haltLocked(s)
		return
	}

	s.irqToken = false
	if passRx {
		s.rxToken, s.rxPending = false, false
	}
	s.txReported = s.sendDone
	if link {
		switch n.fw.linkEvent {
		case linkEventDown, linkEventLost:
			n.stats.LinkDownEvnts++
		case linkEventUp:
			n.stats.LinkUpEvents++
		}
		n.fw.linkEvent = linkEventNone
	}
	s.lastIRQ = time.Now()
	n.stats.Interrupts++
	n.host.IRQ.Raise(s.idx)
}

// claimLocked is a write to a slice's claim pair (§6.2): word 0 returns
// the RX token (NAPI done), word 1 the IRQ token (end of the ISR).
func (n *NIC) claimLocked(i int, rel uint64, _ int) {
	s := n.slices[i]
	if rel >= 4 {
		s.irqToken = true
	} else {
		s.rxToken = true
	}
	// Entries written after NAPI's last look, or completions that came
	// while the ISR ran, are reported now.
	n.maybeInterruptLocked(s)
}

// deassertLocked is the INTx deassert register (§6.4): lower the line, then
// clear valid in slice 0's block, which the driver spins on.
func (n *NIC) deassertLocked(int, uint64, int) {
	if !n.attached {
		return
	}
	n.host.IRQ.Lower()
	s := n.slices[0]
	if !s.statsSet {
		return
	}
	addr := s.statsAddr + uint64(irqOffFlagsWord+3-s.statsOff)
	if _, err := n.host.Mem.WriteAt([]byte{0}, addr); err != nil {
		n.dmaFailedLocked(err, "deassert valid clear")
	}
}

// LinkChanged implements fabric.Receiver: carrier changes while the data
// path runs are reported to the driver as link events.
func (n *NIC) LinkChanged(up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.fw.running {
		return
	}
	if up {
		n.fw.linkEvent = linkEventUp
	} else {
		n.fw.linkEvent = linkEventLost
	}
	n.maybeInterruptLocked(n.slices[0])
}

// haltLocked stops a slice after a DMA abort. The driver notices (TX stuck
// for its watchdog) and resets the NIC, which clears it.
func (n *NIC) haltLocked(s *slice) {
	if s.halted {
		return
	}
	s.halted = true
	s.stopTimer()
	n.log.WithField("slice", s.idx).Error("DMA abort: slice halted until the driver resets the NIC")
}

var errNotAttached = errors.New("myri10ge: no client attached")

// dmaFailedLocked counts and logs a failed DMA (rate-limited).
func (n *NIC) dmaFailedLocked(err error, what string) {
	n.stats.DMAErrors++
	e := n.log.WithField("dma", what).WithError(err)
	var de *dma.Error
	if errors.As(err, &de) {
		e = e.WithField("iova", fmt.Sprintf("%#x", de.Addr))
	}
	n.warn.Warn(e, "dma:"+what, "DMA failed")
}

// guestErrorLocked counts and logs a driver protocol violation
// (rate-limited per message).
func (n *NIC) guestErrorLocked(msg string, key string, val any) {
	n.stats.GuestErrors++
	n.warn.Warn(n.log.WithField(key, val), msg, msg)
}

// macString formats a MAC address for logs.
func macString(a [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3], a[4], a[5])
}
