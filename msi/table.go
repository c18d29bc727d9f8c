package msi

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// SET_IRQS flags (VFIO_IRQ_SET_*; vfio-user-notes 5.2). A request carries
// exactly one Data and one Action bit.
const (
	DataNone      uint32 = 1 << 0 // no payload: fire, mask, unmask, or (count 0) disable
	DataBool      uint32 = 1 << 1 // one byte per vector in data: act where non-zero
	DataEventfd   uint32 = 1 << 2 // fds for the vectors (trigger) or INTx resample (unmask)
	ActionMask    uint32 = 1 << 3
	ActionUnmask  uint32 = 1 << 4
	ActionTrigger uint32 = 1 << 5

	dataFlags   = DataNone | DataBool | DataEventfd
	actionFlags = ActionMask | ActionUnmask | ActionTrigger
)

// VectorStats counts one vector's interrupts since the Table was made.
type VectorStats struct {
	Index     Index
	Vector    int
	Assigned  bool   // an eventfd is assigned
	Pending   bool   // MSI/MSI-X: raised while de-assigned; INTx: line asserted
	Raised    uint64 // Raise calls that chose this vector
	Delivered uint64 // eventfd signals written
	Dropped   uint64 // eventfd writes that failed (the client's fd is not writable)
}

// vector is one (index, subindex). fd changes only under Table.mu held for
// writing and is read under the read lock, so it stays open while written.
type vector struct {
	fd        int // -1: de-assigned
	pending   atomic.Bool
	warned    atomic.Bool // a failed write was logged for the current fd
	raised    atomic.Uint64
	delivered atomic.Uint64
	dropped   atomic.Uint64
}

type irqIndex struct {
	enabled bool // given DataEventfd|Trigger, not since disabled
	vecs    []vector
}

// Table maps a function's interrupt vectors to the eventfds its client
// assigned with SET_IRQS, and implements Raiser on top of them.
//
// Raise is on the packet path: it takes a read lock, does one eventfd write
// and touches atomics only. SetIRQs and Reset take the write lock, so an fd
// is never closed (and its number reused) while a Raise writes to it.
type Table struct {
	log *logrus.Entry
	one [8]byte // le64(1): an eventfd increment

	mode     atomic.Uint32 // Mode; changes under mu held for writing
	unrouted atomic.Uint64

	mu  sync.RWMutex
	idx [NumIndexes]irqIndex

	// INTx is a level with state of its own; Raise changes it under the
	// read lock of mu, so it has its own lock, taken after mu.
	intxMu       sync.Mutex
	intxAsserted bool // the device holds the line
	intxMasked   bool // automasked on signal, until the client's UNMASK
	intxDisabled bool // COMMAND.INTX_DISABLE
	resampleFd   int  // stored to be closed; the unmask message does its job
}

var _ Raiser = (*Table)(nil)

