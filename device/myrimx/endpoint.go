package myrimx

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/myriemu/myriemu/dma"
	"github.com/sirupsen/logrus"
)

// endpoint is one MX endpoint: its registers, its rings in guest memory,
// its registration table and its matching queues.
type endpoint struct {
	dev *Device
	idx int

	state        atomic.Uint32 // EPState*
	fenceVisible atomic.Uint64 // FENCE_DONE register: set after the status block is written

	// mu guards the registers.
	mu          sync.Mutex
	cause       uint8
	cmdq        ring
	cmdqTail    uint32
	eq          ring
	statusGPA   uint64
	fenceDone   uint64
	invSyncDone uint32
	invSyncLow  uint32 // low half of INV_SYNC, stored until the high half
	ptRoot      uint64
	kicked      bool
	pageList    [2]uint64 // base, size of the page list a REG is reading (A4)

	// eqMu serialises event writes; eqTail, armed and the error counters.
	eqMu        sync.Mutex
	eqTail      uint32
	armed       bool
	badCmds     uint32
	eqOverflows uint32

	// The registration table: slots are written under Hub.mu and read
	// without a lock (the audit, the data path's lookups).
	slots [RegionsPerEP]atomic.Pointer[region]

	// Hub.mu guards the rest.
	recvs      []*op            // posted receives, in posting order
	unexpected []*op            // sends waiting here for a receive, in arrival order
	mine       map[*op]struct{} // this endpoint's own posted SEND and RECV
	retired    map[uint32][]uint32

	stats epStats
}

// ring is a ring of fixed-size entries in guest memory as the driver
// programmed it (§6.3, §6.6): BASE, ORDER (log2 of the entry count) and
// HEAD, the consumer's free-running index.
type ring struct {
	base  uint64
	order uint32
	head  uint32
}

// ringOrderOff is ORDER's offset from BASE, the same for both rings.
const ringOrderOff = EPCmdqOrder - EPCmdqBase

// usable reports whether the device can use the ring: a nonzero,
// page-aligned base and an order in [RingOrderMin, RingOrderMax].
func (r *ring) usable() bool {
	return r.base != 0 && r.base%PageSize == 0 && r.order >= RingOrderMin && r.order <= RingOrderMax
}

// size is the ring's entry count.
func (r *ring) size() uint32 { return 1 << r.order }

// slot is the guest address of entry i (modulo the size).
func (r *ring) slot(i uint32, entrySize uint64) uint64 {
	return r.base + uint64(i&(r.size()-1))*entrySize
}

// readReg returns the BASE or ORDER register at rel, its offset from
// BASE (8-aligned).
func (r *ring) readReg(rel uint64) uint64 {
	if rel == ringOrderOff {
		return uint64(r.order)
	}
	return r.base
}

// writeHalf stores a 4-byte write at rel from BASE: either half of BASE,
// or the low half of ORDER (its high half is ignored).
func (r *ring) writeHalf(rel uint64, v uint32) {
	switch rel {
	case 0:
		r.base = r.base&^0xffffffff | uint64(v)
	case 4:
		r.base = r.base&0xffffffff | uint64(v)<<32
	case ringOrderOff:
		r.order = v
	}
}

// retiredPerID bounds the generations remembered per region id: a REG
// must not reuse one of them, and a stale one is reported as BAD_RDMAWIN.
const retiredPerID = 8

func newEndpoint(d *Device, idx int) *endpoint {
	return &endpoint{dev: d, idx: idx, mine: map[*op]struct{}{}, retired: map[uint32][]uint32{}}
}

// vector is the endpoint's MSI-X vector.
func (ep *endpoint) vector() int { return 1 + ep.idx }

func (ep *endpoint) open() bool { return ep.state.Load() == EPStateOpen }

// resetRegs returns the registers to their reset values. The endpoint is
// closed.
func (ep *endpoint) resetRegs() {
	ep.mu.Lock()
	ep.cause = 0
	ep.cmdq, ep.cmdqTail, ep.eq = ring{}, 0, ring{}
	ep.statusGPA, ep.fenceDone, ep.invSyncDone, ep.invSyncLow, ep.ptRoot = 0, 0, 0, 0, 0
	ep.fenceVisible.Store(0)
	ep.kicked = false
	ep.pageList = [2]uint64{}
	ep.mu.Unlock()
}

