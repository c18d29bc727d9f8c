// Package wcbar is memory behind a BAR that the client maps into the guest
// (a memfd), with trapped ranges and doorbell polling.
package wcbar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ErrClosed is wrapped by accesses to a closed Window.
var ErrClosed = errors.New("window closed")

// Area is a range of the window, in bytes from its start.
type Area struct{ Offset, Size uint64 }

type watch struct {
	off uint64
	fn  func(v uint32)
}

// Window is a BAR's memory: a sealed memfd the client mmaps (the guest then
// loads and stores it directly, vfio-user-notes 4.3, 4.5), and this
// process's own shared mapping of it.
//
// A guest store to an mmapped area never notifies the device: the device
// sees it only by polling (Watch). Guest accesses to trapped ranges, and to
// every range while QEMU has the BAR's mmap switched off (INTx under TCG
// does that), arrive as REGION_READ/WRITE and must be served with ReadAt
// and WriteAt, which use this same memory, so both paths see one state.
//
// Accesses of up to 8 bytes (every MMIO access QEMU forwards, every
// register and doorbell) are done as aligned atomic words, with bytes at
// unaligned edges merged into their word by compare-and-swap: a 4-byte
// message write to a doorbell lands as one store the poller cannot see
// torn, and never clobbers a neighbouring byte the guest stores at the same
// time. Longer ReadAt/WriteAt are plain memory copies (bulk data, where a
// word-by-word atomic copy would cost an order of magnitude in speed).
type Window struct {
	log  *logrus.Entry
	size uint64
	page uint64

	// mu is held for reading by every access and for writing by Close,
	// which unmaps: a late REGION_READ during teardown fails, not faults.
	mu     sync.RWMutex
	fd     int
	mem    []byte
	closed bool

	ctl     sync.Mutex // traps, watches and the poller's lifecycle
	traps   []Area     // page-rounded, unsorted, may overlap
	watches []watch
	poller  *Poller // the doorbell poller, non-nil while it runs

	polls atomic.Uint64 // poller passes, to check the idle backoff
}

// New creates a window of size bytes (a power of two, at least 4096):
// memfd created with MFD_CLOEXEC|MFD_ALLOW_SEALING, sized, sealed against
// growing and shrinking (so no one can make the other side's mapping
// fault) and then against further seals (so no client can take write
// access away from the next), and mapped shared. name shows in /proc/PID/maps as /memfd:name.
// log may be nil.
func New(name string, size uint64, log *logrus.Entry) (*Window, error) {
	if size < 4096 || size&(size-1) != 0 || size > math.MaxInt {
		return nil, fmt.Errorf("wcbar: %s: size %#x is not a power of two >= 4096: %w", name, size, unix.EINVAL)
	}
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = logrus.NewEntry(l)
	}
	// The kernel limits memfd names to 249 bytes.
	mname := name
	if len(mname) > 200 {
		mname = mname[:200]
	}
	fd, err := unix.MemfdCreate(mname, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("wcbar: %s: memfd_create: %w", name, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wcbar: %s: ftruncate %#x: %w", name, size, err)
	}
	// F_SEAL_SEAL last: the fd goes to every client, and without it one
	// could add F_SEAL_WRITE or F_SEAL_FUTURE_WRITE and make every later
	// client's writable mmap fail with EPERM (issue 8, case 3).
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wcbar: %s: seal: %w", name, err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wcbar: %s: mmap %#x: %w", name, size, err)
	}
	w := &Window{
		log:  log.WithFields(logrus.Fields{"component": "wcbar", "window": name}),
		size: size,
		page: uint64(os.Getpagesize()),
		fd:   fd,
		mem:  mem,
	}
	w.log.WithField("size", size).Debug("window created")
	return w, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Fd is the memfd to send the client (SCM_RIGHTS sends a duplicate). The
// Window keeps ownership; -1 after Close.
func (w *Window) Fd() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.fd
}

// Size is the window's size in bytes.
func (w *Window) Size() uint64 { return w.size }

// Trap keeps [off, off+size), rounded out to host pages, out of Areas: the
// guest's accesses there arrive as messages (registers that need a side
// effect per access, the MSI-X table). Ranges past the end are clipped.
func (w *Window) Trap(off, size uint64) {
	if size == 0 || off >= w.size {
		return
	}
	end := w.size
	if size < w.size-off {
		end = off + size
	}
	start := off &^ (w.page - 1)
	end = min((end+w.page-1)&^(w.page-1), w.size)
	w.ctl.Lock()
	defer w.ctl.Unlock()
	w.traps = append(w.traps, Area{Offset: start, Size: end - start})
}

// Areas returns the ranges the client may mmap: the complement of the
// traps, sorted, page-aligned, never empty ranges. All of the window when
// nothing is trapped.
func (w *Window) Areas() []Area {
	w.ctl.Lock()
	traps := slices.Clone(w.traps)
	w.ctl.Unlock()
	slices.SortFunc(traps, func(a, b Area) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	var out []Area
	pos := uint64(0)
	for _, t := range traps {
		if t.Offset > pos {
			out = append(out, Area{Offset: pos, Size: t.Offset - pos})
		}
		pos = max(pos, t.Offset+t.Size)
	}
	if pos < w.size {
		out = append(out, Area{Offset: pos, Size: w.size - pos})
	}
	return out
}

// ReadAt copies the window at off into p; up to 8 bytes atomically (see
// Window). A range past the end fails whole with EINVAL.
func (w *Window) ReadAt(p []byte, off uint64) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if err := w.check("read", len(p), off); err != nil {
		return 0, err
	}
	if len(p) > 8 {
		copy(p, w.mem[off:])
	} else {
		loadBytes(w.mem, p, off)
	}
	return len(p), nil
}

