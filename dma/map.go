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
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Prot is the access a client granted on a map: the vfio-user DMA_MAP flags.
type Prot uint32

const (
	ProtRead  Prot = 1 // the device may read the map
	ProtWrite Prot = 2 // the device may write the map

	protMask = ProtRead | ProtWrite
)

func (p Prot) String() string {
	b := []byte("--")
	if p&ProtRead != 0 {
		b[0] = 'r'
	}
	if p&ProtWrite != 0 {
		b[1] = 'w'
	}
	return string(b)
}

// ErrNotReadable: a device read from a map the client gave without read
// permission. QEMU never sends such a map; a hostile client may.
var ErrNotReadable = errors.New("mapping is not readable")

// Mapping is one DMA_MAP request.
type Mapping struct {
	IOVA   uint64 // guest (IO virtual) address of the first byte
	Size   uint64
	Offset uint64 // offset of IOVA's byte in the file behind Fd
	Fd     int    // file backing the range; -1: none, reach it by message DMA
	Prot   Prot
}

// RegionInfo describes a live map.
type RegionInfo struct {
	IOVA, Size uint64
	Prot       Prot // effective: ProtWrite is dropped when the fd was read-only
	Shared     bool // backed by shared memory; false: message DMA
}

// Map is the guest memory a client registered with DMA_MAP. It implements
// Space.
//
// Accesses to fd-backed maps copy under a read lock, so Remove, which takes
// the write lock, returns only after every access that could still see the
// removed maps has finished: once DMA_UNMAP is answered the device never
// touches that memory again. Accesses to fd-less maps are sent to the
// Messenger without the lock held, because the messenger waits for the
// client, and the client may be waiting for the answer to a DMA_UNMAP that
// needs the lock; the client performs those accesses itself, so no memory
// of this process is at stake.
type Map struct {
	log       *logrus.Entry
	limits    Limits
	pageAlign uint64
	refusals  atomic.Uint64 // Adds refused by a limit

	busMaster atomic.Bool
	closed    atomic.Bool // mirrors closedLocked for the lock-free early check
	faults    atomic.Uint64
	messenger atomic.Pointer[messengerBox]
	hooks     atomic.Pointer[[]Hook] // copy-on-write so accesses take no lock

	hookMu sync.Mutex // serialises AddHook

	// unmapWatch is told of every DMA_UNMAP before it takes effect (audit.go).
	unmapWatch atomic.Pointer[[]*UnmapWatcher]

	mu           sync.RWMutex
	closedLocked bool
	regions      regionTable     // sorted by iova, never overlapping
	files        map[fileKey]int // live fd maps per inode
	mmaps        int             // live fd maps (one mmap each)
	mappedBytes  uint64          // their page-rounded bytes
}

var _ Space = (*Map)(nil)

type messengerBox struct{ Messenger }

// fileKey names an inode: QEMU sends the same memfd again and again under
// new fd numbers (PAM churn); the distinct files a client maps are counted
// by inode.
type fileKey struct{ dev, ino uint64 }

// region is one live map. A map with an fd has its own MAP_SHARED mapping
// of just the page-rounded range it asked for: mapping the whole file
// behind the fd (once per inode) would let a client make this process
// reserve terabytes of address space with a 4 KiB map of a sparse file,
// which ends in the Go runtime failing to start a thread (issue 8, case 1).
type region struct {
	iova, last uint64 // inclusive last byte, so a map may end at 2^64-1
	prot       Prot   // effective permission
	shared     bool   // has an fd mapping; false: message DMA
	key        fileKey
	mmap       []byte // the whole page-rounded mapping
	mem        []byte // the map's bytes within mmap
}

func (r *region) size() uint64 { return r.last - r.iova + 1 }

// NewMap returns an empty map with bus mastering off and the default
// per-client limits (no process budget). log may be nil.
func NewMap(log *logrus.Entry) *Map { return NewMapLimits(log, Limits{}) }