// NewTable returns a table with counts[i] vectors for index i, nothing
// enabled. INTx has at most one vector; negative counts are 0. log may be
// nil.
func NewTable(counts [NumIndexes]int, log *logrus.Entry) *Table {
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = logrus.NewEntry(l)
	}
	t := &Table{log: log.WithField("component", "msi"), resampleFd: -1}
	binary.LittleEndian.PutUint64(t.one[:], 1)
	for i := range t.idx {
		n := max(counts[i], 0)
		if Index(i) == INTx {
			n = min(n, 1)
		}
		t.idx[i].vecs = make([]vector, n)
		for v := range t.idx[i].vecs {
			t.idx[i].vecs[v].fd = -1
		}
	}
	return t
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// SetIRQs applies one SET_IRQS request (vfio-user-notes 5.2). It always
// takes ownership of fds: stored, or closed before it returns. Errors wrap
// unix.EINVAL and change nothing.
//
//   - count 0 with DataNone|Trigger disables index (closes its fds);
//     any other count 0 is EINVAL. Otherwise start+count must fit the index.
//   - DataEventfd|Trigger: fds go to start, start+1, ...; the rest of the
//     range is de-assigned (count 1 with no fd is QEMU's "MSI-X enabled, no
//     vector unmasked"). The index is enabled from then on. A vector raised
//     while de-assigned is signalled as soon as it gets an fd.
//   - DataNone|Trigger fires the assigned vectors of the range now;
//     DataBool|Trigger those with a non-zero byte. The index must be enabled.
//   - Mask/Unmask apply to INTx only. Unmask re-signals a line still
//     asserted. DataEventfd|Unmask gives an INTx resample fd, which is kept
//     (and closed) but not read: QEMU also sends the unmask as a message.
func (t *Table) SetIRQs(index Index, flags, start, count uint32, fds []int, data []byte) (err error) {
	owned := fds
	defer func() {
		if err != nil {
			closeFds(owned)
			err = fmt.Errorf("msi: set irqs %s flags %#x start %d count %d fds %d: %w", index, flags, start, count, len(fds), err)
		}
	}()
	dataType, action := flags&dataFlags, flags&actionFlags
	switch {
	case flags&^(dataFlags|actionFlags) != 0:
		return fmt.Errorf("unknown flag bits: %w", unix.EINVAL)
	case bits.OnesCount32(dataType) != 1 || bits.OnesCount32(action) != 1:
		return fmt.Errorf("need exactly one data and one action flag: %w", unix.EINVAL)
	case index >= NumIndexes:
		return fmt.Errorf("no such index: %w", unix.EINVAL)
	case len(fds) > 0 && dataType != DataEventfd:
		return fmt.Errorf("fds without DATA_EVENTFD: %w", unix.EINVAL)
	case hasDuplicate(fds):
		return fmt.Errorf("same fd twice: %w", unix.EINVAL)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	x := &t.idx[index]
	if count == 0 {
		if dataType == DataNone && action == ActionTrigger {
			t.disableLocked(index)
			t.updateModeLocked()
			t.log.WithField("index", index.String()).Debug("irq index disabled")
			return nil
		}
		return fmt.Errorf("count 0: %w", unix.EINVAL)
	}
	if uint64(start)+uint64(count) > uint64(len(x.vecs)) {
		return fmt.Errorf("range past the index's %d vectors: %w", len(x.vecs), unix.EINVAL)
	}
	if dataType == DataBool && uint64(len(data)) < uint64(count) {
		return fmt.Errorf("%d bool bytes for %d vectors: %w", len(data), count, unix.EINVAL)
	}

	switch action {
	case ActionTrigger:
		switch dataType {
		case DataEventfd:
			if uint64(len(fds)) > uint64(count) {
				return fmt.Errorf("more fds than vectors: %w", unix.EINVAL)
			}
			t.assignLocked(index, int(start), int(count), fds)
			owned = nil
			t.updateModeLocked()
			t.log.WithFields(logrus.Fields{
				"index": index.String(), "start": start, "count": count, "fds": len(fds), "mode": t.Mode().String(),
			}).Debug("irq eventfds set")
		default:
			if !x.enabled {
				return fmt.Errorf("index not enabled: %w", unix.EINVAL)
			}
			for k := range int(count) {
				if dataType == DataNone || data[k] != 0 {
					t.fireLocked(index, int(start)+k)
				}
			}
		}
	case ActionMask, ActionUnmask:
		if index != INTx {
			return fmt.Errorf("mask and unmask apply to INTx only: %w", unix.EINVAL)
		}
		switch dataType {
		case DataEventfd:
			if action == ActionMask {
				return fmt.Errorf("mask takes no eventfd: %w", unix.EINVAL)
			}
			t.setResampleLocked(fds)
			owned = nil
		case DataNone:
			t.setINTxMaskLocked(action == ActionMask)
		case DataBool:
			if data[0] != 0 {
				t.setINTxMaskLocked(action == ActionMask)
			}
		}
	}
	return nil
}

func hasDuplicate(fds []int) bool {
	if len(fds) < 2 {
		return false
	}
	s := slices.Clone(fds)
	slices.Sort(s)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] && s[i] >= 0 {
			return true
		}
	}
	return false
}

