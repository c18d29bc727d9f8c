package myrimx

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/myriemu/myriemu/dma"
	"github.com/sirupsen/logrus"
)

// Command is a view of one 64-byte command (§6.3); see myrimx_abi.h.
type Command []byte

var le = binary.LittleEndian

func (c Command) Opcode() Opcode       { return Opcode(c[CmdOpcode]) }
func (c Command) Flags() uint8         { return c[CmdFlags] }
func (c Command) Reason() Reason       { return Reason(c[CmdReason]) }
func (c Command) Seq() uint32          { return le.Uint32(c[CmdSeq:]) }
func (c Command) Cookie() uint64       { return le.Uint64(c[CmdCookie:]) }
func (c Command) RegionID() uint32     { return le.Uint32(c[CmdRegionID:]) }
func (c Command) Generation() uint32   { return le.Uint32(c[CmdGeneration:]) }
func (c Command) Access() uint32       { return le.Uint32(c[CmdRegAccess:]) }
func (c Command) PageShift() uint8     { return c[CmdRegPageShift] }
func (c Command) FirstOff() uint32     { return le.Uint32(c[CmdRegFirstOff:]) }
func (c Command) NrPages() uint32      { return le.Uint32(c[CmdRegNrPages:]) }
func (c Command) RegLength() uint64    { return le.Uint64(c[CmdRegLength:]) }
func (c Command) UserVA() uint64       { return le.Uint64(c[CmdRegUserVA:]) }
func (c Command) PageList() uint64     { return le.Uint64(c[CmdRegPageList:]) }
func (c Command) Offset() uint64       { return le.Uint64(c[CmdOffset:]) }
func (c Command) Length() uint32       { return le.Uint32(c[CmdLength:]) }
func (c Command) DestEP() uint16       { return le.Uint16(c[CmdSendDestEP:]) }
func (c Command) DestNIC() uint64      { return le.Uint64(c[CmdSendDestNIC:]) }
func (c Command) SendMatch() uint64    { return le.Uint64(c[CmdSendMatch:]) }
func (c Command) RecvMatch() uint64    { return le.Uint64(c[CmdRecvMatch:]) }
func (c Command) RecvMask() uint64     { return le.Uint64(c[CmdRecvMask:]) }
func (c Command) CancelSeq() uint32    { return le.Uint32(c[CmdCancelSeq:]) }
func (c Command) CancelCookie() uint64 { return le.Uint64(c[CmdCancelCookie:]) }
func (c Command) FenceSeq() uint64     { return le.Uint64(c[CmdFenceSeq:]) }

// cmdBatch is the most commands read from a ring in one DMA.
const cmdBatch = 64

// serviceEndpoint runs the commands the driver produced since the last
// doorbell, in ring order, and reports whether it did anything. Runs on
// the worker.
func (d *Device) serviceEndpoint(ep *endpoint) bool {
	d.cmdMu.Lock()
	defer d.cmdMu.Unlock()
	ep.mu.Lock()
	if !ep.kicked || !ep.open() {
		ep.kicked = false
		ep.mu.Unlock()
		return false
	}
	ep.kicked = false
	cmdq, tail := ep.cmdq, ep.cmdqTail
	ep.mu.Unlock()
	head, size := cmdq.head, cmdq.size()
	if tail-head > size {
		d.warnf("badtail", "command tail beyond the ring", logrus.Fields{"endpoint": ep.idx, "head": head, "tail": tail})
		d.errorEndpoint(ep, EPCauseBadRing)
		return true
	}
	var buf [cmdBatch * CmdSize]byte
	for head != tail && ep.open() {
		k := min(tail-head, size-head&(size-1), cmdBatch)
		p := buf[:k*CmdSize]
		addr := cmdq.slot(head, CmdSize)
		if _, err := d.audit.ReadAt(dma.Tag{Kind: dma.TagCmdRing, Endpoint: ep.idx}, p, addr); err != nil {
			d.stats.dmaFaults.Add(1)
			d.warnf("cmddma", "command ring DMA failed", logrus.Fields{"endpoint": ep.idx, "error": err})
			d.errorEndpoint(ep, EPCauseDMAFault)
			return true
		}
		for i := range k {
			if !ep.open() {
				break
			}
			d.execute(ep, Command(p[i*CmdSize:(i+1)*CmdSize]))
			head++
			ep.mu.Lock()
			ep.cmdq.head = head
			ep.mu.Unlock()
		}
	}
	d.writeStatus(ep)
	return true
}