// WriteAt copies p into the window at off; up to 8 bytes atomically (see
// Window). A range past the end fails whole with EINVAL.
func (w *Window) WriteAt(p []byte, off uint64) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if err := w.check("write", len(p), off); err != nil {
		return 0, err
	}
	if len(p) > 8 {
		copy(w.mem[off:], p)
	} else {
		storeBytes(w.mem, p, off)
	}
	return len(p), nil
}

func (w *Window) check(op string, n int, off uint64) error {
	if w.closed {
		return fmt.Errorf("wcbar: %s %d@%#x: %w", op, n, off, ErrClosed)
	}
	if off > w.size || uint64(n) > w.size-off {
		return fmt.Errorf("wcbar: %s %d@%#x: past the window's %#x bytes: %w", op, n, off, w.size, unix.EINVAL)
	}
	return nil
}

// Load32 reads the word at off in host byte order, atomically when off is
// 4-aligned. Out of range or closed: 0.
func (w *Window) Load32(off uint64) uint32 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed || off > w.size-4 {
		return 0
	}
	if off%4 == 0 {
		return atomic.LoadUint32(word32(w.mem, off))
	}
	var b [4]byte
	loadBytes(w.mem, b[:], off)
	return binary.NativeEndian.Uint32(b[:])
}

// Store32 writes v at off in host byte order, atomically when off is
// 4-aligned. Out of range or closed: nothing happens.
func (w *Window) Store32(off uint64, v uint32) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed || off > w.size-4 {
		return
	}
	if off%4 == 0 {
		atomic.StoreUint32(word32(w.mem, off), v)
		return
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	storeBytes(w.mem, b[:], off)
}

// Load64 reads the doubleword at off in host byte order, atomically when
// off is 8-aligned. Out of range or closed: 0.
func (w *Window) Load64(off uint64) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed || off > w.size-8 {
		return 0
	}
	if off%8 == 0 {
		return atomic.LoadUint64(word64(w.mem, off))
	}
	var b [8]byte
	loadBytes(w.mem, b[:], off)
	return binary.NativeEndian.Uint64(b[:])
}

// Store64 writes v at off in host byte order, atomically when off is
// 8-aligned. Out of range or closed: nothing happens.
func (w *Window) Store64(off uint64, v uint64) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed || off > w.size-8 {
		return
	}
	if off%8 == 0 {
		atomic.StoreUint64(word64(w.mem, off), v)
		return
	}
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], v)
	storeBytes(w.mem, b[:], off)
}

// The mapping is page-aligned, so an offset's alignment is its address's.
func word32(mem []byte, off uint64) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
func word64(mem []byte, off uint64) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }

// loadBytes copies mem[off:] into dst with aligned atomic loads only.
func loadBytes(mem, dst []byte, off uint64) {
	for len(dst) > 0 {
		switch {
		case off%8 == 0 && len(dst) >= 8:
			binary.NativeEndian.PutUint64(dst, atomic.LoadUint64(word64(mem, off)))
			dst, off = dst[8:], off+8
		case off%4 == 0 && len(dst) >= 4:
			binary.NativeEndian.PutUint32(dst, atomic.LoadUint32(word32(mem, off)))
			dst, off = dst[4:], off+4
		default:
			base := off &^ 3
			var b [4]byte
			binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32(word32(mem, base)))
			n := copy(dst, b[off-base:])
			dst, off = dst[n:], off+uint64(n)
		}
	}
}

// storeBytes copies src into mem[off:] with aligned atomic stores only;
// bytes that share a word with bytes outside src go in by compare-and-swap,
// so a concurrent store to the rest of the word (the guest's, or another
// goroutine's) is not lost.
func storeBytes(mem, src []byte, off uint64) {
	for len(src) > 0 {
		switch {
		case off%8 == 0 && len(src) >= 8:
			atomic.StoreUint64(word64(mem, off), binary.NativeEndian.Uint64(src))
			src, off = src[8:], off+8
		case off%4 == 0 && len(src) >= 4:
			atomic.StoreUint32(word32(mem, off), binary.NativeEndian.Uint32(src))
			src, off = src[4:], off+4
		default:
			base := off &^ 3
			p := word32(mem, base)
			var n int
			for {
				old := atomic.LoadUint32(p)
				var b [4]byte
				binary.NativeEndian.PutUint32(b[:], old)
				n = copy(b[off-base:], src)
				if atomic.CompareAndSwapUint32(p, old, binary.NativeEndian.Uint32(b[:])) {
					break
				}
			}
			src, off = src[n:], off+uint64(n)
		}
	}
}

// Close stops the poller, unmaps the window and closes the memfd (the
// client's mapping and duplicate stay valid). Later accesses fail with
// ErrClosed. Idempotent.
func (w *Window) Close() error {
	w.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := unix.Munmap(w.mem)
	unix.Close(w.fd)
	w.mem, w.fd = nil, -1
	if err != nil {
		return fmt.Errorf("wcbar: munmap: %w", err)
	}
	w.log.Debug("window closed")
	return nil
}