// NewMapLimits returns an empty map held to l (zero fields: defaults).
func NewMapLimits(log *logrus.Entry, l Limits) *Map {
	if log == nil {
		lg := logrus.New()
		lg.SetOutput(discard{})
		log = logrus.NewEntry(lg)
	}
	return &Map{
		log:       log.WithField("component", "dma"),
		files:     make(map[fileKey]int),
		limits:    l.withDefaults(),
		pageAlign: uint64(unix.Getpagesize()),
	}
}

// Limits returns the limits the map enforces.
func (m *Map) Limits() Limits { return m.limits }

// Refusals counts the Adds refused because a limit was reached.
func (m *Map) Refusals() uint64 { return m.refusals.Load() }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Add registers a map (DMA_MAP). It always takes ownership of mp.Fd: the fd
// is closed before Add returns, on success (the mapping keeps the file) and
// on error alike. Errors wrap a unix.Errno: EINVAL for an empty or wrapping
// range, a file that cannot back it (not a regular file, or Offset+Size
// beyond its size, which would fault on access), EEXIST for an overlap with
// a live map; ErrLimit with ENOSPC (maps, mmaps, files) or ENOMEM (bytes)
// when a limit of the map or its process budget is reached.
func (m *Map) Add(mp Mapping) error {
	fd := mp.Fd
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	if err := checkRange(mp.IOVA, mp.Size); err != nil {
		return fmt.Errorf("dma: map %#x+%#x: %w", mp.IOVA, mp.Size, err)
	}
	r := &region{iova: mp.IOVA, last: mp.IOVA + mp.Size - 1, prot: mp.Prot & protMask}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked {
		return fmt.Errorf("dma: map %#x+%#x: %w", mp.IOVA, mp.Size, ErrClosed)
	}
	i := m.regions.find(r.iova)
	if o := m.regions.at(i); o != nil && o.iova <= r.last {
		return fmt.Errorf("dma: map %#x+%#x overlaps map %#x+%#x: %w", mp.IOVA, mp.Size, o.iova, o.size(), unix.EEXIST)
	}
	if m.regions.len() >= m.limits.MaxMaps {
		return m.refuse(mp, fmt.Errorf("%d maps, the most a client may have: %w: %w", m.limits.MaxMaps, ErrLimit, unix.ENOSPC))
	}
	if fd >= 0 {
		writable, err := m.attachFile(r, fd, mp.Offset, mp.Size)
		if err != nil {
			if errors.Is(err, ErrLimit) {
				return m.refuse(mp, err)
			}
			return fmt.Errorf("dma: map %#x+%#x fd offset %#x: %w", mp.IOVA, mp.Size, mp.Offset, err)
		}
		if r.prot&ProtWrite != 0 && !writable {
			// A client bug, not ours to refuse (QEMU aborts on a failed RAM
			// map): device writes to it fail with ErrReadOnly instead.
			r.prot &^= ProtWrite
			m.log.WithFields(logrus.Fields{"iova": mp.IOVA, "size": mp.Size}).Warn("writable map backed by a read-only fd")
		}
	}
	m.regions.insert(i, r)
	if m.log.Logger.IsLevelEnabled(logrus.DebugLevel) { // the fields allocate
		m.log.WithFields(logrus.Fields{
			"iova": mp.IOVA, "size": mp.Size, "offset": mp.Offset, "prot": r.prot.String(), "shared": r.shared,
		}).Debug("dma map added")
	}
	return nil
}

// refuse counts an Add refused by a limit and returns its error.
func (m *Map) refuse(mp Mapping, err error) error {
	m.refusals.Add(1)
	return fmt.Errorf("dma: map %#x+%#x: %w", mp.IOVA, mp.Size, err)
}

// checkRange rejects empty and wrapping ranges.
func checkRange(iova, size uint64) error {
	if size == 0 {
		return fmt.Errorf("empty range: %w", unix.EINVAL)
	}
	if iova > math.MaxUint64-(size-1) {
		return fmt.Errorf("range wraps past 2^64: %w", unix.EINVAL)
	}
	return nil
}

