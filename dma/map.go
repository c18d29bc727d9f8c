package dma

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sort"
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
	log *logrus.Entry

	busMaster atomic.Bool
	closed    atomic.Bool // mirrors closedLocked for the lock-free early check
	faults    atomic.Uint64
	messenger atomic.Pointer[messengerBox]
	hooks     atomic.Pointer[[]Hook] // copy-on-write so accesses take no lock

	hookMu sync.Mutex // serialises AddHook

	mu           sync.RWMutex
	closedLocked bool
	regions      []*region // sorted by iova, never overlapping
	files        map[fileKey]*file
}

var _ Space = (*Map)(nil)

type messengerBox struct{ Messenger }

// fileKey names an inode: QEMU sends the same memfd again and again under
// new fd numbers (PAM churn), and each inode is mapped once.
type fileKey struct{ dev, ino uint64 }

// file is one MAP_SHARED mapping of a whole file, shared by the regions
// that reference it.
type file struct {
	key      fileKey
	mem      []byte
	writable bool
	refs     int
}

type region struct {
	iova, last uint64 // inclusive last byte, so a map may end at 2^64-1
	prot       Prot   // effective permission
	offset     uint64 // into file
	file       *file  // nil: message DMA
	mem        []byte // file.mem[offset : offset+size]
}

func (r *region) size() uint64 { return r.last - r.iova + 1 }

