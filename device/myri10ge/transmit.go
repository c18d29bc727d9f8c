package myri10ge

import (
	"errors"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
)

// sendRingWrittenLocked looks at a store into slice i's send ring. The driver
// posts a chain with the first descriptor's flags zero and then rewrites
// its bytes 12..15 with the real flags in one 4-byte store (§5.4): so a
// store covering the flags byte of the descriptor at the consumer index
// is the doorbell. Stores covering other descriptors only fill the ring.
func (n *NIC) sendRingWrittenLocked(i int, rel uint64, size int) {
	s := n.slices[i]
	head := uint64(s.txIdx%sendRingEntries)*abi.SendDescSize + abi.SendOffFlags
	if covers(rel, size, head) {
		n.transmitLocked(s)
	}
}

// transmitLocked takes every packet posted at the slice's consumer index,
// puts its frames on the wire and counts it in send_done_count, then
// reports the completions. Every packet taken counts as done, sent or
// dropped: the driver frees descriptors by that count, and one it never
// sees completed would trip its watchdog.
//
// The gathers of the packets taken in one call are one dma.Run: guest
// memory's read lock is taken once, not once a packet. Within the run
// nothing but take touches guest memory (Port.Send copies the frames and
// never waits for the guest); it ends before a DMA abort or a guest error
// is reported and before the completions are written.
func (n *NIC) transmitLocked(s *slice) {
	if s.halted || n.fw.txPaused {
		return
	}
	ring := n.bar0[sendRingOff(s.idx):][:sendRingBytes]
	run := &s.tx.run
	defer run.End()
	for budget := sendRingEntries; budget > 0; {
		cnt, frames, err := s.tx.take(ring, s.txIdx, run.Begin(n.host.Mem))
		if cnt == 0 {
			break
		}
		budget -= cnt
		s.txIdx += uint32(cnt)
		if errors.Is(err, errSendNotFirst) {
			// A stray descriptor, not a packet the driver posted: it is
			// consumed but does not count in send_done_count.
			run.End()
			n.guestErrorLocked("send descriptor without FIRST skipped", "slice", s.idx)
			continue
		}
		s.sendDone++
		n.stats.TxPackets++
		switch {
		case err != nil && isDMAError(err):
			n.stats.TxDropped++
			run.End()
			n.dmaAbortLocked(s, "send gather", err)
			return
		case err != nil:
			n.stats.TxDropped++
			run.End()
			n.guestErrorLocked("malformed send chain dropped", "error", err.Error())
		case !n.fw.running || !n.cfg.Port.LinkUp():
			n.stats.TxDropped++
		default:
			for _, f := range frames {
				n.stats.TxBytes += uint64(len(f))
			}
			n.stats.TxFrames += uint64(len(frames))
			n.cfg.Port.Send(frames)
		}
	}
	run.End()
	n.maybeInterruptLocked(s)
}

// isDMAError reports whether err wraps a *dma.Error. Asked only when err is
// not nil: errors.As's target escapes, which would cost an allocation for
// every packet sent.
func isDMAError(err error) bool {
	var de *dma.Error
	return errors.As(err, &de)
}