// liveRegions returns the regions in the table (VALID or INVALIDATING).
func (ep *endpoint) liveRegions() []*region {
	var out []*region
	for i := range ep.slots {
		if r := ep.slots[i].Load(); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// openEndpoint handles EP_CTRL OPEN: the rings must be usable, else the
// endpoint goes to ERROR with BAD_CONFIG. cmdMu is held.
func (d *Device) openEndpoint(ep *endpoint) {
	if ep.state.Load() != EPStateClosed {
		d.closeEndpoint(ep, ReasonReset)
	}
	ep.mu.Lock()
	ok := ep.cmdq.usable() && ep.eq.usable() && ep.statusGPA != 0 && ep.statusGPA%SBSize == 0
	ep.cmdqTail, ep.cmdq.head, ep.eq.head, ep.fenceDone = 0, 0, 0, 0
	ep.fenceVisible.Store(0)
	ep.kicked = false
	if ok {
		ep.cause = EPCauseNone
	} else {
		ep.cause = EPCauseBadConfig
	}
	ep.mu.Unlock()
	ep.eqMu.Lock()
	ep.eqTail, ep.armed, ep.badCmds, ep.eqOverflows = 0, true, 0, 0
	ep.eqMu.Unlock()
	if !ok {
		ep.state.Store(EPStateError)
		d.warnf("open", "endpoint opened with unusable rings", logrus.Fields{"endpoint": ep.idx})
		d.raise(VectorDevice)
		return
	}
	ep.state.Store(EPStateOpen)
	d.writeStatus(ep)
}

// closeEndpoint closes ep: it stops taking commands, its registrations are
// invalidated (DMA drained), its posted operations dropped and the peers'
// sends waiting on it completed ENDPOINT_CLOSED. cmdMu is held.
func (d *Device) closeEndpoint(ep *endpoint, reason Reason) {
	if ep.state.Swap(EPStateClosed) == EPStateClosed && len(ep.liveRegions()) == 0 {
		return
	}
	for _, r := range ep.liveRegions() {
		d.invalidate(r, reason)
	}
	h := d.hub
	h.mu.Lock()
	var cs []completion
	for _, o := range append(append([]*op(nil), ep.recvs...), ep.unexpected...) {
		cs = append(cs, h.abortLocked(o, StatusEndpointClosed)...)
	}
	for o := range ep.mine {
		cs = append(cs, h.abortLocked(o, StatusEndpointClosed)...)
	}
	h.mu.Unlock()
	emit(cs)
}

// errorEndpoint puts ep in ERROR with cause and tells the driver: an
// EP_ERROR event if the event queue is usable, and the device vector.
// hostMu must not be held.
func (d *Device) errorEndpoint(ep *endpoint, cause uint8) {
	ep.post(event{typ: EvtEPError, reason: cause})
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	d.errorEndpointLocked(ep, cause)
}

// errorEndpointLocked is errorEndpoint without the event, with hostMu
// held for reading (or the device detached).
func (d *Device) errorEndpointLocked(ep *endpoint, cause uint8) {
	ep.mu.Lock()
	ep.cause = cause
	ep.mu.Unlock()
	ep.state.Store(EPStateError)
	if d.attached {
		d.host.IRQ.Raise(VectorDevice)
		d.host.IRQ.Raise(ep.vector())
	}
}

// event is one event queue entry before encoding.
type event struct {
	typ     EventType
	status  Status
	seq     uint32
	cookie  uint64
	match   uint64
	srcNIC  uint64
	srcEP   uint16
	msgLen  uint32
	xferLen uint32
	region  uint32
	gen     uint32
	reason  uint8
}

// post writes ev into ep's event queue (§6.6): the body first, then the
// word holding type, status and phase in one store, then the vector if
// armed. A full queue puts the endpoint in ERROR (EVENTQ_FULL) and the
// event is lost, as on MX.
func (ep *endpoint) post(ev event) {
	d := ep.dev
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	if !d.attached {
		return
	}
	ep.eqMu.Lock()
	st := ep.state.Load()
	if st != EPStateOpen && !(st == EPStateError && ev.typ == EvtEPError) {
		ep.eqMu.Unlock()
		return
	}
	ep.mu.Lock()
	eq := ep.eq
	ep.mu.Unlock()
	if ep.eqTail-eq.head >= eq.size() {
		ep.eqOverflows++
		ep.eqMu.Unlock()
		d.stats.eqOverflows.Add(1)
		d.warnf("eqfull", "event queue full, endpoint in error", logrus.Fields{"endpoint": ep.idx})
		d.errorEndpointLocked(ep, EPCauseEventQFull)
		return
	}
	var b [EventSize]byte
	b[EvType] = byte(ev.typ)
	b[EvStatus] = byte(ev.status)
	b[EvPhase] = byte(1 ^ (ep.eqTail>>eq.order)&1)
	le := binary.LittleEndian
	le.PutUint32(b[EvSeq:], ev.seq)
	le.PutUint64(b[EvCookie:], ev.cookie)
	le.PutUint64(b[EvMatch:], ev.match)
	le.PutUint64(b[EvSrcNIC:], ev.srcNIC)
	le.PutUint16(b[EvSrcEP:], ev.srcEP)
	le.PutUint32(b[EvMsgLength:], ev.msgLen)
	le.PutUint32(b[EvXferLength:], ev.xferLen)
	le.PutUint32(b[EvRegionID:], ev.region)
	le.PutUint32(b[EvGeneration:], ev.gen)
	b[EvReason] = ev.reason
	addr := eq.slot(ep.eqTail, EventSize)
	tag := dma.Tag{Kind: dma.TagEventQ, Endpoint: ep.idx}
	_, err := d.audit.WriteAt(tag, b[4:], addr+4)
	if err == nil {
		err = d.audit.Store32(tag, addr, le.Uint32(b[:4]))
	}
	if err != nil {
		ep.eqMu.Unlock()
		d.stats.dmaFaults.Add(1)
		d.warnf("eqdma", "event queue DMA failed, endpoint in error", logrus.Fields{"endpoint": ep.idx, "error": err})
		d.errorEndpointLocked(ep, EPCauseDMAFault)
		return
	}
	ep.eqTail++
	raise := ep.armed
	ep.armed = false
	ep.eqMu.Unlock()
	if raise {
		d.host.IRQ.Raise(ep.vector())
	}
}

// rearm handles an EQ_HEAD write: the vector is armed again, and fires at
// once if events the driver has not consumed are waiting.
func (ep *endpoint) rearm(head uint32) {
	ep.eqMu.Lock()
	pending := ep.eqTail != head
	ep.armed = !pending
	ep.eqMu.Unlock()
	if pending {
		ep.dev.raise(ep.vector())
	}
}

// writeStatus DMA-writes ep's status block.
func (d *Device) writeStatus(ep *endpoint) {
	ep.mu.Lock()
	gpa, fence, head := ep.statusGPA, ep.fenceDone, ep.cmdq.head
	ep.mu.Unlock()
	ep.eqMu.Lock()
	tail, bad, over := ep.eqTail, ep.badCmds, ep.eqOverflows
	ep.eqMu.Unlock()
	var b [SBSize]byte
	le := binary.LittleEndian
	le.PutUint64(b[SBFenceDone:], fence)
	le.PutUint32(b[SBCmdqHead:], head)
	le.PutUint32(b[SBEqTail:], tail)
	le.PutUint32(b[SBBadCmds:], bad)
	le.PutUint32(b[SBEqOverflows:], over)
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	if !d.attached {
		return
	}
	if _, err := d.audit.WriteAt(dma.Tag{Kind: dma.TagStatus, Endpoint: ep.idx}, b[:], gpa); err != nil {
		d.stats.dmaFaults.Add(1)
		d.warnf("sbdma", "status block DMA failed", logrus.Fields{"endpoint": ep.idx, "error": err})
	}
}

// completion is an event owed to an endpoint, posted once no lock is held.
type completion struct {
	ep *endpoint
	ev event
}

func emit(cs []completion) {
	for _, c := range cs {
		c.ep.post(c.ev)
	}
}