// NewMap returns an empty map with bus mastering off. log may be nil.
func NewMap(log *logrus.Entry) *Map {
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = logrus.NewEntry(l)
	}
	return &Map{
		log:   log.WithField("component", "dma"),
		files: make(map[fileKey]*file),
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Add registers a map (DMA_MAP). It always takes ownership of mp.Fd: the fd
// is closed before Add returns, on success (the mapping keeps the file) and
// on error alike. Errors wrap a unix.Errno: EINVAL for an empty or wrapping
// range, a file that cannot back it (not a regular file, or Offset+Size
// beyond its size, which would fault on access), EEXIST for an overlap with
// a live map.
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
	r := &region{iova: mp.IOVA, last: mp.IOVA + mp.Size - 1, prot: mp.Prot & protMask, offset: mp.Offset}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked {
		return fmt.Errorf("dma: map %#x+%#x: %w", mp.IOVA, mp.Size, ErrClosed)
	}
	i := m.find(r.iova)
	if i < len(m.regions) && m.regions[i].iova <= r.last {
		o := m.regions[i]
		return fmt.Errorf("dma: map %#x+%#x overlaps map %#x+%#x: %w", mp.IOVA, mp.Size, o.iova, o.size(), unix.EEXIST)
	}
	if fd >= 0 {
		f, err := m.attachFile(fd, mp.Offset, mp.Size)
		if err != nil {
			return fmt.Errorf("dma: map %#x+%#x fd offset %#x: %w", mp.IOVA, mp.Size, mp.Offset, err)
		}
		r.file = f
		r.mem = f.mem[mp.Offset : mp.Offset+mp.Size]
		if r.prot&ProtWrite != 0 && !f.writable {
			// A client bug, not ours to refuse (QEMU aborts on a failed RAM
			// map): device writes to it fail with ErrReadOnly instead.
			r.prot &^= ProtWrite
			m.log.WithFields(logrus.Fields{"iova": mp.IOVA, "size": mp.Size}).Warn("writable map backed by a read-only fd")
		}
	}
	m.regions = slices.Insert(m.regions, i, r)
	m.log.WithFields(logrus.Fields{
		"iova": mp.IOVA, "size": mp.Size, "offset": mp.Offset, "prot": r.prot.String(), "shared": r.file != nil,
	}).Debug("dma map added")
	return nil
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

// attachFile returns the shared mapping of fd's inode covering
// [off, off+size), mapping the whole file on first use. m.mu is held.
func (m *Map) attachFile(fd int, off, size uint64) (*file, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("fd is not a regular file (mode %#o), cannot check its size: %w", st.Mode, unix.EINVAL)
	}
	fsize := uint64(st.Size)
	if st.Size < 0 || off > fsize || size > fsize-off {
		// Mapping it anyway would SIGBUS on the first access past the end.
		return nil, fmt.Errorf("range ends past the file's %d bytes: %w", st.Size, unix.EINVAL)
	}
	if fsize > math.MaxInt {
		return nil, fmt.Errorf("file of %d bytes too large to map: %w", fsize, unix.EFBIG)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("fcntl F_GETFL: %w", err)
	}
	var writable bool
	switch fl & unix.O_ACCMODE {
	case unix.O_RDWR:
		writable = true
	case unix.O_WRONLY:
		return nil, fmt.Errorf("fd is write-only, cannot be mapped: %w", unix.EACCES)
	}

	key := fileKey{dev: uint64(st.Dev), ino: st.Ino}
	f := m.files[key]
	if f != nil && off+size <= uint64(len(f.mem)) && (f.writable || !writable) {
		f.refs++
		return f, nil
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	mem, err := unix.Mmap(fd, 0, int(fsize), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", fsize, err)
	}
	if f == nil {
		f = &file{key: key, mem: mem, writable: writable, refs: 1}
		m.files[key] = f
		m.log.WithFields(logrus.Fields{"dev": key.dev, "ino": key.ino, "bytes": fsize, "writable": writable}).Debug("dma file mapped")
		return f, nil
	}
	// The inode grew, or now comes with write access: move its regions to
	// the new mapping. The write lock is held, so no access is in flight.
	if f.writable && !writable {
		// Do not lose write access the earlier fd gave. Only reachable when
		// the file grew and the new fd is read-only; keep both properties by
		// refusing, the client can resend with a read-write fd.
		unix.Munmap(mem)
		return nil, fmt.Errorf("read-only fd for a grown file already mapped writable: %w", unix.EACCES)
	}
	old := f.mem
	f.mem, f.writable = mem, writable
	for _, r := range m.regions {
		if r.file == f {
			r.mem = f.mem[r.offset : r.offset+r.size()]
		}
	}
	if err := unix.Munmap(old); err != nil {
		m.log.WithError(err).Error("dma munmap of replaced mapping failed")
	}
	f.refs++
	m.log.WithFields(logrus.Fields{"dev": key.dev, "ino": key.ino, "bytes": fsize, "writable": writable}).Debug("dma file remapped")
	return f, nil
}

// releaseLocked drops r's reference on its file, unmapping it with the last.
func (m *Map) releaseLocked(r *region) {
	f := r.file
	if f == nil {
		return
	}
	r.file, r.mem = nil, nil
	f.refs--
	if f.refs > 0 {
		return
	}
	delete(m.files, f.key)
	if err := unix.Munmap(f.mem); err != nil {
		m.log.WithError(err).Error("dma munmap failed")
	}
	f.mem = nil
}

// find returns the index of the first region whose last byte is at or
// after addr. m.mu is held.
func (m *Map) find(addr uint64) int {
	rs := m.regions
	return sort.Search(len(rs), func(i int) bool { return rs[i].last >= addr })
}

// Remove drops every map inside [iova, iova+size) (DMA_UNMAP). A range that
// cuts a map, or covers none, is an error (EINVAL, ENOENT) and changes
// nothing. Remove returns after every access to the removed maps finished.
func (m *Map) Remove(iova, size uint64) error {
	if err := checkRange(iova, size); err != nil {
		return fmt.Errorf("dma: unmap %#x+%#x: %w", iova, size, err)
	}
	last := iova + size - 1
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked {
		return fmt.Errorf("dma: unmap %#x+%#x: %w", iova, size, ErrClosed)
	}
	i := m.find(iova)
	j := i
	for ; j < len(m.regions) && m.regions[j].iova <= last; j++ {
		if r := m.regions[j]; r.iova < iova || r.last > last {
			return fmt.Errorf("dma: unmap %#x+%#x cuts map %#x+%#x: %w", iova, size, r.iova, r.size(), unix.EINVAL)
		}
	}
	if i == j {
		return fmt.Errorf("dma: unmap %#x+%#x: no map in range: %w", iova, size, unix.ENOENT)
	}
	for _, r := range m.regions[i:j] {
		m.releaseLocked(r)
	}
	m.regions = slices.Delete(m.regions, i, j)
	m.log.WithFields(logrus.Fields{"iova": iova, "size": size, "maps": j - i}).Debug("dma map removed")
	return nil
}

// RemoveAll drops every map (DMA_UNMAP with the ALL flag, or the client
// left), after in-flight accesses finished.
func (m *Map) RemoveAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeAllLocked()
}