// closeFds closes each distinct fd once: closing a number twice could
// close an unrelated file that took the number in between.
func closeFds(fds []int) {
	for i, fd := range fds {
		if fd >= 0 && !slices.Contains(fds[:i], fd) {
			unix.Close(fd)
		}
	}
}

// assignLocked gives fds to vectors start.. and de-assigns the rest of
// [start, start+count). mu is held for writing.
func (t *Table) assignLocked(index Index, start, count int, fds []int) {
	x := &t.idx[index]
	wasEnabled := x.enabled
	for k := range count {
		v := &x.vecs[start+k]
		fd := -1
		if k < len(fds) && fds[k] >= 0 {
			fd = fds[k]
			// A Raise must never block: a client could hand us a pipe, or
			// a blocking eventfd at its limit. QEMU's are non-blocking already.
			unix.SetNonblock(fd, true)
		}
		if v.fd >= 0 && v.fd != fd {
			unix.Close(v.fd)
		}
		v.fd = fd
		v.warned.Store(false)
	}
	x.enabled = true
	if index == INTx {
		t.intxMu.Lock()
		if !wasEnabled {
			t.intxMasked = false
		}
		t.intxFireLocked()
		t.intxMu.Unlock()
		return
	}
	for k := range min(count, len(fds)) {
		v := &x.vecs[start+k]
		if v.fd >= 0 && v.pending.Swap(false) {
			t.signal(index, start+k, v)
		}
	}
}

// disableLocked closes index's fds and forgets its pending state.
func (t *Table) disableLocked(index Index) {
	x := &t.idx[index]
	for i := range x.vecs {
		v := &x.vecs[i]
		if v.fd >= 0 {
			unix.Close(v.fd)
			v.fd = -1
		}
		v.pending.Store(false)
	}
	x.enabled = false
	if index == INTx {
		t.intxMu.Lock()
		t.intxMasked = false
		if t.resampleFd >= 0 {
			unix.Close(t.resampleFd)
			t.resampleFd = -1
		}
		t.intxMu.Unlock()
	}
}

func (t *Table) updateModeLocked() {
	m := ModeNone
	switch {
	case t.idx[MSIX].enabled:
		m = ModeMSIX
	case t.idx[MSI].enabled:
		m = ModeMSI
	case t.idx[INTx].enabled:
		m = ModeINTx
	}
	t.mode.Store(uint32(m))
}

// fireLocked signals vector n of index if it has an fd: the client's own
// trigger request, as VFIO does it (no pending state, no automask).
func (t *Table) fireLocked(index Index, n int) {
	v := &t.idx[index].vecs[n]
	if v.fd >= 0 {
		t.signal(index, n, v)
	}
}

func (t *Table) setResampleLocked(fds []int) {
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	if t.resampleFd >= 0 {
		unix.Close(t.resampleFd)
		t.resampleFd = -1
	}
	if len(fds) > 0 && fds[0] >= 0 {
		t.resampleFd = fds[0]
	}
}

func (t *Table) setINTxMaskLocked(masked bool) {
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	t.intxMasked = masked
	t.intxFireLocked()
}

// intxFireLocked signals INTx if the line is asserted and nothing gates it,
// then automasks until the client's UNMASK (vfio-user-notes 5.3). mu is
// held (either way) and intxMu.
func (t *Table) intxFireLocked() {
	if !t.intxAsserted || t.intxMasked || t.intxDisabled || !t.idx[INTx].enabled {
		return
	}
	v := &t.idx[INTx].vecs[0]
	if v.fd < 0 {
		return // signalled when the client assigns one
	}
	t.signal(INTx, 0, v)
	t.intxMasked = true
}

// signal writes one eventfd increment. A full counter (EAGAIN) already
// means "interrupt pending" to the reader, so it counts as delivered.
func (t *Table) signal(index Index, n int, v *vector) {
	_, err := unix.Write(v.fd, t.one[:])
	if err == nil || err == unix.EAGAIN {
		v.delivered.Add(1)
		return
	}
	v.dropped.Add(1)
	if !v.warned.Swap(true) {
		t.log.WithFields(logrus.Fields{"index": index.String(), "vector": n}).WithError(err).Warn("eventfd write failed")
	}
}

