package testdev

import (
	"hash/crc32"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/sirupsen/logrus"
)

// winChunk is the piece size winDoorbell reads the window in.
const winChunk = 64 << 10

// winDoorbell handles a change of the window's doorbell word (README.md,
// "BAR4: the window and its doorbell"). It runs on the window's poller
// goroutine.
func (d *Device) winDoorbell(v uint32) {
	off := uint64(d.win.Load32(abi.WinDBOffset))
	n := uint64(d.win.Load32(abi.WinDBLength))
	cause, result := abi.CauseNone, uint32(0)
	if inWindow(off, n) {
		for done := uint64(0); done < n; {
			p := d.winBuf[:min(n-done, winChunk)]
			if _, err := d.win.ReadAt(p, off+done); err != nil {
				cause, result = abi.CauseWindowRange, 0
				break
			}
			result = crc32.Update(result, castagnoli, p)
			done += uint64(len(p))
		}
	} else {
		cause = abi.CauseWindowRange
	}
	d.win.Store32(abi.WinDBResult, result)
	d.win.Store32(abi.WinDBStatus, uint32(cause))
	d.win.Store32(abi.WinDBAck, v)

	d.mu.Lock()
	r := &d.r
	r.winSeq, r.winResult, r.winStatus = v, result, uint32(cause)
	r.cntWin++
	r.irqStatus |= abi.IRQStatusWin
	if r.irqCtrl&abi.IRQCtrlWinEnable != 0 {
		d.raiseLocked(int(r.irqCtrl >> abi.IRQCtrlWinVectorShift & abi.IRQCtrlVectorMask))
	}
	d.mu.Unlock()
	if cause != abi.CauseNone {
		d.warnf(warning{msg: "guest window doorbell range outside the window",
			fields: logrus.Fields{"offset": hex(off), "len": n, "doorbell": v}})
	}
}
