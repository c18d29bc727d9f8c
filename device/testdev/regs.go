package testdev

import (
	"encoding/binary"
	"fmt"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// regs is the BAR0 register file (constants are not stored), one 32-bit
// word per register as the guest sees them: a 64-bit address is its Lo and
// Hi halves. Its zero value is the reset state.
type regs struct {
	scratch        uint32
	srcLo, srcHi   uint32
	dstLo, dstHi   uint32
	length         uint32
	op             uint32
	pattern        uint32
	status         uint32
	result         uint32
	failLo, failHi uint32
	doneBytes      uint32

	irqCtrl   uint32
	irqStatus uint32

	cntOps, cntErrors, cntIRQs, cntWin uint32

	winSeq, winResult, winStatus uint32
}

// word returns where register reg is kept, and whether a guest write
// stores into it as written (the read-only ones are the device's to set).
// It returns nil for the constants, the doorbells and offsets with nothing
// behind them. IRQCtrl (masked) and IRQStatus (write one to clear) are
// kept here but written by writeRegLocked's own cases.
func (r *regs) word(reg uint64) (p *uint32, plain bool) {
	switch reg {
	case abi.RegScratch:
		return &r.scratch, true
	case abi.RegDMASrcLo:
		return &r.srcLo, true
	case abi.RegDMASrcHi:
		return &r.srcHi, true
	case abi.RegDMADstLo:
		return &r.dstLo, true
	case abi.RegDMADstHi:
		return &r.dstHi, true
	case abi.RegDMALen:
		return &r.length, true
	case abi.RegDMAOp:
		return &r.op, true
	case abi.RegDMAPattern:
		return &r.pattern, true
	case abi.RegDMAStatus:
		return &r.status, false
	case abi.RegDMAResult:
		return &r.result, false
	case abi.RegDMAFailLo:
		return &r.failLo, false
	case abi.RegDMAFailHi:
		return &r.failHi, false
	case abi.RegDMADoneBytes:
		return &r.doneBytes, false
	case abi.RegIRQCtrl:
		return &r.irqCtrl, false
	case abi.RegIRQStatus:
		return &r.irqStatus, false
	case abi.RegCntDMAOps:
		return &r.cntOps, false
	case abi.RegCntDMAErrors:
		return &r.cntErrors, false
	case abi.RegCntIRQs:
		return &r.cntIRQs, false
	case abi.RegCntWinDoorbells:
		return &r.cntWin, false
	case abi.RegWinSeq:
		return &r.winSeq, false
	case abi.RegWinResult:
		return &r.winResult, false
	case abi.RegWinStatus:
		return &r.winStatus, false
	}
	return nil, false
}

// wide joins a 64-bit register's halves.
func wide(lo, hi uint32) uint64 { return uint64(hi)<<32 | uint64(lo) }

// ReadBAR serves trapped reads: BAR0 registers, the non-MSI-X part of
// BAR2 (zeros), and BAR4 window memory.
func (d *Device) ReadBAR(bar int, off uint64, p []byte) error {
	if err := checkAccess(bar, off, len(p)); err != nil {
		return err
	}
	switch bar {
	case abi.RegsBAR:
		d.mu.Lock()
		forEachReg(off, len(p), func(reg uint64, lo, hi int, pos int) {
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], d.readRegLocked(reg))
			copy(p[pos:], b[lo:hi])
		})
		d.mu.Unlock()
	case abi.MSIXBAR:
		clear(p)
	case abi.WindowBAR:
		if _, err := d.win.ReadAt(p, off); err != nil {
			return fmt.Errorf("testdev: BAR%d read %d@%#x: %w", bar, len(p), off, err)
		}
	}
	return nil
}

// WriteBAR serves trapped writes; see ReadBAR.
func (d *Device) WriteBAR(bar int, off uint64, p []byte) error {
	if err := checkAccess(bar, off, len(p)); err != nil {
		return err
	}
	switch bar {
	case abi.RegsBAR:
		var warns []warning
		d.mu.Lock()
		forEachReg(off, len(p), func(reg uint64, lo, hi int, pos int) {
			var b [4]byte
			var mask uint32
			copy(b[lo:hi], p[pos:])
			for i := lo; i < hi; i++ {
				mask |= 0xff << (8 * i)
			}
			if w, ok := d.writeRegLocked(reg, binary.LittleEndian.Uint32(b[:]), mask); ok {
				warns = append(warns, w)
			}
		})
		d.mu.Unlock()
		for _, w := range warns {
			d.warnf(w)
		}
	case abi.MSIXBAR:
		// The MSI-X table and PBA are served by pci.Function; the rest of
		// the BAR has nothing behind it.
	case abi.WindowBAR:
		if _, err := d.win.WriteAt(p, off); err != nil {
			return fmt.Errorf("testdev: BAR%d write %d@%#x: %w", bar, len(p), off, err)
		}
	}
	return nil
}