// attachFile maps the page-rounded range of fd behind [off, off+size)
// into r, charging the map's limits and the process budget. It reports
// whether the fd allows writes. m.mu is held.
func (m *Map) attachFile(r *region, fd int, off, size uint64) (writable bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, fmt.Errorf("fd is not a regular file (mode %#o), cannot check its size: %w", st.Mode, unix.EINVAL)
	}
	fsize := uint64(st.Size)
	if st.Size < 0 || off > fsize || size > fsize-off {
		// Mapping it anyway would SIGBUS on the first access past the end.
		return false, fmt.Errorf("range ends past the file's %d bytes: %w", st.Size, unix.EINVAL)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return false, fmt.Errorf("fcntl F_GETFL: %w", err)
	}
	switch fl & unix.O_ACCMODE {
	case unix.O_RDWR:
		writable = true
	case unix.O_WRONLY:
		return false, fmt.Errorf("fd is write-only, cannot be mapped: %w", unix.EACCES)
	}

	// Round out to the file's block size when it is a larger power of two
	// (hugetlbfs reports its huge page size, and mmap wants that
	// alignment; notes gotcha 15), else to the host page.
	align := m.pageAlign
	if bs := uint64(st.Blksize); bs > align && bs&(bs-1) == 0 && bs <= 1<<30 {
		align = bs
	}
	start := off &^ (align - 1)
	end := off + size // no wrap: off+size <= fsize
	if rem := end % align; rem != 0 {
		if end > math.MaxUint64-(align-rem) {
			return false, fmt.Errorf("range rounds past 2^64: %w", unix.EINVAL)
		}
		end += align - rem
	}
	length := end - start
	if length > math.MaxInt || start > math.MaxInt64 {
		return false, fmt.Errorf("%d bytes at %#x too large to map: %w", length, start, unix.EFBIG)
	}

	key := fileKey{dev: uint64(st.Dev), ino: st.Ino}
	switch {
	case m.mmaps >= m.limits.MaxMmaps:
		return false, fmt.Errorf("%d maps with an fd, the most a client may have: %w: %w", m.limits.MaxMmaps, ErrLimit, unix.ENOSPC)
	case length > m.limits.MaxBytes-m.mappedBytes:
		return false, fmt.Errorf("%d bytes mapped, %d more asked, a client may map %d: %w: %w",
			m.mappedBytes, length, m.limits.MaxBytes, ErrLimit, unix.ENOMEM)
	case m.files[key] == 0 && len(m.files) >= m.limits.MaxFiles:
		return false, fmt.Errorf("%d distinct files mapped, the most a client may have: %w: %w", m.limits.MaxFiles, ErrLimit, unix.ENOSPC)
	}
	if b := m.limits.Budget; b != nil {
		if err := b.reserve(length); err != nil {
			return false, err
		}
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	mem, err := unix.Mmap(fd, int64(start), int(length), prot, unix.MAP_SHARED)
	if err != nil {
		if b := m.limits.Budget; b != nil {
			b.release(length)
		}
		if errors.Is(err, unix.ENOMEM) {
			// The kernel's own limits (vm.max_map_count, RLIMIT_AS): a
			// refusal like ours, the client may go on within it.
			return false, fmt.Errorf("mmap %d bytes: %w: %w", length, ErrLimit, err)
		}
		return false, fmt.Errorf("mmap %d bytes: %w", length, err)
	}
	r.shared, r.key, r.mmap = true, key, mem
	r.mem = mem[off-start : off-start+size]
	m.files[key]++
	m.mmaps++
	m.mappedBytes += length
	return writable, nil
}

