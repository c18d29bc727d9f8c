package myritest

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Event is what one interrupt brought to a slice: the handler's view
// (myri10ge_intr) and the NAPI poll it scheduled (myri10ge_poll).
type Event struct {
	Slice  int
	Valid  uint8 // the interrupt block's valid byte (0 on rx-only slices)
	TxDone int   // packets completed (send_done_count advance)
	Frames []Frame
	// LinkChanged is set when a statistics update (slice 0) changed the
	// link state; Link is the new link_up value.
	LinkChanged bool
	Link        uint32
	LinkDown    int  // link_down of the update (the ETHERNET_DOWN report)
	Polled      bool // the handler scheduled NAPI (valid & 1) and the poll ran
}

// Frame is a received frame as the driver took it from the rings.
type Frame struct {
	Data    []byte // the frame, without the 2-byte pad (VLAN tag kept)
	Csum    uint16 // the rx_done checksum (already verified unless RxCsumOff)
	Big     bool   // from the big ring
	Buffers int    // receive buffers it used
}

// ServiceInterrupt waits for the next interrupt of slice (its MSI-X
// vector, or the one MSI/INTx vector; without Interrupts, for the slice's
// interrupt block to show valid != 0) and handles it as the driver does:
//
// The handler (myri10ge_intr) requires valid != 0; takes the RX token and
// schedules NAPI when valid & 1; clears valid (MSI) or writes the deassert
// register (INTx) and waits for the device to clear it; completes
// transmits up to send_done_count; on slice 0 examines a statistics
// update (link state, rdma_tags_available, link_down); and returns the IRQ
// token by writing claim word 1 last.
//
// The NAPI poll (myri10ge_poll) then takes rx_done slots while their
// length is non-zero (zeroing it), 64 per round, picks the small or big
// ring by length <= small_bytes, refills rings below the fill threshold in
// groups of 8, and returns the RX token by writing claim word 0.
//
// Everything the device got wrong on the way is a descriptive error
// wrapping ErrProtocol: an interrupt without valid, a block rewritten
// while the driver held the IRQ token, valid & 1 while it held the RX
// token, a send_done_count that goes back or beyond the packets posted,
// rdma_tags_available != 15, an rx_done length beyond SET_MTU or its
// buffers or the posted buffers, a buffer the device never wrote (wrong
// ring) or wrote past the frame, a slot filled out of order, a checksum
// that is not the sum over frame[14:]. The token protocol is completed
// before such an error is returned.
func (d *Driver) ServiceInterrupt(ctx context.Context, slice int) (Event, error) {
	d.mu.Lock()
	if d.mode == 0 || slice < 0 || slice >= len(d.ss) {
		d.mu.Unlock()
		return Event{}, fmt.Errorf("%w: no interrupt for slice %d (interface down or no such slice)", ErrState, slice)
	}
	vector := 0
	if d.mode == ModeMSIX {
		vector = slice
	}
	irq, s := d.irq, d.ss[slice]
	rxOnly := d.numTxQueues == 1 && slice != 0
	nextSlot := s.rxDone + uint64(slotSize*s.rxDoneIdx)
	d.mu.Unlock()

	if irq != nil {
		if err := irq.Wait(ctx, vector); err != nil {
			return Event{}, err
		}
	} else {
		for {
			if rxOnly && d.mem.loadBE32(nextSlot)&0xffff != 0 ||
				!rxOnly && d.mem.loadBE32(s.stats+irqOffTxStopped)&0xff != 0 {
				break
			}
			if err := ctx.Err(); err != nil {
				return Event{}, err
			}
			time.Sleep(50 * time.Microsecond)
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode == 0 {
		return Event{}, fmt.Errorf("%w: interrupt after the interface went down", ErrState)
	}
	ev, schedule, err := d.intr(ctx, s, rxOnly)
	if e, ok := irq.(EOIer); ok && d.mode == ModeINTx {
		if e2 := e.EOI(); e2 != nil {
			err = errors.Join(err, e2)
		}
	}
	if schedule {
		ev.Polled = true
		err = errors.Join(err, d.poll64(ctx, s, &ev))
	}
	return ev, err
}

// intr is myri10ge_intr. It reports whether NAPI was scheduled.
func (d *Driver) intr(ctx context.Context, s *sliceState, rxOnly bool) (Event, bool, error) {
	d.stats.Interrupts++
	ev := Event{Slice: s.idx}
	if rxOnly {
		// A receive-only slice's MSI-X vector is implicitly valid; its
		// handler never touches the block nor writes claim word 1.
		s.rxHeld = true
		return ev, s.napi, nil
	}
	validAddr := s.stats + irqOffTxStopped
	valid := uint8(d.mem.loadBE32(validAddr))
	if valid == 0 {
		return ev, false, d.violation("slice %d: interrupt with valid == 0 in the interrupt block (IRQ_NONE): "+
			"the device signalled without DMAing a block, or signalled one block twice", s.idx)
	}
	ev.Valid = valid
	var errs []error
	s.irqHeld = true
	schedule := false
	if valid&1 != 0 {
		if s.rxHeld {
			errs = append(errs, d.violation("slice %d: block with valid & 1 (RX token) while the driver holds the RX token "+
				"(claim word 0 not written yet)", s.idx))
		}
		s.rxHeld = true
		schedule = s.napi // napi_schedule does nothing while NAPI is disabled
	}
	clearValid := func() {
		b := d.mem.mustBytes(s.stats+irqOffValid, 1)
		b[0] = 0
	}
	if d.mode == ModeINTx {
		if err := d.putBE32(d.irqDeassert, 0); err != nil {
			return ev, false, err
		}
		if d.opts.NoDeassertWait {
			clearValid()
		}
	} else {
		clearValid()
	}
	validNow := func() bool { return uint8(d.mem.loadBE32(validAddr)) == 0 }
	for {
		sdc := d.mem.loadBE32(s.stats + irqOffSendDoneCount)
		if sdc != uint32(s.tx.pktDone) {
			if err := d.txDone(s, sdc, &ev); err != nil {
				errs = append(errs, err)
			}
		}
		if validNow() {
			break
		}
		if d.mode != ModeINTx {
			errs = append(errs, d.violation("slice %d: interrupt block rewritten (valid %#x, send_done_count %d) while the driver held the IRQ token: "+
				"the driver's handler would spin until \"irq stuck?\"", s.idx, uint8(d.mem.loadBE32(validAddr)), d.mem.loadBE32(s.stats+irqOffSendDoneCount)))
			clearValid()
			break
		}
		// INTx: the device clears valid by DMA after the deassert.
		ok, err := d.poll(ctx, 100*time.Millisecond, validNow)
		if err != nil {
			return ev, false, err
		}
		if !ok {
			d.logf(Warn, "irq stuck?")
			errs = append(errs, d.violation("slice %d: the device never cleared valid after the INTx deassert write (deassert_wait)", s.idx))
			clearValid()
		}
	}
	if s.idx == 0 {
		if err := d.checkStatBlock(s, &ev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.putBE32(s.irqClaim+4, irqClaimValue); err != nil {
		return ev, false, err
	}
	s.irqHeld = false
	return ev, schedule, errors.Join(errs...)
}

// checkStatBlock is myri10ge_check_statblock (slice 0 only).
func (d *Driver) checkStatBlock(s *sliceState, ev *Event) error {
	w := d.mem.loadBE32(s.stats + irqOffTxStopped)
	if (w>>8)&0xff == 0 { // stats_updated
		return nil
	}
	linkDown := int(w>>16) & 0xff
	var err error
	if link := d.mem.loadBE32(s.stats + irqOffLinkUp); link != d.linkState {
		d.linkState = link
		ev.LinkChanged, ev.Link = true, link
		switch link {
		case LinkUp:
			d.logf(Info, "link up")
		case LinkMyrinet:
			d.logf(Info, "link mismatch (Myrinet detected)")
		default:
			d.logf(Info, "link down")
		}
		d.linkChanges++
	}
	if tags := d.mem.loadBE32(s.stats + irqOffRDMATags); tags != d.rdmaTags {
		d.rdmaTags = tags
		d.logf(Warn, "RDMA timed out! %d tags left", tags)
		err = fmt.Errorf("%w: rdma_tags_available %d in a statistics update, want %d", ErrProtocol, tags, rdmaTagsAvailable)
	}
	d.downCnt += linkDown
	ev.LinkDown = linkDown
	if linkDown != 0 && d.running == stateRunning {
		d.logf(Warn, "link_down %d in a statistics update while the interface is up (only the ETHERNET_DOWN report carries it)", linkDown)
	}
	return err
}

// txDone is myri10ge_tx_done: free descriptors until the driver's packet
// count reaches send_done_count.
func (d *Driver) txDone(s *sliceState, sdc uint32, ev *Event) error {
	t := &s.tx
	adv := int(int32(sdc - uint32(t.pktDone)))
	if out := t.pktStart - t.pktDone; adv < 0 || adv > out {
		return d.violation("slice %d: send_done_count %d with %d packets completed and %d posted: "+
			"the driver would free descriptors it never posted (or walk the ring forever)", s.idx, sdc, t.pktDone, t.pktStart)
	}
	for uint32(t.pktDone) != sdc {
		inf := &t.info[t.done&t.mask]
		if inf.pkt {
			s.txPackets++
			s.txBytes += inf.len
			d.stats.TxCompleted++
		}
		for _, b := range inf.bufs {
			d.mem.Free(b)
		}
		if inf.last {
			t.pktDone++
		}
		*inf = txInfo{}
		t.done++
	}
	ev.TxDone += adv
	if d.numTxQueues > 1 && t.req == t.done {
		t.queueActive = false
		if err := d.putBE32(t.sendStop, 1); err != nil {
			return err
		}
	}
	if t.stopped && t.req-t.done < t.mask>>1 && d.running == stateRunning {
		t.stopped = false
		t.wakeQueue++
		d.stats.WakeQueue++
	}
	return nil
}

// poll64 is myri10ge_poll, repeated while a round uses its whole budget
// as NAPI would.
func (d *Driver) poll64(ctx context.Context, s *sliceState, ev *Event) error {
	for {
		work, err := d.cleanRxDone(s, napiWeight, ev)
		if err != nil {
			// Still hand the RX token back, so the device is not left waiting.
			if e := d.putBE32(s.irqClaim, irqClaimValue); e == nil {
				s.rxHeld = false
			}
			return err
		}
		if work < napiWeight {
			var errs []error
			if err := d.checkSlotsInOrder(s); err != nil {
				errs = append(errs, err)
			}
			if v := uint8(d.mem.loadBE32(s.stats + irqOffTxStopped)); v&1 != 0 && !(d.numTxQueues == 1 && s.idx != 0) {
				errs = append(errs, d.violation("slice %d: new interrupt block with valid & 1 while the driver still held the RX token", s.idx))
			}
			if err := d.putBE32(s.irqClaim, irqClaimValue); err != nil {
				return err
			}
			s.rxHeld = false
			return errors.Join(errs...)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// checkSlotsInOrder finds rx_done slots the device filled while the one
// the driver waits on is still empty: the driver would never see them.
func (d *Driver) checkSlotsInOrder(s *sliceState) error {
	for i := range d.maxIntr {
		if i == s.rxDoneIdx {
			continue
		}
		if d.mem.loadBE32(s.rxDone+uint64(slotSize*i))&0xffff == 0 {
			continue
		}
		if d.mem.loadBE32(s.rxDone+uint64(slotSize*s.rxDoneIdx))&0xffff != 0 {
			return nil // a new entry arrived meanwhile, in order
		}
		return d.violation("slice %d: rx_done slot %d is filled but slot %d, the next the driver reads, is empty: "+
			"the driver would never see it", s.idx, i, s.rxDoneIdx)
	}
	return nil
}

// cleanRxDone is myri10ge_clean_rx_done.
func (d *Driver) cleanRxDone(s *sliceState, budget int, ev *Event) (int, error) {
	work := 0
	for work < budget {
		addr := s.rxDone + uint64(slotSize*s.rxDoneIdx)
		w := d.mem.loadBE32(addr)
		length := int(w & 0xffff)
		if length == 0 {
			break
		}
		d.mem.storeBE32(addr, w&0xffff0000) // the driver zeroes the length
		f, err := d.rxFrame(s, length, uint16(w>>16))
		s.rxDoneCnt++
		s.rxDoneIdx = s.rxDoneCnt & (d.maxIntr - 1)
		work++
		if err != nil {
			return work, err
		}
		ev.Frames = append(ev.Frames, f)
	}
	if d.smallBytes != 0 && s.small.fill-s.small.cnt < d.opts.FillThresh {
		if err := d.allocRxPages(&s.small); err != nil {
			return work, err
		}
	}
	if s.big.fill-s.big.cnt < d.opts.FillThresh {
		if err := d.allocRxPages(&s.big); err != nil {
			return work, err
		}
	}
	return work, nil
}

// rxFrame is myri10ge_rx_done: take the buffers of one frame.
func (d *Driver) rxFrame(s *sliceState, length int, csum uint16) (Frame, error) {
	small := length <= d.smallBytes
	r, name := &s.big, "big"
	if small {
		r, name = &s.small, "small"
	}
	maxFrame := d.mtu + ethHLen + vlanHLen
	if length > maxFrame {
		return Frame{}, d.violation("slice %d: rx_done length %d exceeds SET_MTU %d", s.idx, length, maxFrame)
	}
	if !small && r.bytes < pageSize && length+rxPad > r.bytes {
		return Frame{}, d.violation("slice %d: rx_done length %d does not fit the %d-byte big buffers (pad included)", s.idx, length, r.bytes)
	}
	need := (length + rxPad + pageSize - 1) / pageSize
	if avail := r.fill - r.cnt; avail < need || (small && d.smallBytes == 0) {
		return Frame{}, d.violation("slice %d: rx_done announces a %d-byte frame needing %d %s buffer(s), but %d are posted",
			s.idx, length, need, name, avail)
	}
	data := make([]byte, 0, length+rxPad)
	remain := length + rxPad
	var errs []error
	for j := range need {
		inf := r.info[r.cnt&r.mask]
		addr := inf.page.addr + uint64(inf.off)
		capacity := min(r.bytes, pageSize-inf.off)
		chunk := min(remain, pageSize)
		b := d.mem.mustBytes(addr, capacity)
		first := 0
		if j == 0 {
			first = rxPad
		}
		if n := min(16, chunk-first); n > 0 && isCanary(b[first:first+n], first) {
			errs = append(errs, d.violation("slice %d: %s buffer #%d (%#x) holds no data for a %d-byte frame (part %d of %d): "+
				"the device wrote it elsewhere (wrong ring, or wrong buffer)", s.idx, name, r.cnt, addr, length, j+1, need))
		}
		if chunk < capacity && !isCanary(b[chunk:], chunk) {
			errs = append(errs, d.violation("slice %d: the device wrote past the end of a %d-byte frame in %s buffer #%d (%#x)",
				s.idx, length, name, r.cnt, addr))
		}
		data = append(data, b[:chunk]...)
		d.releasePage(inf.page)
		r.info[r.cnt&r.mask] = rxBufInfo{}
		r.cnt++
		remain -= chunk
	}
	f := Frame{Data: data[rxPad:], Csum: csum, Big: !small, Buffers: need}
	if length < ethHLen {
		errs = append(errs, d.violation("slice %d: %d-byte frame delivered (runt: the device drops frames shorter than 14 bytes)", s.idx, length))
	} else if !d.opts.RxCsumOff {
		if want := Checksum(f.Data[ethHLen:]); !csumEqual(want, csum) {
			d.logf(Err, "hw csum failure")
			errs = append(errs, d.violation("slice %d: rx_done checksum %#04x for a %d-byte frame; the sum over frame[14:] is %#04x",
				s.idx, csum, length, want))
		}
	}
	s.rxPackets++
	s.rxBytes += length
	d.stats.RxFrames++
	d.stats.RxBytes += length
	return f, errors.Join(errs...)
}

// Checksum returns the 16-bit ones'-complement sum of b (RFC 1071: an odd
// last byte is padded with zero), folded and not complemented: what the
// device reports in rx_done slots (§5.3).
func Checksum(b []byte) uint16 {
	var sum uint64
	for len(b) >= 2 {
		sum += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// csumEqual compares ones'-complement sums, where 0 and 0xffff are both zero.
func csumEqual(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

// Receive services interrupts of slice until n frames arrived (counting
// frames left in the backlog by Open), and returns them.
func (d *Driver) Receive(ctx context.Context, slice, n int) ([]Frame, error) {
	var out []Frame
	d.mu.Lock()
	var keep []Event
	for _, ev := range d.backlog {
		if ev.Slice == slice {
			out = append(out, ev.Frames...)
			ev.Frames = nil
		}
		keep = append(keep, ev)
	}
	d.backlog = keep
	d.mu.Unlock()
	for len(out) < n {
		ev, err := d.ServiceInterrupt(ctx, slice)
		out = append(out, ev.Frames...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// WaitTx services interrupts of slice until every packet posted on it has
// been completed, and returns the events on the way (frames included).
func (d *Driver) WaitTx(ctx context.Context, slice int) ([]Event, error) {
	var evs []Event
	for {
		d.mu.Lock()
		if slice < 0 || slice >= len(d.ss) {
			d.mu.Unlock()
			return evs, fmt.Errorf("%w: no slice %d", ErrState, slice)
		}
		t := &d.ss[slice].tx
		done := t.pktDone == t.pktStart
		d.mu.Unlock()
		if done {
			return evs, nil
		}
		ev, err := d.ServiceInterrupt(ctx, slice)
		evs = append(evs, ev)
		if err != nil {
			return evs, err
		}
	}
}
