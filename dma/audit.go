package dma

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// This file is the DMA audit of zero-copy-design.md §6.9: a checker at the
// dma door that sees every tagged DMA a device makes and compares it with
// what the device's own tables, the client's map and the guest's page
// tables say it may do. It knows no device model: a model describes its
// registrations through AuditSource and tags its accesses with a Tag.

// UnmapWatcher is told of a DMA_UNMAP (and of RemoveAll) before the map
// changes: Remove calls it without any lock held and waits for it, so a
// device can stop every access to the range (revoke registrations, drain
// DMA in flight) before the client gets its reply. Watchers run in the
// order they were added.
type UnmapWatcher struct {
	fn func(iova, last uint64)
}

// Wrapper is a Space that forwards to another one (a fault door, an
// observer); MapOf looks through it.
type Wrapper interface {
	Unwrap() Space
}

// MapOf returns the *Map under s, looking through Wrappers, or nil if s is
// not backed by one. Unmap watchers, the audit's mapping checks and a
// device's access checks need the Map itself, whatever doors wrap it.
func MapOf(s Space) *Map {
	for s != nil {
		switch v := s.(type) {
		case *Map:
			return v
		case Wrapper:
			s = v.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// WatchUnmap adds fn as an unmap watcher of the Map under s (the only
// Space that has DMA_UNMAP; see MapOf) and returns a function that removes
// it, or nil if s has no unmaps to watch.
func WatchUnmap(s Space, fn func(iova, last uint64)) (stop func()) {
	m := MapOf(s)
	if m == nil {
		return nil
	}
	w := &UnmapWatcher{fn: fn}
	m.hookMu.Lock()
	var ws []*UnmapWatcher
	if p := m.unmapWatch.Load(); p != nil {
		ws = slices.Clone(*p)
	}
	ws = append(ws, w)
	m.unmapWatch.Store(&ws)
	m.hookMu.Unlock()
	return func() {
		m.hookMu.Lock()
		defer m.hookMu.Unlock()
		p := m.unmapWatch.Load()
		if p == nil {
			return
		}
		ws := slices.DeleteFunc(slices.Clone(*p), func(x *UnmapWatcher) bool { return x == w })
		m.unmapWatch.Store(&ws)
	}
}

// notifyUnmap runs the unmap watchers for [iova, last]. m.mu is not held.
func (m *Map) notifyUnmap(iova, last uint64) {
	if p := m.unmapWatch.Load(); p != nil {
		for _, w := range *p {
			w.fn(iova, last)
		}
	}
}

// Covers reports whether every one of pages (each size bytes, size > 0)
// lies wholly in live maps granting prot. It returns the index of the
// first page that does not, or -1. Devices use it to validate a
// registration's page list against the client's map (§6.3 REG).
func (m *Map) Covers(pages []uint64, size uint64, prot Prot) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i, a := range pages {
		if !m.coversLocked(a, size, prot) {
			return i
		}
	}
	return -1
}

func (m *Map) coversLocked(addr, n uint64, prot Prot) bool {
	if m.closedLocked || n == 0 || addr > math.MaxUint64-(n-1) {
		return false
	}
	last := addr + n - 1
	i := m.regions.find(addr)
	for a := addr; ; i = m.regions.next(i) {
		r := m.regions.at(i)
		if r == nil || r.iova > a || r.prot&prot != prot {
			return false
		}
		if r.last >= last {
			return true
		}
		a = r.last + 1
	}
}

// readU64Internal reads a little-endian word of guest memory for the
// audit itself (page-table walks): not a device DMA, so neither the
// bus-master gate nor the hooks apply. Only shared maps are read.
func (m *Map) readU64Internal(addr uint64) (v uint64, err error) {
	m.mu.RLock()
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		m.mu.RUnlock()
		if e := recover(); e != nil {
			m.fault(e)
			err = ErrUnmapped
		}
	}()
	b := m.sliceLocked(addr, 8, ProtRead)
	if b == nil {
		return 0, ErrUnmapped
	}
	return binary.LittleEndian.Uint64(b), nil
}

// TagKind says what a tagged DMA is for (§6.1).
type TagKind uint8

const (
	TagData     TagKind = iota + 1 // payload to or from a registered region
	TagCmdRing                     // the endpoint's command ring (read)
	TagEventQ                      // the endpoint's event queue (write)
	TagStatus                      // the endpoint's status block (write)
	TagPageList                    // the page list of a REG being processed (read)
)

func (k TagKind) String() string {
	switch k {
	case TagData:
		return "data"
	case TagCmdRing:
		return "cmdring"
	case TagEventQ:
		return "eventq"
	case TagStatus:
		return "status"
	case TagPageList:
		return "pagelist"
	}
	return fmt.Sprintf("TagKind(%d)", uint8(k))
}

// Tag names who a DMA is for. Data DMA carries (endpoint, region,
// generation, offset of its first byte in the region, op cookie); control
// DMA carries the endpoint and its kind.
type Tag struct {
	Kind     TagKind
	Endpoint int
	Region   uint32
	Gen      uint32
	Offset   uint64
	Cookie   uint64
}

// AuditMode is what the audit does with a violation.
type AuditMode uint8

const (
	AuditOff     AuditMode = iota // no checks
	AuditObserve                  // report and let the access through, as buggy hardware would
	AuditEnforce                  // report and refuse the access
)

func (m AuditMode) String() string {
	switch m {
	case AuditOff:
		return "off"
	case AuditObserve:
		return "observe"
	case AuditEnforce:
		return "enforce"
	}
	return fmt.Sprintf("AuditMode(%d)", uint8(m))
}

// ParseAuditMode parses "off", "observe" or "enforce".
func ParseAuditMode(s string) (AuditMode, error) {
	switch s {
	case "off":
		return AuditOff, nil
	case "observe":
		return AuditObserve, nil
	case "enforce":
		return AuditEnforce, nil
	}
	return 0, fmt.Errorf("audit mode %q: want off, observe or enforce", s)
}

// ErrAudit: the audit in enforce mode refused the access.
var ErrAudit = errors.New("refused by the DMA audit")

// RegView is a device's copy of one registration as the audit reads it.
// Pages is not retained past the call that returned it.
type RegView struct {
	Valid bool // state VALID
	// Draining: state INVALIDATING. DMA that was in flight when the
	// invalidation began may still complete (the DEREG waits for it); it
	// is accepted, and the fence check (A5) covers what comes after.
	Draining  bool
	Gen       uint32
	Read      bool // the device may read it (a send source)
	Write     bool // the device may write it (a receive destination)
	PageShift uint8
	FirstOff  uint64
	Length    uint64
	UserVA    uint64
	Pages     []uint64
	MapEpoch  uint64 // the audit's Epoch when it was registered
}

// addr recomputes the guest address of byte off of the registration from
// its page list, or false if off is outside it.
func (r *RegView) addr(off uint64) (uint64, bool) {
	if off >= r.Length {
		return 0, false
	}
	x := r.FirstOff + off
	i := x >> r.PageShift
	if i >= uint64(len(r.Pages)) {
		return 0, false
	}
	return r.Pages[i] + x&(1<<r.PageShift-1), true
}

// PTRoot is the root of an endpoint owner's x86-64 page tables (§6.9 A7):
// the guest-physical address of the top-level table and its level count.
type PTRoot struct {
	Addr   uint64
	Levels int // 4 or 5; 0: not given, A7 is skipped
}

// AuditSource is what the audit reads from a device: its registration
// table, the endpoints' control areas and page-table roots. Methods are
// called on the DMA's goroutine, while the device holds the region in use
// (for data DMA), and must not call back into the audit.
type AuditSource interface {
	// Registration returns endpoint ep's entry for region id (any state).
	Registration(ep int, id uint32) (RegView, bool)
	// ControlArea returns the guest range [base, base+size) the endpoint
	// may use for control DMA of kind k; size 0 means none.
	ControlArea(ep int, k TagKind) (base, size uint64)
	// ValidCovers reports whether a live (VALID or draining) registration
	// of the device covers [addr, addr+n).
	ValidCovers(addr uint64, n int) bool
	// PTRoot returns the endpoint's page-table root.
	PTRoot(ep int) PTRoot
	// InReset reports whether the function is being reset.
	InReset() bool
}

// Check names an audit check (§6.9 table).
type Check uint8

const (
	CheckA1Mapping    Check = iota + 1 // current client mapping, right permission, no unmap since REG
	CheckA2BusMaster                   // bus master on, not in reset
	CheckA3DataTag                     // region VALID, generation, access, address from the page list
	CheckA4ControlTag                  // control DMA only to the endpoint's own areas
	CheckA5Fence                       // nothing after DEREG(id, gen) was acknowledged
	CheckA6Quarantine                  // writes to recently retired pages
	CheckA7PageTable                   // the owner's page tables map the registered page
	numChecks
)

var checkNames = [numChecks]string{"", "A1-mapping", "A2-bus-master", "A3-data-tag", "A4-control-tag",
	"A5-fence", "A6-quarantine", "A7-page-table"}

func (c Check) String() string {
	if c > 0 && c < numChecks {
		return checkNames[c]
	}
	return fmt.Sprintf("Check(%d)", uint8(c))
}

// AuditEvent is one violation: the DMA_AUDIT event's fields (§6.9).
type AuditEvent struct {
	Check      Check
	Mode       AuditMode
	Tag        Tag
	Op         Op
	Addr       uint64
	Len        int
	Detail     string
	LastReason int           // last invalidation reason seen for (endpoint, region); -1 none
	SinceDereg time.Duration // since that region's last DEREG was acknowledged; -1 none
}

// AuditCounters are the audit's counters (query-dma-audit).
type AuditCounters struct {
	Mode       AuditMode
	Checked    uint64 // tagged accesses checked
	Violations uint64
	Refused    uint64 // violations refused (enforce)
	PerCheck   map[string]uint64
	Unmaps     uint64 // DMA_UNMAPs seen (the epoch)
}

// Audit checks a device's tagged DMA against its source and forwards it
// to the Space. Its methods are safe for concurrent use.
type Audit struct {
	mem  Space
	m    *Map // mem as a *Map, or nil: then A1 is skipped and A7 reads through mem
	src  AuditSource
	mode atomic.Uint32
	sink func(AuditEvent)

	stop func()

	checked, violations, refused atomic.Uint64
	perCheck                     [numChecks]atomic.Uint64

	mu      sync.Mutex
	epoch   uint64
	unmaps  []unmapRecord // recent unmaps, newest last
	retired map[retireKey]retiredReg
	order   []retireKey // retirement order, oldest first
	quar    map[uint64]int
	last    map[lastKey]lastInval
}

type unmapRecord struct {
	epoch      uint64
	iova, last uint64
}

type retireKey struct {
	ep      int
	id, gen uint32
}

type lastKey struct {
	ep int
	id uint32
}

type lastInval struct {
	reason int
	at     time.Time
}

type retiredReg struct {
	at    time.Time
	pages []uint64
	size  uint64
}

// Bounds of the audit's memory: the unmaps remembered for A1, the DEREGs
// remembered for A5 and the quarantine of A6, and how long a retired page
// stays in quarantine.
const (
	auditUnmaps      = 256
	auditRetired     = 4096
	auditQuarantined = 64 // most recent DEREGs whose pages are quarantined
	quarantineTime   = 100 * time.Millisecond
)

// NewAudit returns an audit of the DMA a device makes into mem. sink, if
// non-nil, gets every violation (on the DMA's goroutine; it must not
// block). If mem is (or wraps) a *Map the audit watches its unmaps: add it after the
// device's own unmap watcher, so that it records an unmap after the device
// revoked the registrations it covers. Close removes the watcher.
func NewAudit(mem Space, mode AuditMode, src AuditSource, sink func(AuditEvent)) *Audit {
	a := &Audit{
		mem:     mem,
		src:     src,
		sink:    sink,
		retired: map[retireKey]retiredReg{},
		quar:    map[uint64]int{},
		last:    map[lastKey]lastInval{},
	}
	a.m = MapOf(mem)
	a.mode.Store(uint32(mode))
	a.stop = WatchUnmap(mem, a.noteUnmap)
	return a
}

// Close stops watching the map's unmaps. Idempotent.
func (a *Audit) Close() {
	a.mu.Lock()
	stop := a.stop
	a.stop = nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Mode returns the current mode; SetMode changes it.
func (a *Audit) Mode() AuditMode     { return AuditMode(a.mode.Load()) }
func (a *Audit) SetMode(m AuditMode) { a.mode.Store(uint32(m)) }

// Epoch counts the unmaps seen; a registration records it (MapEpoch).
func (a *Audit) Epoch() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.epoch
}

func (a *Audit) noteUnmap(iova, last uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch++
	a.unmaps = append(a.unmaps, unmapRecord{epoch: a.epoch, iova: iova, last: last})
	if len(a.unmaps) > auditUnmaps {
		a.unmaps = slices.Delete(a.unmaps, 0, len(a.unmaps)-auditUnmaps)
	}
}

// Invalidated tells the audit that the device began invalidating
// (ep, id) for reason (the MMU_NOTIFY_* value or the device's own): the
// DMA_AUDIT event reports the last one seen.
func (a *Audit) Invalidated(ep int, id uint32, reason int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last[lastKey{ep, id}] = lastInval{reason: reason, at: time.Now()}
}

// Retired tells the audit that DEREG(ep, id, gen) is about to be
// acknowledged: from now on no DMA may carry that tag (A5), and writes to
// its pages are quarantined for a while (A6). pages is copied.
func (a *Audit) Retired(ep int, id, gen uint32, pages []uint64, pageSize uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := retireKey{ep, id, gen}
	now := time.Now()
	if l, ok := a.last[lastKey{ep, id}]; ok {
		a.last[lastKey{ep, id}] = lastInval{reason: l.reason, at: now}
	} else {
		a.last[lastKey{ep, id}] = lastInval{reason: -1, at: now}
	}
	if _, dup := a.retired[k]; dup {
		return
	}
	r := retiredReg{at: now, size: pageSize}
	if a.Mode() != AuditOff {
		r.pages = slices.Clone(pages)
	}
	a.retired[k] = r
	a.order = append(a.order, k)
	for _, p := range r.pages {
		a.quar[p]++
	}
	// Pages leave quarantine after auditQuarantined newer DEREGs; the
	// record itself (A5) lives for auditRetired DEREGs.
	if n := len(a.order); n > auditQuarantined {
		a.unquarantine(a.order[n-auditQuarantined-1])
	}
	if len(a.order) > auditRetired {
		old := a.order[0]
		a.order = a.order[1:]
		a.unquarantine(old)
		delete(a.retired, old)
	}
}

func (a *Audit) unquarantine(k retireKey) {
	r, ok := a.retired[k]
	if !ok || r.pages == nil {
		return
	}
	for _, p := range r.pages {
		if a.quar[p]--; a.quar[p] <= 0 {
			delete(a.quar, p)
		}
	}
	r.pages = nil
	a.retired[k] = r
}

// Counters returns a snapshot of the counters.
func (a *Audit) Counters() AuditCounters {
	c := AuditCounters{
		Mode:       a.Mode(),
		Checked:    a.checked.Load(),
		Violations: a.violations.Load(),
		Refused:    a.refused.Load(),
		PerCheck:   map[string]uint64{},
	}
	for i := Check(1); i < numChecks; i++ {
		c.PerCheck[i.String()] = a.perCheck[i].Load()
	}
	a.mu.Lock()
	c.Unmaps = a.epoch
	a.mu.Unlock()
	return c
}

// ReadAt is Space.ReadAt of a DMA carrying t.
func (a *Audit) ReadAt(t Tag, p []byte, addr uint64) (int, error) {
	if err := a.check(t, Read, addr, len(p)); err != nil {
		return 0, &Error{Op: Read, Addr: addr, Len: len(p), Err: err}
	}
	return a.mem.ReadAt(p, addr)
}

// WriteAt is Space.WriteAt of a DMA carrying t.
func (a *Audit) WriteAt(t Tag, p []byte, addr uint64) (int, error) {
	if err := a.check(t, Write, addr, len(p)); err != nil {
		return 0, &Error{Op: Write, Addr: addr, Len: len(p), Err: err}
	}
	return a.mem.WriteAt(p, addr)
}

// Store32 is Space.Store32 of a DMA carrying t.
func (a *Audit) Store32(t Tag, addr uint64, v uint32) error {
	if err := a.check(t, Write, addr, 4); err != nil {
		return &Error{Op: Write, Addr: addr, Len: 4, Err: err}
	}
	return a.mem.Store32(addr, v)
}

// Copy moves n bytes from src's guest memory at srcAddr to dst's at
// dstAddr, both checked with their tags: a device copying between two
// registered buffers, possibly of two clients. When both sides are shared
// maps it copies directly between them; otherwise through buf (at least n
// bytes). It returns the bytes that reached dst.
func Copy(dst *Audit, dt Tag, dstAddr uint64, src *Audit, st Tag, srcAddr uint64, n int, buf []byte) (int, error) {
	if n == 0 {
		return 0, nil
	}
	if err := src.check(st, Read, srcAddr, n); err != nil {
		return 0, &Error{Op: Read, Addr: srcAddr, Len: n, Err: err}
	}
	if err := dst.check(dt, Write, dstAddr, n); err != nil {
		return 0, &Error{Op: Write, Addr: dstAddr, Len: n, Err: err}
	}
	if dst.m != nil && src.m != nil {
		if done, err := copyDirect(dst.m, dstAddr, src.m, srcAddr, n); done {
			return n, err
		}
	}
	if _, err := src.mem.ReadAt(buf[:n], srcAddr); err != nil {
		return 0, err
	}
	return dst.mem.WriteAt(buf[:n], dstAddr)
}

// copyDirect copies between two shared maps under both read locks (taken
// in address order, so two copies in opposite directions cannot deadlock
// with a waiting Remove). done is false, with nothing copied, when a side
// is not one shared, permitted piece, the bus master gate is closed, or a
// hook is set: the caller then takes the checked path.
func copyDirect(dm *Map, da uint64, sm *Map, sa uint64, n int) (done bool, err error) {
	if dm.hooks.Load() != nil || sm.hooks.Load() != nil || !dm.busMaster.Load() || !sm.busMaster.Load() ||
		dm.closed.Load() || sm.closed.Load() {
		return false, nil
	}
	first, second := dm, sm
	if uintptrOf(sm) < uintptrOf(dm) {
		first, second = sm, dm
	}
	first.mu.RLock()
	defer first.mu.RUnlock()
	if second != first {
		second.mu.RLock()
		defer second.mu.RUnlock()
	}
	d := dm.sliceLocked(da, n, ProtWrite)
	s := sm.sliceLocked(sa, n, ProtRead)
	if d == nil || s == nil {
		return false, nil
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if e := recover(); e != nil {
			dm.fault(e)
			done, err = true, &Error{Op: Write, Addr: da, Len: n, Err: ErrUnmapped}
		}
	}()
	copy(d, s)
	return true, nil
}

// sliceLocked returns the host memory of [addr, addr+n) if it lies in one
// shared map granting prot, else nil. m.mu is held.
func (m *Map) sliceLocked(addr uint64, n int, prot Prot) []byte {
	if m.closedLocked || n <= 0 || addr > math.MaxUint64-uint64(n-1) {
		return nil
	}
	r := m.regions.at(m.regions.find(addr))
	if r == nil || r.iova > addr || r.last-addr < uint64(n-1) || !r.shared || r.prot&prot != prot {
		return nil
	}
	off := addr - r.iova
	return r.mem[off : off+uint64(n)]
}

// check runs the audit on one access and decides its fate: nil lets it
// through (no violation, or observe mode), ErrAudit refuses it (enforce).
func (a *Audit) check(t Tag, op Op, addr uint64, n int) error {
	mode := a.Mode()
	if mode == AuditOff {
		return nil
	}
	a.checked.Add(1)
	var v violation
	switch {
	case !a.checkBusMaster(&v):
	case t.Kind == TagData && !a.checkData(&v, t, op, addr, n):
	case t.Kind != TagData && !a.checkControl(&v, t, op, addr, n):
	}
	if v.check == 0 {
		return nil
	}
	a.report(mode, v, t, op, addr, n)
	if mode == AuditEnforce {
		a.refused.Add(1)
		return fmt.Errorf("%s: %s: %w", v.check, v.detail, ErrAudit)
	}
	return nil
}

type violation struct {
	check  Check
	detail string
}

func (v *violation) set(c Check, format string, args ...any) bool {
	v.check, v.detail = c, fmt.Sprintf(format, args...)
	return false
}

func (a *Audit) report(mode AuditMode, v violation, t Tag, op Op, addr uint64, n int) {
	a.violations.Add(1)
	a.perCheck[v.check].Add(1)
	if a.sink == nil {
		return
	}
	ev := AuditEvent{Check: v.check, Mode: mode, Tag: t, Op: op, Addr: addr, Len: n, Detail: v.detail,
		LastReason: -1, SinceDereg: -1}
	a.mu.Lock()
	if l, ok := a.last[lastKey{t.Endpoint, t.Region}]; ok && t.Kind == TagData {
		ev.LastReason = l.reason
		ev.SinceDereg = time.Since(l.at)
	}
	a.mu.Unlock()
	a.sink(ev)
}

// A2: bus master on. (The reset half of A2 is in checkData and
// checkControl: DMA draining from an INVALIDATING region is what a reset
// waits for, and is allowed.)
func (a *Audit) checkBusMaster(v *violation) bool {
	if a.m != nil && !a.m.busMaster.Load() {
		return v.set(CheckA2BusMaster, "bus master enable is off")
	}
	return true
}

// BusMaster reports whether the function may master the bus now: a device
// checks it before each piece of work so that it stops, rather than fails
// at the door, once the driver (or a reset) cleared it.
func (a *Audit) BusMaster() bool { return a.m == nil || a.m.busMaster.Load() }

// A1: the range is in a current map with the right permission.
func (a *Audit) checkMapped(v *violation, op Op, addr uint64, n int) bool {
	if a.m == nil {
		return true
	}
	prot := ProtRead
	if op == Write {
		prot = ProtWrite
	}
	a.m.mu.RLock()
	ok := a.m.coversLocked(addr, uint64(n), prot)
	a.m.mu.RUnlock()
	if !ok {
		return v.set(CheckA1Mapping, "not in a current %s client map", prot)
	}
	return true
}

func (a *Audit) checkData(v *violation, t Tag, op Op, addr uint64, n int) bool {
	if !a.checkMapped(v, op, addr, n) {
		return false
	}
	a.mu.Lock()
	_, retired := a.retired[retireKey{t.Endpoint, t.Region, t.Gen}]
	a.mu.Unlock()
	// A5 first: a DMA carrying a retired tag is the fence's failure, the
	// A3 mismatch it also is follows from it.
	if retired {
		return v.set(CheckA5Fence, "DMA after DEREG(%d, %d) was acknowledged", t.Region, t.Gen)
	}
	r, ok := a.src.Registration(t.Endpoint, t.Region)
	switch {
	case !ok:
		return v.set(CheckA3DataTag, "no region %d", t.Region)
	case !r.Valid && !r.Draining:
		return v.set(CheckA3DataTag, "region %d is not VALID", t.Region)
	case !r.Draining && a.src.InReset():
		return v.set(CheckA2BusMaster, "data DMA while the function is in reset")
	case r.Gen != t.Gen:
		return v.set(CheckA3DataTag, "region %d generation %d, tag %d", t.Region, r.Gen, t.Gen)
	case op == Write && !r.Write:
		return v.set(CheckA3DataTag, "write into region %d without RECV_DST", t.Region)
	case op == Read && !r.Read:
		return v.set(CheckA3DataTag, "read from region %d without SEND_SRC", t.Region)
	}
	// The address of every byte, recomputed from the device's page list.
	pageSize := uint64(1) << r.PageShift
	for off := uint64(0); off < uint64(n); {
		want, ok := r.addr(t.Offset + off)
		if !ok {
			return v.set(CheckA3DataTag, "offset %#x outside region %d of %#x bytes", t.Offset+off, t.Region, r.Length)
		}
		if got := addr + off; got != want {
			return v.set(CheckA3DataTag, "byte %#x of region %d at %#x, page list says %#x", t.Offset+off, t.Region, got, want)
		}
		off += pageSize - (r.FirstOff+t.Offset+off)&(pageSize-1)
	}
	a.mu.Lock()
	for _, u := range a.unmaps {
		if u.epoch > r.MapEpoch && u.iova <= addr+uint64(n-1) && addr <= u.last {
			a.mu.Unlock()
			return v.set(CheckA1Mapping, "range was unmapped (epoch %d) after region %d was registered (epoch %d)",
				u.epoch, t.Region, r.MapEpoch)
		}
	}
	a.mu.Unlock()
	// A6 needs nothing more here: A3 proved the write lies in this live
	// registration's pages.
	return a.checkPageTable(v, t, r, op, addr, n)
}

// A6: a write into a page a recent DEREG retired, that no live
// registration covers. Data writes that passed A3 lie in their own live
// registration, so this runs for control writes (event queue, status
// block): a device that kept a stale translation of one of those.
func (a *Audit) checkQuarantine(v *violation, addr uint64, n int) bool {
	a.mu.Lock()
	hit := false
	if len(a.quar) > 0 {
		for p := addr &^ 0xfff; p <= addr+uint64(n-1); p += 0x1000 {
			if a.quar[p] > 0 {
				hit = true
				break
			}
		}
	}
	a.mu.Unlock()
	if hit && !a.src.ValidCovers(addr, n) {
		return v.set(CheckA6Quarantine, "write into a page retired by a recent DEREG")
	}
	return true
}

// A4: control DMA only into the endpoint's own areas, in their direction.
func (a *Audit) checkControl(v *violation, t Tag, op Op, addr uint64, n int) bool {
	want := Write
	if t.Kind == TagCmdRing || t.Kind == TagPageList {
		want = Read
	}
	if a.src.InReset() {
		return v.set(CheckA2BusMaster, "%s DMA while the function is in reset", t.Kind)
	}
	if op != want {
		return v.set(CheckA4ControlTag, "%s of the %s", op, t.Kind)
	}
	base, size := a.src.ControlArea(t.Endpoint, t.Kind)
	if size == 0 || addr < base || uint64(n) > size || addr-base > size-uint64(n) {
		return v.set(CheckA4ControlTag, "%d bytes at %#x outside endpoint %d's %s [%#x, +%#x)", n, addr, t.Endpoint, t.Kind, base, size)
	}
	if !a.checkMapped(v, op, addr, n) {
		return false
	}
	if op == Write {
		return a.checkQuarantine(v, addr, n)
	}
	return true
}

// x86-64 page-table entry bits (Intel SDM vol. 3, 4.5).
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7
	ptePFNMask  = 0x000f_ffff_ffff_f000
)

