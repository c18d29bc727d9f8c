package testdev

import (
	"errors"
	"hash/crc32"
	"sync/atomic"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/myriemu/myriemu/dma"
	"github.com/sirupsen/logrus"
)

// pageSize bounds every piece the engine moves: a piece never crosses a
// 4 KiB IOVA boundary, so the first failing piece starts at the first byte
// that could not be accessed (client maps are page-granular).
const pageSize = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// job is a DMA op as the registers were at the doorbell.
type job struct {
	gen      uint64
	op       abi.Op
	src, dst uint64
	length   uint32
	pattern  uint32
}

// outcome is how an op ended.
type outcome struct {
	cause      abi.Cause
	result     uint32 // CRC-32C, when cause is abi.CauseNone
	done       uint32 // bytes completed
	fail       uint64 // first inaccessible IOVA, for DMA faults
	faultWrite bool
	err        error // the DMA error behind a fault, for the log
}

// doorbellLocked handles a write to RegDMADoorbell (README.md, "Running an
// op").
func (d *Device) doorbellLocked() (warning, bool) {
	r := &d.r
	if r.status&abi.StatusBusy != 0 {
		r.status |= abi.StatusOverrun
		r.cntErrors++
		return warning{msg: "guest rang the DMA doorbell while busy",
			fields: logrus.Fields{"op": abi.Op(r.op)}}, true
	}
	j := &job{gen: d.gen.Load(), op: abi.Op(r.op), src: wide(r.srcLo, r.srcHi), dst: wide(r.dstLo, r.dstHi), length: r.length, pattern: r.pattern}
	r.status = abi.StatusBusy
	r.result, r.failLo, r.failHi, r.doneBytes = 0, 0, 0, 0
	if d.kick == nil {
		// No engine runs without a client: the op fails as its first DMA
		// would, before any byte moves.
		return d.completeLocked(j, outcome{cause: abi.CauseDMAFailed, err: dma.ErrClosed})
	}
	d.pending = j
	select {
	case d.kick <- struct{}{}:
	default: // the engine has a kick to see already
	}
	return warning{}, false
}

// runEngine is the DMA engine: it runs the op a doorbell left pending. It
// is the only goroutine that touches guest memory.
func (d *Device) runEngine(mem dma.Space, kick <-chan struct{}, quit <-chan struct{}) {
	defer d.wg.Done()
	d.log.Debug("DMA engine started")
	defer d.log.Debug("DMA engine stopped")
	e := engine{mem: mem, win: d.win, gen: &d.gen}
	for {
		select {
		case <-quit:
			return
		case <-kick:
		}
		d.mu.Lock()
		j := d.pending
		d.pending = nil
		d.mu.Unlock()
		if j == nil {
			continue
		}
		out, ok := e.run(j)
		if !ok {
			continue // cancelled by Reset or Detach
		}
		d.mu.Lock()
		w, warn := d.completeLocked(j, out)
		d.mu.Unlock()
		if warn {
			d.warnf(w)
		}
	}
}

// completeLocked publishes the outcome of j, unless j was cancelled: status,
// counters, IRQStatus.DMA and the completion interrupt, in that order.
func (d *Device) completeLocked(j *job, out outcome) (warning, bool) {
	if d.gen.Load() != j.gen {
		return warning{}, false
	}
	r := &d.r
	r.status = abi.StatusDone | r.status&abi.StatusOverrun
	r.doneBytes = out.done
	if out.cause == abi.CauseNone {
		r.result = out.result
		r.cntOps++
	} else {
		r.status |= abi.StatusError | uint32(out.cause)<<abi.StatusCauseShift
		r.failLo, r.failHi = uint32(out.fail), uint32(out.fail>>32)
		if out.faultWrite {
			r.status |= abi.StatusFaultWrite
		}
		r.cntErrors++
	}
	r.irqStatus |= abi.IRQStatusDMA
	if r.irqCtrl&abi.IRQCtrlDMAEnable != 0 {
		d.raiseLocked(int(r.irqCtrl >> abi.IRQCtrlDMAVectorShift & abi.IRQCtrlVectorMask))
	}
	if out.cause == abi.CauseNone {
		return warning{}, false
	}
	f := logrus.Fields{"op": j.op, "cause": out.cause, "src": hex(j.src), "dst": hex(j.dst), "len": j.length}
	if out.err != nil {
		f["iova"] = hex(out.fail)
		f["error"] = out.err.Error()
	}
	return warning{msg: "guest DMA op failed", fields: f}, true
}

