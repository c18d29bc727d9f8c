package testdev

import (
	"hash/crc32"

	"github.com/sirupsen/logrus"
)

// winChunk is the piece size winDoorbell reads the window in.
const winChunk = 64 << 10

// winDoorbell handles a change of the window's doorbell word (README.md,
// "BAR4: the window and its doorbell"). It runs on the window's poller
// goroutine.
func (d *Device) winDoorbell(v uint32) {
	off := uint64(d.win.Load32(WinDBOffset))
	n := uint64(d.win.Load32(WinDBLength))
	cause, result := CauseNone, uint32(0)
	if inWindow(off, n) {
		for done := uint64(0); done < n; {
			p := d.winBuf[:min(n-done, winChunk)]
			if _, err := d.win.ReadAt(p, off+done); err != nil {
				cause, result = CauseWindowRange, 0
				break
			}
			result = crc32.Update(result, castagnoli, p)
			done += uint64(len(p))
		}
	} else {
		cause = CauseWindowRange
	}
	d.win.Store32(WinDBResult, result)
	d.win.Store32(WinDBStatus, uint32(cause))
	d.win.Store32(WinDBAck, v)

	d.mu.Lock()
	r := &d.r
	r.winSeq, r.winResult, r.winStatus = v, result, uint32(cause)
	r.cntWin++
	r.irqStatus |= IRQStatusWin
	if r.irqCtrl&IRQCtrlWinEnable != 0 {
		d.raiseLocked(int(r.irqCtrl >> IRQCtrlWinVectorShift & IRQCtrlVectorMask))
	}
	d.mu.Unlock()
	if cause != CauseNone {
		d.warnf(warning{msg: "guest window doorbell range outside the window",
			fields: logrus.Fields{"offset": hex(off), "len": n, "doorbell": v}})
	}
}
