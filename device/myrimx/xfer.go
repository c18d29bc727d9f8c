package myrimx

import (
	"github.com/myriemu/myriemu/dma"
	"github.com/sirupsen/logrus"
)

// step moves the next chunk (at most Chunk bytes) of t (§6.5) and reports
// whether t is over. Runs on the worker that matched t.
//
// Both regions are held for reading across the chunk, taken in serial
// order, and their state is checked under the hold: an invalidation that
// began before stops the transfer before a byte moves, one that begins
// during the chunk waits for it. Addresses come from the device's page
// lists; every piece goes through the dma door with its tags.
func (d *Device) step(t *transfer) bool {
	if t.finished.Load() {
		return true
	}
	s, r := t.send, t.recv
	src, dst := s.reg, r.reg
	first, second := src, dst
	if second.serial < first.serial {
		first, second = second, first
	}
	first.mu.RLock()
	if second != first {
		second.mu.RLock()
	}
	// Completions are posted before the holds end: an invalidation waiting
	// for this chunk acknowledges its DEREG only after the region's
	// operations reported how they ended.
	defer func() {
		if second != first {
			second.mu.RUnlock()
		}
		first.mu.RUnlock()
	}()
	if t.finished.Load() {
		return true
	}
	if src.state.Load() != regionValid || dst.state.Load() != regionValid {
		d.finish(t, StatusRegionInvalidated)
		return true
	}
	if !src.audit.BusMaster() || !dst.audit.BusMaster() {
		d.stats.dmaFaults.Add(1)
		d.finish(t, StatusDMAFault) // a function may not master the bus: stop, as hardware aborts
		return true
	}
	done := t.done.Load()
	end := min(t.n, done+Chunk)
	stag := dma.Tag{Kind: dma.TagData, Endpoint: s.ep.idx, Region: src.id, Gen: src.gen, Cookie: s.cookie}
	dtag := dma.Tag{Kind: dma.TagData, Endpoint: r.ep.idx, Region: dst.id, Gen: dst.gen, Cookie: r.cookie}
	var err error
	for done < end {
		so, do := s.offset+done, r.offset+done
		sgpa, sn := src.run(so, end-done)
		dgpa, dn := dst.run(do, end-done)
		n := min(sn, dn)
		stag.Offset, dtag.Offset = so, do
		var k int
		k, err = dma.Copy(dst.audit, dtag, dgpa, src.audit, stag, sgpa, int(n), d.buf)
		done += uint64(k)
		t.done.Store(done)
		if err != nil {
			break
		}
	}
	d.stats.chunks.Add(1)
	if err != nil {
		d.stats.dmaFaults.Add(1)
		d.warnf("datadma", "transfer DMA failed", logrus.Fields{"endpoint": s.ep.idx, "error": err})
		d.finish(t, StatusDMAFault)
		return true
	}
	if done == t.n {
		d.finish(t, StatusSuccess)
		return true
	}
	return false
}

// finish completes t with status unless someone else already did.
func (d *Device) finish(t *transfer, status Status) {
	h := d.hub
	h.mu.Lock()
	cs := h.finishLocked(t, status)
	h.mu.Unlock()
	if cs != nil {
		t.send.reg.nops.Add(1)
		t.recv.reg.nops.Add(1)
		n := t.done.Load()
		t.send.reg.bytesRead.Add(n)
		t.recv.reg.bytesWritten.Add(n)
		t.send.ep.stats.bytesSent.Add(n)
		t.recv.ep.stats.bytesReceived.Add(n)
		d.stats.bytes.Add(n)
	}
	emit(cs)
}