// releaseLocked unmaps r's range and returns what it was charged.
func (m *Map) releaseLocked(r *region) {
	if !r.shared {
		return
	}
	length := uint64(len(r.mmap))
	if err := unix.Munmap(r.mmap); err != nil {
		m.log.WithError(err).Error("dma munmap failed")
	}
	r.shared, r.mmap, r.mem = false, nil, nil
	if m.files[r.key]--; m.files[r.key] <= 0 {
		delete(m.files, r.key)
	}
	m.mmaps--
	m.mappedBytes -= length
	if b := m.limits.Budget; b != nil {
		b.release(length)
	}
}

// Remove drops every map inside [iova, iova+size) (DMA_UNMAP). A range that
// cuts a map, or covers none, is an error (EINVAL, ENOENT) and changes
// nothing. Remove returns after every access to the removed maps finished.
func (m *Map) Remove(iova, size uint64) error {
	if err := checkRange(iova, size); err != nil {
		return fmt.Errorf("dma: unmap %#x+%#x: %w", iova, size, err)
	}
	last := iova + size - 1
	m.notifyUnmap(iova, last)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked {
		return fmt.Errorf("dma: unmap %#x+%#x: %w", iova, size, ErrClosed)
	}
	i := m.regions.find(iova)
	n := 0
	for j := i; ; j = m.regions.next(j) {
		r := m.regions.at(j)
		if r == nil || r.iova > last {
			break
		}
		if r.iova < iova || r.last > last {
			return fmt.Errorf("dma: unmap %#x+%#x cuts map %#x+%#x: %w", iova, size, r.iova, r.size(), unix.EINVAL)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("dma: unmap %#x+%#x: no map in range: %w", iova, size, unix.ENOENT)
	}
	for j, k := i, 0; k < n; j, k = m.regions.next(j), k+1 {
		m.releaseLocked(m.regions.at(j))
	}
	m.regions.deleteN(i, n)
	if m.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		m.log.WithFields(logrus.Fields{"iova": iova, "size": size, "maps": n}).Debug("dma map removed")
	}
	return nil
}

// RemoveAll drops every map (DMA_UNMAP with the ALL flag, or the client
// left), after in-flight accesses finished.
func (m *Map) RemoveAll() {
	m.notifyUnmap(0, math.MaxUint64)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeAllLocked()
}

func (m *Map) removeAllLocked() {
	for r := range m.regions.all() {
		m.releaseLocked(r)
	}
	if n := m.regions.len(); n > 0 {
		m.log.WithField("maps", n).Debug("dma all maps removed")
	}
	m.regions.reset()
}

// Close removes every map; later accesses fail with ErrClosed and later
// Adds close their fd and fail. Idempotent.
func (m *Map) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeAllLocked()
	m.closedLocked = true
	m.closed.Store(true)
	return nil
}

// SetBusMaster follows COMMAND.MASTER: while off every access fails with
// ErrBusMasterOff, as a function that may not initiate transactions.
func (m *Map) SetBusMaster(on bool) { m.busMaster.Store(on) }

// SetMessenger sets the transport for fd-less maps; nil removes it.
func (m *Map) SetMessenger(ms Messenger) {
	if ms == nil {
		m.messenger.Store(nil)
		return
	}
	m.messenger.Store(&messengerBox{ms})
}

// AddHook appends h to the hooks consulted, in order, before every access.
func (m *Map) AddHook(h Hook) {
	m.hookMu.Lock()
	defer m.hookMu.Unlock()
	var hs []Hook
	if p := m.hooks.Load(); p != nil {
		hs = slices.Clone(*p)
	}
	hs = append(hs, h)
	m.hooks.Store(&hs)
}

// Regions returns the live maps in IOVA order.
func (m *Map) Regions() []RegionInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]RegionInfo, 0, m.regions.len())
	for r := range m.regions.all() {
		out = append(out, RegionInfo{IOVA: r.iova, Size: r.size(), Prot: r.prot, Shared: r.shared})
	}
	return out
}

// mappedFiles reports how many distinct files are mapped.
func (m *Map) mappedFiles() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.files)
}

// Usage is what a map holds now, against its Limits.
type Usage struct {
	Maps, Mmaps, Files int
	Bytes              uint64
}