// A7: walk the owner's page tables for every page the access touches and
// compare with the registered address. Done while the device holds the
// region, so a correct driver's invalidation cannot be racing it.
func (a *Audit) checkPageTable(v *violation, t Tag, r RegView, op Op, addr uint64, n int) bool {
	root := a.src.PTRoot(t.Endpoint)
	if root.Levels == 0 {
		return true
	}
	for off := uint64(0); off < uint64(n); {
		va := r.UserVA + t.Offset + off
		pa, writable, err := a.walk(root, va)
		if err != nil {
			return v.set(CheckA7PageTable, "user VA %#x: %v", va, err)
		}
		if pa != addr+off {
			return v.set(CheckA7PageTable, "user VA %#x maps %#x, device writes %#x", va, pa, addr+off)
		}
		if op == Write && !writable {
			return v.set(CheckA7PageTable, "user VA %#x is read-only in the page tables", va)
		}
		off += 0x1000 - va&0xfff
	}
	return true
}

// walk translates va through the 4- or 5-level tables at root.
func (a *Audit) walk(root PTRoot, va uint64) (pa uint64, writable bool, err error) {
	if root.Levels != 4 && root.Levels != 5 {
		return 0, false, fmt.Errorf("%d paging levels, want 4 or 5", root.Levels)
	}
	table := root.Addr &^ 0xfff
	writable = true
	for level := root.Levels; level >= 1; level-- {
		shift := 12 + 9*uint(level-1)
		idx := (va >> shift) & 0x1ff
		e, err := a.readPT(table + idx*8)
		if err != nil {
			return 0, false, fmt.Errorf("level %d entry at %#x: %w", level, table+idx*8, err)
		}
		if e&ptePresent == 0 {
			return 0, false, fmt.Errorf("not present at level %d", level)
		}
		writable = writable && e&pteWritable != 0
		if level == 1 || ((level == 2 || level == 3) && e&ptePageSize != 0) {
			mask := uint64(1)<<shift - 1
			return (e & ptePFNMask &^ mask) | va&mask, writable, nil
		}
		table = e & ptePFNMask
	}
	panic("unreachable")
}

func (a *Audit) readPT(addr uint64) (uint64, error) {
	if a.m != nil {
		return a.m.readU64Internal(addr)
	}
	var b [8]byte
	if _, err := a.mem.ReadAt(b[:], addr); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func uintptrOf(m *Map) uintptr { return uintptr(unsafe.Pointer(m)) }
