package myri10ge

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/myriemu/myriemu/dma"
)

// Every DMA the firmware does goes through the helpers below: a DMA that
// fails is a DMA abort, counted in Stats.DMAErrors, logged (rate-limited)
// and, on a slice's data path, fatal to the slice until the driver resets
// the NIC, as a real board's firmware stops after a PCIe error.

// host64 joins the high and low words of a host bus address.
func host64(hi, lo uint32) uint64 { return uint64(hi)<<32 | uint64(lo) }

// dmaReadLocked reads p from guest memory at addr. On failure it aborts
// (see dmaAbortLocked) and returns false.
func (n *NIC) dmaReadLocked(s *slice, what string, addr uint64, p []byte) bool {
	if _, err := n.host.Mem.ReadAt(p, addr); err != nil {
		n.dmaAbortLocked(s, what, err)
		return false
	}
	return true
}

// dmaWriteLocked writes p to guest memory at addr. On failure it aborts
// (see dmaAbortLocked) and returns false.
func (n *NIC) dmaWriteLocked(s *slice, what string, addr uint64, p []byte) bool {
	if _, err := n.host.Mem.WriteAt(p, addr); err != nil {
		n.dmaAbortLocked(s, what, err)
		return false
	}
	return true
}

// dmaStoreLocked writes the four bytes w to guest memory at addr as one
// store, for the words the driver polls. On failure it aborts (see
// dmaAbortLocked) and returns false.
func (n *NIC) dmaStoreLocked(s *slice, what string, addr uint64, w [4]byte) bool {
	if err := n.host.Mem.Store32(addr, binary.NativeEndian.Uint32(w[:])); err != nil {
		n.dmaAbortLocked(s, what, err)
		return false
	}
	return true
}

// dmaAbortLocked handles a failed DMA: count and log it and, if it was on
// slice s's data path (s non-nil), halt s.
func (n *NIC) dmaAbortLocked(s *slice, what string, err error) {
	n.dmaFailedLocked(err, what)
	if s != nil && !s.halted {
		n.reportErrorLocked(ErrorEvent{Kind: "slice-halt", Slice: s.idx, What: what, Detail: err.Error()})
	}
	if s != nil {
		n.haltLocked(s)
	}
}

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

// haltLocked stops a slice after a DMA abort. The driver notices (TX stuck
// for its watchdog) and resets the NIC, which clears it.
func (n *NIC) haltLocked(s *slice) {
	if s.halted {
		return
	}
	s.halted = true
	s.stopTimer()
	n.discardHeldLocked(s)
	n.log.WithField("slice", s.idx).Error("DMA abort: slice halted until the driver resets the NIC")
}