// Usage returns the map's current use.
func (m *Map) Usage() Usage {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return Usage{Maps: m.regions.len(), Mmaps: m.mmaps, Files: len(m.files), Bytes: m.mappedBytes}
}

// Faults reports how many accesses hit a fault inside a live map: the
// client shrank the file behind it. Each such access failed ErrUnmapped.
func (m *Map) Faults() uint64 { return m.faults.Load() }

// ReadAt copies guest memory at addr into p.
//
// On failure the *Error's Addr is the first byte not transferred and Len
// the number of bytes not transferred; p[:n] holds what was read before it.
func (m *Map) ReadAt(p []byte, addr uint64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := m.gate(Read, addr, len(p)); err != nil {
		return 0, err
	}
	if done, err := m.copyWhole(Read, p, addr); done {
		return whole(len(p), err)
	}
	return m.transfer(Read, p, addr, false)
}

// WriteAt copies p into guest memory at addr. Errors as for ReadAt.
func (m *Map) WriteAt(p []byte, addr uint64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := m.gate(Write, addr, len(p)); err != nil {
		return 0, err
	}
	if done, err := m.copyWhole(Write, p, addr); done {
		return whole(len(p), err)
	}
	return m.transfer(Write, p, addr, false)
}

// Store32 writes v at addr as one atomic store when addr is 4-aligned and
// the word lies in one shared map; otherwise as WriteAt of v's four bytes
// in host order.
func (m *Map) Store32(addr uint64, v uint32) error {
	if err := m.gate(Write, addr, 4); err != nil {
		return err
	}
	if addr%4 == 0 {
		if done, err := m.store32Atomic(addr, v); done {
			return err
		}
	}
	return m.store32Bytes(addr, v, false)
}

// whole is the result of an access copyWhole did: all n bytes, or none.
func whole(n int, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	return n, nil
}

// store32Bytes is Store32 as a WriteAt of v's four bytes in host order;
// held: the caller holds m.mu for reading (a Run).
func (m *Map) store32Bytes(addr uint64, v uint32, held bool) error {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	_, err := m.transfer(Write, b[:], addr, held)
	return err
}

// accessLocked is ReadAt or WriteAt for run, which holds m.mu for reading
// over a map without message maps.
func (m *Map) accessLocked(op Op, p []byte, addr uint64, run *heldSpace) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := m.gate(op, addr, len(p)); err != nil {
		return 0, err
	}
	if done, err := m.copyWholeLocked(op, p, addr, &run.last); done {
		return whole(len(p), err)
	}
	return m.transfer(op, p, addr, true)
}

// store32Held is Store32 for run, as accessLocked.
func (m *Map) store32Held(addr uint64, v uint32, run *heldSpace) error {
	if err := m.gate(Write, addr, 4); err != nil {
		return err
	}
	if addr%4 == 0 {
		if done, err := m.store32Locked(addr, v, &run.last); done {
			return err
		}
	}
	return m.store32Bytes(addr, v, true)
}

// store32Atomic does the fast path of Store32. done is false when it does
// not apply (and it then changed nothing). store32Locked recovers a fault
// itself, so the lock is dropped without a deferred call.
func (m *Map) store32Atomic(addr uint64, v uint32) (done bool, err error) {
	var last *region
	m.mu.RLock()
	done, err = m.store32Locked(addr, v, &last)
	m.mu.RUnlock()
	return done, err
}

// store32Locked is store32Atomic with m.mu held for reading, for a Run
// (last: see regionLocked). Its fault guard is written out here, as in
// copyWholeLocked, not shared through a helper taking the access as a
// func: that cost 5-10% of a 64-byte frame in BenchmarkDeviceRate.
func (m *Map) store32Locked(addr uint64, v uint32, last **region) (done bool, err error) {
	var w *uint32
	if !m.closedLocked {
		w = word32(m.regionLocked(addr, last), addr)
	}
	if w == nil {
		return false, nil
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if e := recover(); e != nil {
			m.fault(e)
			done, err = true, &Error{Op: Write, Addr: addr, Len: 4, Err: ErrUnmapped}
		}
	}()
	atomic.StoreUint32(w, v)
	return true, nil
}