// Raise signals vector through the enabled mechanism (MSI-X, else MSI, else
// INTx). An MSI/MSI-X vector without an fd gets its pending bit set and is
// signalled when the client assigns one. A vector out of range, or a raise
// with nothing enabled, is counted (Unrouted) and dropped. Never blocks,
// never allocates.
func (t *Table) Raise(vector int) {
	t.mu.RLock()
	switch Mode(t.mode.Load()) {
	case ModeMSIX:
		t.raiseVector(MSIX, vector)
	case ModeMSI:
		t.raiseVector(MSI, vector)
	case ModeINTx:
		t.intxMu.Lock()
		t.idx[INTx].vecs[0].raised.Add(1)
		t.intxAsserted = true
		t.intxFireLocked()
		t.intxMu.Unlock()
	default:
		t.unrouted.Add(1)
	}
	t.mu.RUnlock()
}

func (t *Table) raiseVector(index Index, n int) {
	vs := t.idx[index].vecs
	if uint(n) >= uint(len(vs)) {
		t.unrouted.Add(1)
		return
	}
	v := &vs[n]
	v.raised.Add(1)
	if v.fd < 0 {
		v.pending.Store(true)
		return
	}
	t.signal(index, n, v)
}

// Lower deasserts INTx. The client's next UNMASK then signals nothing.
func (t *Table) Lower() {
	t.intxMu.Lock()
	t.intxAsserted = false
	t.intxMu.Unlock()
}

// Mode reports the mechanism Raise uses now.
func (t *Table) Mode() Mode { return Mode(t.mode.Load()) }

// Unrouted counts raises that reached no vector: nothing enabled, or a
// vector number past the enabled index's count.
func (t *Table) Unrouted() uint64 { return t.unrouted.Load() }

// Pending reports vector's pending bit (for PBA reads); for INTx, whether
// the line is asserted. Out of range: false.
func (t *Table) Pending(index Index, vector int) bool {
	if index >= NumIndexes {
		return false
	}
	if index == INTx {
		return vector == 0 && len(t.idx[INTx].vecs) > 0 && t.INTxAsserted()
	}
	vs := t.idx[index].vecs // never reallocated, safe without mu
	if uint(vector) >= uint(len(vs)) {
		return false
	}
	return vs[vector].pending.Load()
}

// SetINTxDisabled follows COMMAND.INTX_DISABLE: while set INTx is never
// signalled; clearing it signals a line still asserted, as the pin would.
// The table keeps this bit across Reset: it belongs to config space.
func (t *Table) SetINTxDisabled(disabled bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	t.intxDisabled = disabled
	t.intxFireLocked()
}

// INTxAsserted reports the line level, for STATUS.INTERRUPT.
func (t *Table) INTxAsserted() bool {
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	return t.intxAsserted
}

// Stats returns every vector's counters, by index then vector.
func (t *Table) Stats() []VectorStats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []VectorStats
	for i := range t.idx {
		for n := range t.idx[i].vecs {
			v := &t.idx[i].vecs[n]
			out = append(out, VectorStats{
				Index:     Index(i),
				Vector:    n,
				Assigned:  v.fd >= 0,
				Pending:   t.Pending(Index(i), n),
				Raised:    v.raised.Load(),
				Delivered: v.delivered.Load(),
				Dropped:   v.dropped.Load(),
			})
		}
	}
	return out
}

// ClearPending forgets every pending bit and deasserts INTx: a reset
// function has no interrupt outstanding. Eventfds stay assigned.
func (t *Table) ClearPending() {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i := range t.idx {
		for n := range t.idx[i].vecs {
			t.idx[i].vecs[n].pending.Store(false)
		}
	}
	t.intxMu.Lock()
	t.intxAsserted = false
	t.intxMu.Unlock()
}

// Reset is for a client that left: every fd closed, every index disabled,
// nothing pending, INTx deasserted and unmasked. Counters are kept.
func (t *Table) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.idx {
		t.disableLocked(Index(i))
	}
	t.intxMu.Lock()
	t.intxAsserted = false
	t.intxMu.Unlock()
	t.updateModeLocked()
}
