package myri10ge

import (
	"encoding/binary"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/fault"
)

// Interrupts (§6): the per-slice interrupt block with its two tokens, the
// claim words that hand them back, INTx deassert, coalescing and the link
// events that ride on slice 0's block.

// linkEvent is a link report waiting for the next interrupt block.
type linkEvent uint8

const (
	linkEventNone linkEvent = iota
	linkEventUp             // link came up (ETHERNET_UP, or carrier while up)
	linkEventLost           // carrier lost while up
	linkEventDown           // ETHERNET_DOWN: the one report with link_down set
)

// linkStateLocked is the link_up word: up while the data path runs and
// the wire has carrier.
func (n *NIC) linkStateLocked() uint32 {
	if n.fw.running && n.cfg.Port.LinkUp() {
		return abi.LinkUp
	}
	return abi.LinkDown
}

// maybeInterruptLocked reports what the driver has not seen yet, if the
// device holds the slice's interrupt token (§6.2):
//   - never write the block while the IRQ token is out: the driver's ISR
//     would spin on a valid it cannot clear;
//   - set valid bit 0 only when passing the RX token;
//   - the block (valid last) is written before the vector is raised, and
//     the rx_done entries it announces before the block.
func (n *NIC) maybeInterruptLocked(s *slice) {
	if !s.irqToken || !s.statsSet || s.halted {
		return
	}
	passRx := s.rxToken && s.rxPending && n.fw.running
	needTx := s.sendDone != s.txReported && n.fw.running
	link := s.idx == 0 && n.fw.linkEvent != linkEventNone
	pause := s.idx == 0 && n.drops.pause != n.fw.pauseReported
	if !passRx && !needTx && !link && !pause {
		return
	}
	// Coalescing (§6.3): keep interrupts of a slice at least the delay
	// apart; what arrives meanwhile rides on the deferred one. The clock
	// is read only with a delay set: a reading costs 100-200 ns on a VM.
	var now time.Time
	if n.fw.coalDelay > 0 {
		now = time.Now()
	}
	if wait := n.fw.coalDelay - now.Sub(s.lastIRQ); n.fw.coalDelay > 0 && wait > 0 {
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
	be.PutUint32(b[abi.IRQOffSendDoneCount:], s.sendDone)
	be.PutUint32(b[abi.IRQOffLinkUp:], n.linkStateLocked())
	be.PutUint32(b[abi.IRQOffRDMATags:], abi.RDMATagsAvailable)
	d := &n.drops
	be.PutUint32(b[abi.IRQOffDroppedPause:], d.pause)
	be.PutUint32(b[abi.IRQOffDroppedUnicast:], d.unicastFiltered)
	be.PutUint32(b[abi.IRQOffDroppedMulticast:], d.multicastFiltered)
	be.PutUint32(b[abi.IRQOffDroppedLinkError:], d.linkError)
	be.PutUint32(b[abi.IRQOffDroppedRunt:], d.runt)
	be.PutUint32(b[abi.IRQOffDroppedOverrun:], d.overrun)
	be.PutUint32(b[abi.IRQOffDroppedNoSmall:], d.noSmall)
	be.PutUint32(b[abi.IRQOffDroppedNoBig:], d.noBig)
	if link && n.fw.linkEvent == linkEventDown {
		b[abi.IRQOffFlagsWord+1] = 1 // link_down: the one report ETHERNET_DOWN waits for
	}
	b[abi.IRQOffFlagsWord+2] = 1 // stats_updated
	if passRx {
		b[abi.IRQOffFlagsWord+3] = 0x01 // valid, RX token passed
	} else {
		b[abi.IRQOffFlagsWord+3] = 0x02 // valid, no RX token (§12.4)
	}

	// The legacy block starts at send_done_count; either way the word
	// holding valid goes last, as one store.
	body := b[s.statsOff:abi.IRQOffFlagsWord]
	flagsAddr := s.statsAddr + uint64(abi.IRQOffFlagsWord-s.statsOff)
	frozen := n.host.Fault.Armed(fault.DMA) && n.statsFrozenLocked(s)
	if !frozen && !n.dmaWriteLocked(s, "interrupt block", s.statsAddr, body) ||
		!n.dmaStoreLocked(s, "interrupt block", flagsAddr, [4]byte(b[abi.IRQOffFlagsWord:])) {
		return
	}

	s.irqToken = false
	if passRx {
		s.rxToken, s.rxPending = false, false
	}
	s.txReported = s.sendDone
	if s.idx == 0 {
		n.fw.pauseReported = d.pause
	}
	if link {
		switch n.fw.linkEvent {
		case linkEventDown, linkEventLost:
			n.stats.LinkDownEvents++
		case linkEventUp:
			n.stats.LinkUpEvents++
		}
		n.fw.linkEvent = linkEventNone
	}
	s.lastIRQ = now // zero without a delay: a delay set later applies from the next interrupt
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
	n.host.IRQ.Lower()
	s := n.slices[0]
	if !s.statsSet {
		return
	}
	addr := s.statsAddr + uint64(abi.IRQOffFlagsWord+3-s.statsOff)
	n.dmaWriteLocked(nil, "deassert valid clear", addr, []byte{0})
}

// coalDelayWrittenLocked stores the interrupt coalescing delay in µs
// (§6.3), which `ethtool -C rx-usecs` sets.
func (n *NIC) coalDelayWrittenLocked(int, uint64, int) {
	us := binary.BigEndian.Uint32(n.bar0[intrCoalOff:])
	n.fw.coalDelay = time.Duration(us) * time.Microsecond
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