// word32 returns the host address of the 4-aligned word at addr if it
// lies in r (the map find found for addr, or nil) and r is shared and
// writable, else nil.
func word32(r *region, addr uint64) *uint32 {
	if r == nil || r.iova > addr || r.last-addr < 3 || !r.shared || r.prot&ProtWrite == 0 {
		return nil
	}
	p := unsafe.Pointer(&r.mem[addr-r.iova])
	if uintptr(p)%4 != 0 {
		return nil // the client's file offset misaligned the host address
	}
	return (*uint32)(p)
}

// fault handles a value recovered during a copy with SetPanicOnFault on:
// a memory fault inside a live map (the client truncated its file; the
// SIGBUS would otherwise kill every device in the process) is counted and
// the access fails; anything else is a bug and panics on.
func (m *Map) fault(e any) {
	if _, isFault := e.(interface{ Addr() uintptr }); !isFault {
		panic(e)
	}
	m.faults.Add(1)
}

// gate runs the checks every access passes before it looks at the map.
func (m *Map) gate(op Op, addr uint64, n int) error {
	if m.closed.Load() {
		return &Error{Op: op, Addr: addr, Len: n, Err: ErrClosed}
	}
	if !m.busMaster.Load() {
		return &Error{Op: op, Addr: addr, Len: n, Err: ErrBusMasterOff}
	}
	if hs := m.hooks.Load(); hs != nil {
		for _, h := range *hs {
			if err := h.BeforeDMA(op, addr, n); err != nil {
				return &Error{Op: op, Addr: addr, Len: n, Err: err}
			}
		}
	}
	return nil
}

// copyWhole is the common case of an access, done in one step: all of p
// lies in one shared map that grants op. done is false, with nothing
// copied, when that is not so; transfer then does the access piece by
// piece. done is true with a non-nil err only when the copy hit a fault
// (see fault): the access failed at its first byte, as transfer reports it.
func (m *Map) copyWhole(op Op, p []byte, addr uint64) (done bool, err error) {
	var last *region
	m.mu.RLock()
	done, err = m.copyWholeLocked(op, p, addr, &last) // recovers a fault itself
	m.mu.RUnlock()
	return done, err
}

// copyWholeLocked is copyWhole with m.mu held for reading, for a Run
// (last: see regionLocked).
func (m *Map) copyWholeLocked(op Op, p []byte, addr uint64, last **region) (done bool, err error) {
	var mem []byte
	if !m.closedLocked {
		mem = span(m.regionLocked(addr, last), op, addr, len(p))
	}
	if mem == nil {
		return false, nil
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if e := recover(); e != nil {
			m.fault(e)
			done, err = true, &Error{Op: op, Addr: addr, Len: len(p), Err: ErrUnmapped}
		}
	}()
	if op == Read {
		copy(p, mem)
	} else {
		copy(mem, p)
	}
	return true, nil
}

// span returns the host bytes of [addr, addr+n) if they lie in r (the map
// find found for addr, or nil) and r is shared and grants op, else nil.
func span(r *region, op Op, addr uint64, n int) []byte {
	want := ProtRead
	if op == Write {
		want = ProtWrite
	}
	if r == nil || r.iova > addr || r.last-addr < uint64(n-1) || !r.shared || r.prot&want == 0 {
		return nil
	}
	off := addr - r.iova
	return r.mem[off : off+uint64(n)]
}

// regionLocked returns the map holding addr, or nil, for a Run: last is
// its memo of the map it found last, tried first and updated. The table
// cannot change while the run holds m.mu (a lookup is two binary searches,
// a fifth of a small access).
func (m *Map) regionLocked(addr uint64, last **region) *region {
	if r := *last; r != nil && r.iova <= addr && addr <= r.last {
		return r
	}
	r := m.regions.at(m.regions.find(addr))
	if r == nil || r.iova > addr {
		return nil
	}
	*last = r
	return r
}

