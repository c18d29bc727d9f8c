package myrimx

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The device's record of why registrations ended: counters of retirements
// per invalidation reason, per-endpoint operation counters, and a bounded
// log of the last RetiredLogSize retired registrations. They let a test (or a developer
// at the control socket) see from the device's side which DEREG reason a
// driver's notifier sent, not only what the driver says it sent.

// reasonNames spell the ABI's reasons as the control socket shows them.
var reasonNames = [...]string{
	ReasonUnmap: "unmap", ReasonClear: "clear", ReasonProtectionVMA: "protection-vma",
	ReasonProtectionPage: "protection-page", ReasonSoftDirty: "soft-dirty", ReasonRelease: "release",
	ReasonMigrate: "migrate", ReasonExclusive: "exclusive", ReasonUser: "user", ReasonDMAUnmap: "dma-unmap",
	ReasonReset: "reset", ReasonInvSync: "inv-sync",
}

// String names r: "unmap", "clear", ... or "reason-N" for a value the ABI
// does not define (a DEREG's reason byte is the guest's to choose).
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason-%d", r)
}

// reasonSlots counts retirements: one per defined reason, the last for any
// other value.
const reasonSlots = len(reasonNames) + 1

func reasonSlot(r Reason) int { return min(int(r), reasonSlots-1) }

// RetiredLogSize bounds the log of retired registrations (Retired): the
// oldest entry goes when a new one comes. 128 keeps the control socket's
// reply (about 330 bytes an entry at most) under the 64 KiB line that
// go-qemu's client reads.
const RetiredLogSize = 128

// Retirement is one registration that left the table: how it ended and
// what it carried.
type Retirement struct {
	Seq          uint64 // 1 for the device's first retirement, then +1
	Endpoint     int
	ID, Gen      uint32
	Reason       Reason // the DEREG's reason, or the device's (dma-unmap, inv-sync, reset, release)
	Pages        int
	Length       uint64
	UserVA       uint64
	Registered   time.Time
	Retired      time.Time
	Ops          uint64
	BytesRead    uint64
	BytesWritten uint64
}

// retiredLog is a ring of the last RetiredLogSize retirements.
type retiredLog struct {
	mu  sync.Mutex
	buf [RetiredLogSize]Retirement
	n   uint64 // retirements ever logged
}

func (l *retiredLog) add(e Retirement) {
	l.mu.Lock()
	l.n++
	e.Seq = l.n
	l.buf[(l.n-1)%RetiredLogSize] = e
	l.mu.Unlock()
}

// Retired returns the last retired registrations, oldest first (at most
// RetiredLogSize), and how many the device retired in all: total minus
// len(list) were dropped from the log.
func (d *Device) Retired() (list []Retirement, total uint64) {
	l := &d.retired
	l.mu.Lock()
	defer l.mu.Unlock()
	first := uint64(0)
	if l.n > RetiredLogSize {
		first = l.n - RetiredLogSize
	}
	list = make([]Retirement, 0, l.n-first)
	for i := first; i < l.n; i++ {
		list = append(list, l.buf[i%RetiredLogSize])
	}
	return list, l.n
}

// retire accounts for r leaving the table with reason: the counters and
// the log. Called once per registration, after its DMA drained.
func (d *Device) retire(r *region, reason Reason) {
	d.stats.deregsByReason[reasonSlot(reason)].Add(1)
	r.ep.stats.deregs.Add(1)
	d.retired.add(Retirement{
		Endpoint: r.ep.idx, ID: r.id, Gen: r.gen, Reason: reason, Pages: len(r.pages), Length: r.length,
		UserVA: r.userVA, Registered: r.regAt, Retired: time.Now(), Ops: r.nops.Load(),
		BytesRead: r.bytesRead.Load(), BytesWritten: r.bytesWritten.Load(),
	})
}

// DeregsByReason returns how many registrations the device retired for
// each reason (zeros included for the ABI's reasons; "other" counts
// reasons the ABI does not define). Every retirement counts once, whoever
// caused it: the driver's DEREG, EP_CTRL CLOSE or RESET, a DMA_UNMAP, an
// INV_SYNC.
func (d *Device) DeregsByReason() map[string]uint64 {
	out := make(map[string]uint64, reasonSlots)
	for i := range reasonSlots - 1 {
		out[Reason(i).String()] = d.stats.deregsByReason[i].Load()
	}
	out["other"] = d.stats.deregsByReason[reasonSlots-1].Load()
	return out
}

// epStats are one endpoint's counters (EndpointCounters).
type epStats struct {
	regs, deregs, sends, recvs, fences, bytesSent, bytesReceived atomic.Uint64
}

// EndpointCounters are one endpoint's counters since the device was made.
type EndpointCounters struct {
	Endpoint      int
	State         string // closed, open, error
	Live          int    // registrations in the table now
	Regs          uint64 // REGs that succeeded
	Deregs        uint64 // registrations retired, any reason
	Sends, Recvs  uint64 // SEND and RECV commands
	Fences        uint64
	BytesSent     uint64 // by its completed SENDs
	BytesReceived uint64 // by its completed RECVs
}

// EndpointCounters returns every endpoint's counters.
func (d *Device) EndpointCounters() []EndpointCounters {
	out := make([]EndpointCounters, 0, len(d.eps))
	for _, ep := range d.eps {
		st := "closed"
		switch ep.state.Load() {
		case EPStateOpen:
			st = "open"
		case EPStateError:
			st = "error"
		}
		s := &ep.stats
		out = append(out, EndpointCounters{
			Endpoint: ep.idx, State: st, Live: len(ep.liveRegions()), Regs: s.regs.Load(), Deregs: s.deregs.Load(),
			Sends: s.sends.Load(), Recvs: s.recvs.Load(), Fences: s.fences.Load(),
			BytesSent: s.bytesSent.Load(), BytesReceived: s.bytesReceived.Load(),
		})
	}
	return out
}