var barSizes = map[int]uint64{abi.RegsBAR: abi.RegsSize, abi.MSIXBAR: abi.MSIXSize, abi.WindowBAR: abi.WindowSize}

// checkAccess refuses an access outside the BARs: pci.Function never sends
// one, but the device does not rely on it.
func checkAccess(bar int, off uint64, n int) error {
	size, ok := barSizes[bar]
	if !ok || n < 1 || off >= size || uint64(n) > size-off {
		return fmt.Errorf("testdev: BAR%d access %d@%#x: %w", bar, n, off, unix.EINVAL)
	}
	return nil
}

// forEachReg calls fn for each 32-bit register that [off, off+n) covers,
// lowest first, with the byte range [lo, hi) inside the register and the
// position of byte lo in the caller's buffer.
func forEachReg(off uint64, n int, fn func(reg uint64, lo, hi, pos int)) {
	end := off + uint64(n)
	for reg := off &^ 3; reg < end; reg += 4 {
		lo, hi := 0, 4
		if reg < off {
			lo = int(off - reg)
		}
		if reg+4 > end {
			hi = int(end - reg)
		}
		fn(reg, lo, hi, int(reg+uint64(lo)-off))
	}
}

// readRegLocked returns register reg's value. No register has read side
// effects.
func (d *Device) readRegLocked(reg uint64) uint32 {
	switch reg {
	case abi.RegID:
		return abi.IDValue
	case abi.RegVersion:
		return abi.VersionValue
	case abi.RegMaxDMALen:
		return abi.MaxDMALen
	case abi.RegWinSize:
		return abi.WindowSize
	case abi.RegIRQMode:
		return uint32(d.host.IRQ.Mode())
	}
	if p, _ := d.r.word(reg); p != nil {
		return *p
	}
	return 0 // doorbells, IRQRaise and unlisted offsets
}

// writeRegLocked applies a write of the bytes of v selected by mask to
// register reg. It returns a warning to log (after unlocking) for a guest
// mistake.
func (d *Device) writeRegLocked(reg uint64, v, mask uint32) (warning, bool) {
	r := &d.r
	merge := func(old uint32) uint32 { return old&^mask | v&mask }
	switch reg {
	case abi.RegDMADoorbell:
		return d.doorbellLocked()
	case abi.RegIRQCtrl:
		r.irqCtrl = merge(r.irqCtrl) & abi.IRQCtrlWritable
		d.updateLineLocked()
	case abi.RegIRQStatus:
		r.irqStatus &^= v & mask
		d.updateLineLocked()
	case abi.RegIRQRaise:
		vec := v & mask
		if vec >= abi.NumVectors {
			return warning{msg: "guest raised an invalid vector", fields: logrus.Fields{"vector": vec}}, true
		}
		r.irqStatus |= abi.IRQStatusSoft
		d.raiseLocked(int(vec))
	default:
		if p, plain := r.word(reg); plain {
			*p = merge(*p)
		}
	}
	return warning{}, false
}

// levelLocked is the INTx level IRQStatus and IRQCtrl call for.
func (d *Device) levelLocked() bool {
	active := uint32(abi.IRQStatusSoft)
	if d.r.irqCtrl&abi.IRQCtrlDMAEnable != 0 {
		active |= abi.IRQStatusDMA
	}
	if d.r.irqCtrl&abi.IRQCtrlWinEnable != 0 {
		active |= abi.IRQStatusWin
	}
	return d.r.irqStatus&active != 0
}

// raiseLocked signals vector for an event that has just set its IRQStatus
// bit: an MSI-X/MSI message, or INTx asserted.
func (d *Device) raiseLocked(vector int) {
	d.r.cntIRQs++
	d.line = true
	d.host.IRQ.Raise(vector)
}

// updateLineLocked follows a change of IRQStatus or IRQCtrl: INTx is
// lowered when no enabled source is left, and asserted when enabling a
// source whose status bit is already set. MSI and MSI-X only signal events.
func (d *Device) updateLineLocked() {
	level := d.levelLocked()
	switch {
	case !level:
		d.lowerLineLocked()
	case !d.line && d.host.IRQ.Mode() == abi.IRQModeINTx:
		d.raiseLocked(0)
	}
}

// lowerLineLocked deasserts INTx if the device raised it.
func (d *Device) lowerLineLocked() {
	if !d.line {
		return
	}
	d.line = false
	d.host.IRQ.Lower()
}