// transfer moves p to or from guest memory piece by piece, shared pieces
// under the read lock (held: the caller holds it), message pieces through
// the messenger.
func (m *Map) transfer(op Op, p []byte, addr uint64, held bool) (int, error) {
	if uint64(len(p)-1) > math.MaxUint64-addr {
		// No map reaches past 2^64-1: the bytes that wrap are unmapped.
		return m.transferPrefix(op, p[:math.MaxUint64-addr+1], addr, len(p), held)
	}
	return m.transferPrefix(op, p, addr, len(p), held)
}

// transferPrefix transfers p (a prefix of an access of total bytes) and
// fails with ErrUnmapped after it if p is shorter than total.
func (m *Map) transferPrefix(op Op, p []byte, addr uint64, total int, held bool) (int, error) {
	done := 0
	for done < len(p) {
		a := addr + uint64(done)
		var n, msgLen int
		var err error
		if held {
			n, msgLen, err = m.copySharedLocked(op, p[done:], a)
		} else {
			n, msgLen, err = m.copyShared(op, p[done:], a)
		}
		done += n
		if err != nil {
			return done, &Error{Op: op, Addr: addr + uint64(done), Len: total - done, Err: err}
		}
		if msgLen == 0 {
			continue
		}
		if held {
			// A Run begins only on a map without message maps, and none
			// can be added while it holds the lock; messaging under it
			// could deadlock against the client's DMA_UNMAP.
			panic("dma: message map reached inside a Run")
		}
		a += uint64(n)
		piece := p[done : done+msgLen]
		if err := m.message(op, piece, a); err != nil {
			return done, &Error{Op: op, Addr: a, Len: total - done, Err: err}
		}
		done += msgLen
	}
	if done < total {
		return done, &Error{Op: op, Addr: addr + uint64(done), Len: total - done, Err: ErrUnmapped}
	}
	return done, nil
}

// copyShared copies between p and shared maps from addr on, under the read
// lock, until p is done, an access fails, or the next byte lies in a
// message map: then msgLen is how much of the rest of p lies in that map.
func (m *Map) copyShared(op Op, p []byte, addr uint64) (n, msgLen int, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.copySharedLocked(op, p, addr)
}

// copySharedLocked is copyShared with m.mu held for reading.
func (m *Map) copySharedLocked(op Op, p []byte, addr uint64) (n, msgLen int, err error) {
	if m.closedLocked {
		return 0, 0, ErrClosed
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if e := recover(); e != nil {
			m.fault(e)
			err = ErrUnmapped
		}
	}()
	i := m.regions.find(addr)
	for n < len(p) {
		a := addr + uint64(n)
		r := m.regions.at(i)
		if r == nil || r.iova > a {
			return n, 0, ErrUnmapped
		}
		if op == Write && r.prot&ProtWrite == 0 {
			return n, 0, ErrReadOnly
		}
		if op == Read && r.prot&ProtRead == 0 {
			return n, 0, ErrNotReadable
		}
		k := len(p) - n
		if rem := r.last - a; rem < uint64(k-1) {
			k = int(rem) + 1
		}
		if !r.shared {
			return n, k, nil
		}
		off := a - r.iova
		if op == Read {
			copy(p[n:n+k], r.mem[off:])
		} else {
			copy(r.mem[off:], p[n:n+k])
		}
		n += k
		i = m.regions.next(i)
	}
	return n, 0, nil
}

// message sends one piece of an access through the messenger.
func (m *Map) message(op Op, p []byte, addr uint64) error {
	box := m.messenger.Load()
	if box == nil {
		return fmt.Errorf("map has no fd and no messenger is set: %w", ErrUnmapped)
	}
	if op == Read {
		return box.ReadDMA(addr, p)
	}
	return box.WriteDMA(addr, p)
}
