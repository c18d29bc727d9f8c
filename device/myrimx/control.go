package myrimx

import (
	"time"

	"github.com/myriemu/myriemu/dma"
)

// What the device offers the control socket: the audit's counters
// (query-dma-audit), the live registration table (query-registrations)
// and the DMA_AUDIT events, through a sink. Each is a few lines to wire.

// AuditEvent is one DMA_AUDIT event (§6.9): the check that fired, with the
// device's name.
type AuditEvent struct {
	Device string
	dma.AuditEvent
}

// SetAuditSink sets the function DMA_AUDIT events go to (nil: none). It
// runs on the DMA's goroutine and must not block.
func (d *Device) SetAuditSink(fn func(AuditEvent)) {
	if fn == nil {
		d.sink.Store(nil)
		return
	}
	d.sink.Store(&fn)
}

func (d *Device) auditEvent(ev dma.AuditEvent) {
	d.warnf("audit-"+ev.Check.String(), "DMA audit violation", map[string]any{
		"check": ev.Check.String(), "mode": ev.Mode.String(), "endpoint": ev.Tag.Endpoint, "region": ev.Tag.Region,
		"generation": ev.Tag.Gen, "gpa": ev.Addr, "len": ev.Len, "dir": ev.Op.String(), "detail": ev.Detail,
	})
	if p := d.sink.Load(); p != nil {
		(*p)(AuditEvent{Device: d.name, AuditEvent: ev})
	}
}

// AuditCounters returns the counters of the audit of the current (or, once
// detached, the last) attachment; a new attachment starts from zero.
func (d *Device) AuditCounters() dma.AuditCounters {
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	if d.audit == nil {
		return dma.AuditCounters{Mode: dma.AuditMode(d.auditMode.Load())}
	}
	return d.audit.Counters()
}

func (d *Device) auditViolations() uint64 { return d.AuditCounters().Violations }

// SetAuditMode changes the audit mode, now and for later attachments.
func (d *Device) SetAuditMode(m dma.AuditMode) {
	d.auditMode.Store(uint32(m))
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	if d.audit != nil {
		d.audit.SetMode(m)
	}
}

// Registration is one live entry of the table (query-registrations).
type Registration struct {
	Endpoint     int
	ID, Gen      uint32
	State        string // valid, invalidating
	Access       uint32
	PageShift    uint8
	Pages        int
	FirstOff     uint64
	Length       uint64
	UserVA       uint64
	Registered   time.Time
	Ops          uint64
	BytesRead    uint64
	BytesWritten uint64
}

// Registrations lists the live registrations of every endpoint.
func (d *Device) Registrations() []Registration {
	var out []Registration
	for _, ep := range d.eps {
		for _, r := range ep.liveRegions() {
			st := "valid"
			if r.state.Load() != regionValid {
				st = "invalidating"
			}
			out = append(out, Registration{
				Endpoint: ep.idx, ID: r.id, Gen: r.gen, State: st, Access: r.access, PageShift: r.pageShift,
				Pages: len(r.pages), FirstOff: r.firstOff, Length: r.length, UserVA: r.userVA, Registered: r.regAt,
				Ops: r.nops.Load(), BytesRead: r.bytesRead.Load(), BytesWritten: r.bytesWritten.Load(),
			})
		}
	}
	return out
}

// Counters are the device's own counters.
type Counters struct {
	Commands, BadCommands, Chunks, Bytes, Sends, Recvs uint64
	Regs, Deregs, Revoked, EQOverflows, DMAFaults      uint64
	Fences                                             uint64
}

// Counters returns a snapshot of the device's counters.
func (d *Device) Counters() Counters {
	s := &d.stats
	return Counters{
		Commands: s.commands.Load(), BadCommands: s.badCommands.Load(), Chunks: s.chunks.Load(),
		Bytes: s.bytes.Load(), Sends: s.sends.Load(), Recvs: s.recvs.Load(), Regs: s.regs.Load(),
		Deregs: s.deregs.Load(), Revoked: s.revoked.Load(), EQOverflows: s.eqOverflows.Load(),
		DMAFaults: s.dmaFaults.Load(), Fences: s.fences.Load(),
	}
}

// auditSource is the device's table as the audit reads it.
type auditSource struct{ d *Device }

var _ dma.AuditSource = auditSource{}

func (s auditSource) Registration(ep int, id uint32) (dma.RegView, bool) {
	if ep < 0 || ep >= len(s.d.eps) || id >= RegionsPerEP {
		return dma.RegView{}, false
	}
	r := s.d.eps[ep].slots[id].Load()
	if r == nil {
		return dma.RegView{}, false
	}
	return dma.RegView{
		Valid: r.state.Load() == regionValid, Draining: r.state.Load() == regionInvalidating, Gen: r.gen,
		Read: r.access&AccessSendSrc != 0, Write: r.access&AccessRecvDst != 0,
		PageShift: r.pageShift, FirstOff: r.firstOff, Length: r.length, UserVA: r.userVA,
		Pages: r.pages, MapEpoch: r.mapEpoch,
	}, true
}

func (s auditSource) ControlArea(ep int, k dma.TagKind) (base, size uint64) {
	if ep < 0 || ep >= len(s.d.eps) {
		return 0, 0
	}
	e := s.d.eps[ep]
	e.mu.Lock()
	defer e.mu.Unlock()
	switch k {
	case dma.TagCmdRing:
		return e.cmdq.base, CmdSize << e.cmdq.order
	case dma.TagEventQ:
		return e.eq.base, EventSize << e.eq.order
	case dma.TagStatus:
		return e.statusGPA, SBSize
	case dma.TagPageList:
		return e.pageList[0], e.pageList[1]
	}
	return 0, 0
}

func (s auditSource) ValidCovers(addr uint64, n int) bool {
	last := addr + uint64(n) - 1
	for _, ep := range s.d.eps {
		for _, r := range ep.liveRegions() {
			if st := r.state.Load(); st != regionValid && st != regionInvalidating {
				continue
			}
			ps := r.pageSize()
			for _, p := range r.pages {
				if p <= addr && last <= p+ps-1 {
					return true
				}
			}
		}
	}
	return false
}

func (s auditSource) PTRoot(ep int) dma.PTRoot {
	if ep < 0 || ep >= len(s.d.eps) {
		return dma.PTRoot{}
	}
	e := s.d.eps[ep]
	e.mu.Lock()
	defer e.mu.Unlock()
	return dma.PTRoot{Addr: e.ptRoot &^ 0xfff, Levels: int(e.ptRoot & 7)}
}

func (s auditSource) InReset() bool { return s.d.inReset.Load() }
