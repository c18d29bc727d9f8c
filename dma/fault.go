package dma

import (
	"errors"
	"sync"
	"unsafe"

	"github.com/myriemu/myriemu/fault"
)

// ErrInjected is the cause of a DMA the fault door failed on purpose
// (dma.read.fail): the device sees it as a completer abort.
var ErrInjected = errors.New("fault injected: completer abort")

// WithFaults puts the dma fault door in front of s for device: with no
// rule armed at the door each access costs one atomic load and a branch;
// with rules armed every access is offered to set (docs/faults.md, door
// dma). A nil set returns s itself.
func WithFaults(s Space, set *fault.Set, device string) Space {
	if set == nil {
		return s
	}
	return &faultSpace{Space: s, faultDoor: &faultDoor{set: set, device: device}}
}

// Unwrap returns the Space behind the door (see MapOf).
func (f *faultSpace) Unwrap() Space { return f.Space }

// Rewrap returns the door over inner, sharing this door's state (see Run).
func (f *faultSpace) Rewrap(inner Space) Space {
	return &faultSpace{Space: inner, faultDoor: f.faultDoor}
}

type faultSpace struct {
	Space
	*faultDoor
}

// faultDoor is a door's state, shared by its copies over a Run.
type faultDoor struct {
	set    *fault.Set
	device string

	mu   sync.Mutex
	held *heldWrite // dma.write.reorder: a write that lands after the next one
}

type heldWrite struct {
	p    []byte
	addr uint64
}

// Region names the device structure a DMA is for (the rx_done ring of
// slice 0, ...), so that fault rules can match it with region= and slice=.
type Region struct {
	Name  string // rx_done, stats, cmd, ...
	Slice int    // -1: not a slice's
}

// noRegion is what the door reports for an access the device did not
// label: it matches no region= and no slice= clause.
var noRegion = Region{Slice: -1}

// RegionStorer is a Space that can be told which device structure a
// Store32 is for. The fault door implements it; wrappers of a Space
// should pass it on (see Store32In).
type RegionStorer interface {
	Store32In(r Region, addr uint64, v uint32) error
}

// Store32In is s.Store32 labelled with r for the fault door, when s
// carries one; otherwise a plain Store32.
func Store32In(s Space, r Region, addr uint64, v uint32) error {
	if l, ok := s.(RegionStorer); ok {
		return l.Store32In(r, addr, v)
	}
	return s.Store32(addr, v)
}

func (f *faultSpace) ReadAt(p []byte, addr uint64) (int, error) {
	if !f.set.Armed(fault.DMA) {
		return f.Space.ReadAt(p, addr)
	}
	act, ok := f.set.Eval(fault.DMA, &fault.Op{Point: "read", Device: f.device, Addr: addr, Len: len(p), Slice: -1})
	if !ok {
		return f.Space.ReadAt(p, addr)
	}
	switch act.Kind {
	case fault.DMAReadFail:
		return 0, &Error{Op: Read, Addr: addr, Len: len(p), Err: ErrInjected}
	case fault.DMAIOVAUnmapped:
		return 0, &Error{Op: Read, Addr: addr, Len: len(p), Err: ErrUnmapped}
	case fault.DMAReadShort:
		n, err := f.Space.ReadAt(p, addr)
		if err == nil {
			// The tail of the completion never arrived: zeros, no error.
			clear(p[cut(act.Int("bytes"), len(p)):])
		}
		return n, err
	case fault.DMAReadPoison:
		n, err := f.Space.ReadAt(p, addr)
		if err == nil && len(p) > 0 {
			off := act.Int("offset")
			if off < 0 || off >= int64(len(p)) {
				off = int64(act.Rand % uint64(len(p)))
			}
			p[off] ^= byte(act.Int("mask"))
		}
		return n, err
	}
	return f.Space.ReadAt(p, addr)
}

func (f *faultSpace) WriteAt(p []byte, addr uint64) (int, error) {
	if !f.set.Armed(fault.DMA) {
		return f.Space.WriteAt(p, addr)
	}
	act, ok := f.set.Eval(fault.DMA, &fault.Op{Point: "write", Device: f.device, Addr: addr, Len: len(p), Slice: -1})
	if !ok {
		n, err := f.Space.WriteAt(p, addr)
		f.release()
		return n, err
	}
	switch act.Kind {
	case fault.DMAWriteDrop:
		return len(p), nil
	case fault.DMAIOVAUnmapped:
		return 0, &Error{Op: Write, Addr: addr, Len: len(p), Err: ErrUnmapped}
	case fault.DMAWriteTorn:
		n := cut(act.Int("bytes"), len(p))
		if _, err := f.Space.WriteAt(p[:n], addr); err != nil {
			return 0, err
		}
		return len(p), nil
	case fault.DMAWriteReorder:
		f.hold(append([]byte(nil), p...), addr)
		return len(p), nil
	}
	n, err := f.Space.WriteAt(p, addr)
	f.release()
	return n, err
}

func (f *faultSpace) Store32(addr uint64, v uint32) error {
	return f.Store32In(noRegion, addr, v)
}

// Store32In implements RegionStorer: the door reports the access with
// r's name and slice (dma.write=drop; region=rx_done; slice=0 loses one
// receive completion).
func (f *faultSpace) Store32In(r Region, addr uint64, v uint32) error {
	if !f.set.Armed(fault.DMA) {
		return f.Space.Store32(addr, v)
	}
	act, ok := f.set.Eval(fault.DMA, &fault.Op{Point: "write", Device: f.device, Addr: addr, Len: 4, Region: r.Name, Slice: r.Slice})
	if !ok {
		err := f.Space.Store32(addr, v)
		f.release()
		return err
	}
	switch act.Kind {
	case fault.DMAWriteDrop:
		return nil
	case fault.DMAIOVAUnmapped:
		return &Error{Op: Write, Addr: addr, Len: 4, Err: ErrUnmapped}
	case fault.DMAWriteTorn:
		var b [4]byte
		*(*uint32)(unsafePointer(&b)) = v
		n := cut(act.Int("bytes"), 4)
		_, err := f.Space.WriteAt(b[:n], addr)
		return err
	case fault.DMAWriteReorder:
		var b [4]byte
		*(*uint32)(unsafePointer(&b)) = v
		f.hold(b[:], addr)
		return nil
	}
	err := f.Space.Store32(addr, v)
	f.release()
	return err
}

// hold keeps a reordered write until the next write has landed; a write
// already held lands now (at most one is ever late).
func (f *faultSpace) hold(p []byte, addr uint64) {
	f.mu.Lock()
	prev := f.held
	f.held = &heldWrite{p: p, addr: addr}
	f.mu.Unlock()
	if prev != nil {
		f.Space.WriteAt(prev.p, prev.addr)
	}
}

// release lands a held write after the write that overtook it.
func (f *faultSpace) release() {
	f.mu.Lock()
	h := f.held
	f.held = nil
	f.mu.Unlock()
	if h != nil {
		f.Space.WriteAt(h.p, h.addr)
	}
}

// cut is the byte count a short or torn access keeps: n if 0 <= n < size,
// else half of size.
func cut(n int64, size int) int {
	if n >= 0 && n < int64(size) {
		return int(n)
	}
	return size / 2
}

func unsafePointer(b *[4]byte) unsafe.Pointer { return unsafe.Pointer(b) }