// engine runs one op at a time; its buffers belong to runEngine.
type engine struct {
	mem dma.Space
	win window
	gen *atomic.Uint64
	buf [pageSize]byte
	pat [pageSize + 4]byte
}

// run performs j. ok is false if j was cancelled before it ended.
func (e *engine) run(j *job) (out outcome, ok bool) {
	n := uint64(j.length)
	srcSpace, dstSpace := j.op.Spaces()
	switch {
	case !j.op.Valid():
		return outcome{cause: abi.CauseBadOp}, true
	case n == 0 || n > abi.MaxDMALen,
		srcSpace == abi.SpaceGuest && j.src+n-1 < j.src,
		dstSpace == abi.SpaceGuest && j.dst+n-1 < j.dst:
		return outcome{cause: abi.CauseBadLength}, true
	case srcSpace == abi.SpaceWindow && !inWindow(j.src, n),
		dstSpace == abi.SpaceWindow && !inWindow(j.dst, n):
		return outcome{cause: abi.CauseWindowRange}, true
	}
	if srcSpace == abi.SpaceNone { // FILL: the bytes are the pattern's
		for i := range e.pat {
			e.pat[i] = byte(j.pattern >> (8 * (i % 4)))
		}
	}
	from, to := e.space(srcSpace), e.space(dstSpace)
	var crc uint32
	for done := uint64(0); done < n; {
		if e.gen.Load() != j.gen {
			return outcome{}, false
		}
		src, dst := j.src+done, j.dst+done
		k := n - done
		if srcSpace == abi.SpaceGuest {
			k = min(k, pageSize-src%pageSize)
		}
		if dstSpace == abi.SpaceGuest {
			k = min(k, pageSize-dst%pageSize)
		}
		var p []byte
		if from == nil {
			p = e.pat[done%4 : done%4+k]
		} else {
			p = e.buf[:k]
			if _, err := from.ReadAt(p, src); err != nil {
				return fault(err, src, k, done, false), true
			}
		}
		crc = crc32.Update(crc, castagnoli, p)
		if to != nil {
			if _, err := to.WriteAt(p, dst); err != nil {
				return fault(err, dst, k, done, true), true
			}
		}
		done += k
	}
	return outcome{result: crc, done: uint32(n)}, true
}

// memory is what an op reads or writes: guest memory or the window.
type memory interface {
	ReadAt(p []byte, off uint64) (int, error)
	WriteAt(p []byte, off uint64) (int, error)
}

// space is the memory behind s, nil for SpaceNone.
func (e *engine) space(s abi.Space) memory {
	switch s {
	case abi.SpaceGuest:
		return e.mem
	case abi.SpaceWindow:
		return e.win
	}
	return nil
}

// inWindow reports whether [off, off+n) lies inside the window (off is the
// full 64-bit register pair, so a nonzero HI half fails).
func inWindow(off, n uint64) bool {
	return off <= abi.WindowSize && n <= abi.WindowSize-off
}

// fault is the outcome of a failed access to the piece [addr, addr+k) after
// done bytes moved. The IOVA reported is the piece start, or the address
// the DMA error names if that lies inside the piece.
func fault(err error, addr, k, done uint64, write bool) outcome {
	out := outcome{cause: causeOf(err), done: uint32(done), fail: addr, faultWrite: write, err: err}
	var de *dma.Error
	if errors.As(err, &de) && de.Addr > addr && de.Addr < addr+k {
		out.fail = de.Addr
	}
	return out
}

// causeOf maps a DMA error to its Cause.
func causeOf(err error) abi.Cause {
	switch {
	case errors.Is(err, dma.ErrBusMasterOff):
		return abi.CauseBusMaster
	case errors.Is(err, dma.ErrUnmapped):
		return abi.CauseUnmapped
	case errors.Is(err, dma.ErrReadOnly):
		return abi.CauseReadOnly
	case errors.Is(err, dma.ErrNotRegistered):
		return abi.CauseNotRegistered
	case errors.Is(err, dma.ErrNotReadable):
		return abi.CauseNotReadable
	}
	return abi.CauseDMAFailed
}