// execute runs one command: README "Commands" names each handler.
func (d *Device) execute(ep *endpoint, c Command) {
	d.stats.commands.Add(1)
	var ev event
	switch c.Opcode() {
	case OpReg:
		ev = d.cmdReg(ep, c)
	case OpDereg:
		ev = d.cmdDereg(ep, c)
	case OpSend:
		ev, _ = d.cmdSend(ep, c)
	case OpRecv:
		ev, _ = d.cmdRecv(ep, c)
	case OpCancel:
		ev = d.cmdCancel(ep, c)
	case OpFence:
		ev = d.cmdFence(ep, c)
	case OpNop:
		ev = event{typ: EvtNopDone}
		if c.Flags()&FlagEvent == 0 {
			return
		}
	default:
		d.stats.badCommands.Add(1)
		ep.eqMu.Lock()
		ep.badCmds++
		ep.eqMu.Unlock()
		d.warnf("badop", "unknown command opcode", logrus.Fields{"endpoint": ep.idx, "opcode": c.Opcode()})
		ev = event{typ: EvtEPError, status: StatusBadCommand}
	}
	if ev.typ == 0 {
		return // completes later (a posted SEND or RECV) or not at all (FENCE without FlagEvent)
	}
	ev.seq, ev.cookie = c.Seq(), c.Cookie()
	ep.post(ev)
}

// cmdReg is REG (§6.3): the page list is read from guest memory, checked
// against the client's map and copied into the device.
func (d *Device) cmdReg(ep *endpoint, c Command) event {
	ev := event{typ: EvtRegDone, region: c.RegionID(), gen: c.Generation()}
	fail := func(s Status) event {
		ev.status = s
		return ev
	}
	id, shift, nr, first, length := c.RegionID(), c.PageShift(), c.NrPages(), uint64(c.FirstOff()), c.RegLength()
	access := c.Access()
	if nr > MaxPages {
		return fail(StatusNoResources) // more pages than the device's table holds
	}
	if id >= RegionsPerEP || (shift != 12 && shift != 21) || nr == 0 || access == 0 ||
		access&^(AccessSendSrc|AccessRecvDst) != 0 || c.PageList()%8 != 0 {
		return fail(StatusBadCommand)
	}
	ps := uint64(1) << shift
	if first >= ps || length == 0 || length > uint64(nr)<<shift-first || (first+length+ps-1)>>shift != uint64(nr) {
		return fail(StatusBadCommand)
	}
	h := d.hub
	h.mu.Lock()
	busy := ep.slots[id].Load() != nil || ep.retiredLocked(id, c.Generation())
	h.mu.Unlock()
	if busy {
		return fail(StatusBusy)
	}

	pages := make([]uint64, nr)
	if st := d.readPageList(ep, c.PageList(), pages); st != StatusSuccess {
		return fail(st)
	}
	for _, p := range pages {
		if p%ps != 0 {
			return fail(StatusBadAddress)
		}
	}
	prot := dma.Prot(0)
	if access&AccessSendSrc != 0 {
		prot |= dma.ProtRead
	}
	if access&AccessRecvDst != 0 {
		prot |= dma.ProtWrite
	}
	if m := dma.MapOf(d.host.Mem); m != nil {
		if i := m.Covers(pages, ps, prot); i >= 0 {
			d.warnf("regaddr", "REG of a page the client did not map with the access asked", logrus.Fields{
				"endpoint": ep.idx, "region": id, "page": i, "gpa": pages[i]})
			return fail(StatusBadAddress)
		}
	}
	r := &region{
		serial: h.serial.Add(1), ep: ep, audit: d.audit, id: id, gen: c.Generation(), access: access,
		pageShift: shift, firstOff: first, length: length, userVA: c.UserVA(), pages: pages,
		mapEpoch: d.audit.Epoch(), regAt: time.Now(), ops: map[*op]struct{}{},
	}
	r.state.Store(regionValid)
	h.mu.Lock()
	ok := ep.slots[id].CompareAndSwap(nil, r)
	h.mu.Unlock()
	if !ok {
		return fail(StatusBusy)
	}
	d.stats.regs.Add(1)
	ep.stats.regs.Add(1)
	return ev
}

// readPageList reads the REG's page list in pieces of at most Chunk bytes,
// letting the audit know the range (A4).
func (d *Device) readPageList(ep *endpoint, gpa uint64, pages []uint64) Status {
	size := uint64(len(pages)) * 8
	ep.mu.Lock()
	ep.pageList = [2]uint64{gpa, size}
	ep.mu.Unlock()
	defer func() {
		ep.mu.Lock()
		ep.pageList = [2]uint64{}
		ep.mu.Unlock()
	}()
	buf := d.buf // the worker's
	tag := dma.Tag{Kind: dma.TagPageList, Endpoint: ep.idx}
	for off := uint64(0); off < size; {
		n := min(size-off, Chunk)
		p := buf[:n]
		if _, err := d.audit.ReadAt(tag, p, gpa+off); err != nil {
			if errors.Is(err, dma.ErrAudit) {
				return StatusDMAFault
			}
			return StatusBadAddress
		}
		for i := uint64(0); i < n; i += 8 {
			pages[(off+i)/8] = le.Uint64(p[i:])
		}
		off += n
	}
	return StatusSuccess
}