func (m *Map) removeAllLocked() {
	for _, r := range m.regions {
		m.releaseLocked(r)
	}
	if len(m.regions) > 0 {
		m.log.WithField("maps", len(m.regions)).Debug("dma all maps removed")
	}
	m.regions = nil
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
	out := make([]RegionInfo, len(m.regions))
	for i, r := range m.regions {
		out[i] = RegionInfo{IOVA: r.iova, Size: r.size(), Prot: r.prot, Shared: r.file != nil}
	}
	return out
}

// mappedFiles reports how many files are mapped (one mmap each).
func (m *Map) mappedFiles() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.files)
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
	return m.transfer(Read, p, addr)
}

// WriteAt copies p into guest memory at addr. Errors as for ReadAt.
func (m *Map) WriteAt(p []byte, addr uint64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := m.gate(Write, addr, len(p)); err != nil {
		return 0, err
	}
	return m.transfer(Write, p, addr)
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
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	_, err := m.transfer(Write, b[:], addr)
	return err
}

// store32Atomic does the fast path of Store32. done is false when it does
// not apply (and it then changed nothing).
func (m *Map) store32Atomic(addr uint64, v uint32) (done bool, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closedLocked {
		return false, nil
	}
	i := m.find(addr)
	if i >= len(m.regions) {
		return false, nil
	}
	r := m.regions[i]
	if r.iova > addr || r.last-addr < 3 || r.file == nil || r.prot&ProtWrite == 0 {
		return false, nil
	}
	p := unsafe.Pointer(&r.mem[addr-r.iova])
	if uintptr(p)%4 != 0 {
		return false, nil // the client's file offset misaligned the host address
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if e := recover(); e != nil {
			m.fault(e)
			done, err = true, &Error{Op: Write, Addr: addr, Len: 4, Err: ErrUnmapped}
		}
	}()
	atomic.StoreUint32((*uint32)(p), v)
	return true, nil
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

// transfer moves p to or from guest memory piece by piece, shared pieces
// under the read lock, message pieces through the messenger.
func (m *Map) transfer(op Op, p []byte, addr uint64) (int, error) {
	if uint64(len(p)-1) > math.MaxUint64-addr {
		// No map reaches past 2^64-1: the bytes that wrap are unmapped.
		return m.transferPrefix(op, p[:math.MaxUint64-addr+1], addr, len(p))
	}
	return m.transferPrefix(op, p, addr, len(p))
}

// transferPrefix transfers p (a prefix of an access of total bytes) and
// fails with ErrUnmapped after it if p is shorter than total.
func (m *Map) transferPrefix(op Op, p []byte, addr uint64, total int) (int, error) {
	done := 0
	for done < len(p) {
		a := addr + uint64(done)
		n, msgLen, err := m.copyShared(op, p[done:], a)
		done += n
		if err != nil {
			return done, &Error{Op: op, Addr: addr + uint64(done), Len: total - done, Err: err}
		}
		if msgLen == 0 {
			continue
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
	old := debug.SetPanicOnFault(true)
	// One deferred function (not four): this runs on every access.
	defer func() {
		debug.SetPanicOnFault(old)
		m.mu.RUnlock()
		if e := recover(); e != nil {
			m.fault(e)
			err = ErrUnmapped
		}
	}()
	if m.closedLocked {
		return 0, 0, ErrClosed
	}
	i := m.find(addr)
	for n < len(p) {
		a := addr + uint64(n)
		if i >= len(m.regions) || m.regions[i].iova > a {
			return n, 0, ErrUnmapped
		}
		r := m.regions[i]
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
		if r.file == nil {
			return n, k, nil
		}
		off := a - r.iova
		if op == Read {
			copy(p[n:n+k], r.mem[off:])
		} else {
			copy(r.mem[off:], p[n:n+k])
		}
		n += k
		i++
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
