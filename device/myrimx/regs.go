package myrimx

import (
	"encoding/binary"

	"github.com/sirupsen/logrus"
)

// ReadBAR serves register reads (README "Registers"). BAR0 registers are
// read as 64-bit little-endian words; an access of any size at any offset
// returns the bytes it covers. The MSI-X BAR reads 0 (the function serves
// the table and PBA itself). Reads have no side effects.
func (d *Device) ReadBAR(bar int, off uint64, p []byte) error {
	clear(p)
	if bar != RegsBAR {
		return nil
	}
	for i := range p {
		o := off + uint64(i)
		w := d.readReg(o &^ 7)
		p[i] = byte(w >> (8 * (o & 7)))
	}
	return nil
}

// readReg returns the 64-bit register word at off (8-aligned).
func (d *Device) readReg(off uint64) uint64 {
	page, reg := off/PageSize, off%PageSize
	if page == 0 {
		switch reg {
		case RegMagic: // MAGIC | ABI_VERSION << 32
			return Magic | ABIVersion<<32
		case RegCaps:
			return d.caps()
		case RegNICID:
			return d.nicID
		case RegDevStatus:
			return uint64(d.devStatus.Load())
		case RegErrInfo:
			return uint64(d.errInfo.Load())
		case RegMaxPages:
			return MaxPages
		case RegAuditCount:
			return d.auditViolations()
		}
		return 0
	}
	if page > uint64(d.nEP) {
		return 0
	}
	ep := d.eps[page-1]
	ep.mu.Lock()
	defer ep.mu.Unlock()
	switch reg {
	case EPCmdqBase, EPCmdqOrder:
		return ep.cmdq.readReg(reg - EPCmdqBase)
	case EPCmdqHead:
		return uint64(ep.cmdq.head)
	case EPEqBase, EPEqOrder:
		return ep.eq.readReg(reg - EPEqBase)
	case EPEqHead:
		return uint64(ep.eq.head)
	case EPStatusGPA:
		return ep.statusGPA
	case EPFenceDone:
		return ep.fenceVisible.Load()
	case EPInvSyncDone:
		return uint64(ep.invSyncDone)
	case EPPTRoot:
		return ep.ptRoot
	case EPStatus:
		return uint64(ep.state.Load()) | uint64(ep.cause)<<8
	}
	return 0
}

// caps is the CAPS register.
func (d *Device) caps() uint64 {
	return uint64(d.nEP)<<CapsEndpointsShift | RegionsPerEP<<CapsRegionsShift |
		6<<CapsCmdLog2Shift | 6<<CapsEventLog2Shift | uint64(d.auditMode.Load())<<CapsAuditShift |
		(1<<0|1<<9)<<CapsPageShiftsShift
}

// WriteBAR serves register writes. Each 4-byte half of a 64-bit register
// is written on its own; a trigger register acts on the store that writes
// its trigger half (README "Registers"). Writes to read-only and unknown
// offsets are ignored and counted.
func (d *Device) WriteBAR(bar int, off uint64, p []byte) error {
	if bar != RegsBAR {
		return nil
	}
	for len(p) > 0 {
		// Split into the 4-byte halves it covers, partial halves merged
		// with zeros: a partial doorbell write is taken as it is.
		n := min(len(p), int(4-off%4))
		var b [4]byte
		copy(b[off%4:], p[:n])
		d.writeHalf(off&^3, binary.LittleEndian.Uint32(b[:]))
		off += uint64(n)
		p = p[n:]
	}
	return nil
}

// writeHalf handles one 4-byte store at off (4-aligned).
func (d *Device) writeHalf(off uint64, v uint32) {
	page, reg := off/PageSize, off%PageSize
	if page == 0 {
		if reg == RegDevCtrl && v&DevCtrlReset != 0 {
			d.Reset()
		}
		return
	}
	if page > uint64(d.nEP) {
		return
	}
	ep := d.eps[page-1]
	set64 := func(r *uint64) {
		if reg%8 == 0 {
			*r = *r&^0xffffffff | uint64(v)
		} else {
			*r = *r&0xffffffff | uint64(v)<<32
		}
	}
	switch reg &^ 7 {
	case EPCtrl:
		if reg == EPCtrl {
			d.epCtrl(ep, v)
		}
		return
	case EPCmdqTail:
		if reg == EPCmdqTail {
			ep.mu.Lock()
			ep.cmdqTail = v
			ep.kicked = true
			ep.mu.Unlock()
			d.wake()
		}
		return
	case EPEqHead:
		if reg == EPEqHead {
			ep.mu.Lock()
			ep.eq.head = v
			ep.mu.Unlock()
			ep.rearm(v)
		}
		return
	case EPInvSync:
		ep.mu.Lock()
		if reg == EPInvSync {
			ep.invSyncLow = v
			ep.mu.Unlock()
			return
		}
		id, gen := v, ep.invSyncLow
		ep.mu.Unlock()
		d.invSync(ep, id, gen)
		return
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	switch reg &^ 7 {
	case EPCmdqBase, EPCmdqOrder:
		ep.cmdq.writeHalf(reg-EPCmdqBase, v)
	case EPEqBase, EPEqOrder:
		ep.eq.writeHalf(reg-EPEqBase, v)
	case EPStatusGPA:
		set64(&ep.statusGPA)
	case EPPTRoot:
		set64(&ep.ptRoot)
	default:
		d.warnf("rowrite", "write to a read-only or unknown register", logrus.Fields{"endpoint": ep.idx, "offset": reg})
	}
}

// epCtrl handles EP_CTRL.
func (d *Device) epCtrl(ep *endpoint, v uint32) {
	d.cmdMu.Lock()
	defer d.cmdMu.Unlock()
	switch v {
	case EPCtrlOpen:
		d.openEndpoint(ep)
	case EPCtrlClose:
		d.closeEndpoint(ep, ReasonRelease)
	case EPCtrlReset:
		d.closeEndpoint(ep, ReasonReset)
		ep.mu.Lock()
		ep.cause = EPCauseNone
		ep.mu.Unlock()
	default:
		d.warnf("epctrl", "unknown EP_CTRL value", logrus.Fields{"endpoint": ep.idx, "value": v})
	}
}

// invSync is the INV_SYNC escape hatch (§6.7): the region is invalidated
// and drained before the register write returns, so a read of
// INV_SYNC_DONE after it orders.
func (d *Device) invSync(ep *endpoint, id, gen uint32) {
	d.cmdMu.Lock()
	defer d.cmdMu.Unlock()
	if id < RegionsPerEP {
		if r := ep.slots[id].Load(); r != nil && r.gen == gen {
			d.invalidate(r, ReasonInvSync)
		}
	}
	ep.mu.Lock()
	ep.invSyncDone = gen
	ep.mu.Unlock()
}