// cmdDereg is DEREG (§6.3, §6.7): it completes only after the region's
// DMA drained. A DEREG of a generation already retired (revoked by
// DMA_UNMAP or INV_SYNC) succeeds: the driver's invariant holds.
func (d *Device) cmdDereg(ep *endpoint, c Command) event {
	id, gen := c.RegionID(), c.Generation()
	ev := event{typ: EvtDeregDone, region: id, gen: gen, reason: uint8(c.Reason())}
	if id >= RegionsPerEP {
		ev.status = StatusBadRDMAWin
		return ev
	}
	h := d.hub
	h.mu.Lock()
	r := ep.slots[id].Load()
	stale := r == nil || r.gen != gen
	retired := ep.retiredLocked(id, gen)
	h.mu.Unlock()
	if stale {
		if !retired {
			ev.status = StatusBadRDMAWin
		}
		return ev
	}
	d.invalidate(r, c.Reason())
	return ev
}

// cmdSend is SEND (§6.3, §6.5).
func (d *Device) cmdSend(ep *endpoint, c Command) (event, *transfer) {
	d.stats.sends.Add(1)
	ep.stats.sends.Add(1)
	fail := func(s Status) (event, *transfer) {
		return event{typ: EvtSendDone, status: s, region: c.RegionID(), gen: c.Generation(),
			match: c.SendMatch(), msgLen: c.Length()}, nil
	}
	h := d.hub
	h.mu.Lock()
	r, st := ep.lookupLocked(c.RegionID(), c.Generation(), AccessSendSrc, c.Offset(), c.Length())
	if st != StatusSuccess {
		h.mu.Unlock()
		return fail(st)
	}
	dest := h.endpointLocked(c.DestNIC(), c.DestEP())
	if dest == nil {
		h.mu.Unlock()
		return fail(StatusBadEndpoint)
	}
	if !dest.open() {
		h.mu.Unlock()
		return fail(StatusEndpointClosed)
	}
	o := &op{kind: OpSend, ep: ep, seq: c.Seq(), cookie: c.Cookie(), reg: r, offset: c.Offset(),
		length: c.Length(), match: c.SendMatch(), dest: dest}
	t := h.postSendLocked(o)
	h.mu.Unlock()
	d.start(t)
	return event{}, t
}

// cmdRecv is RECV (§6.3): matched against waiting sends in arrival order.
func (d *Device) cmdRecv(ep *endpoint, c Command) (event, *transfer) {
	d.stats.recvs.Add(1)
	ep.stats.recvs.Add(1)
	h := d.hub
	h.mu.Lock()
	r, st := ep.lookupLocked(c.RegionID(), c.Generation(), AccessRecvDst, c.Offset(), c.Length())
	if st != StatusSuccess {
		h.mu.Unlock()
		return event{typ: EvtRecvDone, status: st, region: c.RegionID(), gen: c.Generation()}, nil
	}
	o := &op{kind: OpRecv, ep: ep, seq: c.Seq(), cookie: c.Cookie(), reg: r, offset: c.Offset(),
		length: c.Length(), match: c.RecvMatch(), mask: c.RecvMask()}
	t := h.postRecvLocked(o)
	h.mu.Unlock()
	d.start(t)
	return event{}, t
}

// start puts a matched transfer on the worker's list; an empty one
// completes at once.
func (d *Device) start(t *transfer) {
	if t == nil {
		return
	}
	if t.n == 0 {
		d.hub.mu.Lock()
		cs := d.hub.finishLocked(t, StatusSuccess)
		d.hub.mu.Unlock()
		emit(cs)
		return
	}
	d.active = append(d.active, t)
}

// cmdCancel is CANCEL: a SEND or RECV of this endpoint not yet matched
// completes CANCELLED.
func (d *Device) cmdCancel(ep *endpoint, c Command) event {
	ev := event{typ: EvtCancelDone, status: StatusNotFound}
	byCookie := c.Flags()&CancelByCookie != 0
	h := d.hub
	h.mu.Lock()
	var target *op
	for o := range ep.mine {
		if (byCookie && o.cookie == c.CancelCookie()) || (!byCookie && o.seq == c.CancelSeq()) {
			if target == nil || o.seq < target.seq {
				target = o
			}
		}
	}
	var cs []completion
	if target != nil {
		cs = h.abortLocked(target, StatusCancelled)
		ev.status = StatusSuccess
	}
	h.mu.Unlock()
	emit(cs)
	return ev
}

// cmdFence is FENCE (§6.3, §6.7): every earlier command of the ring has
// been executed (DEREGs drained; SENDs and RECVs completed or accepted).
// The status block is written before FENCE_DONE shows the new value.
func (d *Device) cmdFence(ep *endpoint, c Command) event {
	seq := c.FenceSeq()
	d.stats.fences.Add(1)
	ep.stats.fences.Add(1)
	ep.mu.Lock()
	ep.fenceDone = seq // what the status block carries
	ep.mu.Unlock()
	d.writeStatus(ep)
	ep.fenceVisible.Store(seq) // what the FENCE_DONE register returns, only now
	if c.Flags()&FlagEvent == 0 {
		return event{}
	}
	return event{typ: EvtFenceDone, match: seq}
}
