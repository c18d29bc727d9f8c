package myritest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Memory is the guest RAM the fake driver allocates its DMA buffers in: a
// byte slice the device reaches at bus address (IOVA) base+offset, such as
// a dmatest.RAM mapped into a vfio-user client at base.
//
// It is a first-fit allocator of zeroed, aligned blocks. Words the device
// writes while the driver polls them (command responses, rx_done slots,
// the interrupt block) are read with atomic loads. Memory is safe for
// concurrent use; the device may write the bytes at any time.
type Memory struct {
	b    []byte
	base uint64

	mu     sync.Mutex
	free   []span         // sorted by offset, coalesced
	allocs map[uint64]int // offset -> size of live blocks
	inUse  int
}

type span struct{ off, size int }

// ErrNoMemory is returned when an allocation does not fit.
var ErrNoMemory = errors.New("myritest: out of guest memory")

// NewMemory returns an allocator over b, which the device sees at bus
// address base. base and len(b) should be page-aligned.
func NewMemory(b []byte, base uint64) *Memory {
	m := &Memory{b: b, base: base, allocs: make(map[uint64]int)}
	if len(b) > 0 {
		m.free = []span{{0, len(b)}}
	}
	return m
}

// Base returns the bus address of the first byte.
func (m *Memory) Base() uint64 { return m.base }

// Size returns the size of the memory in bytes.
func (m *Memory) Size() int { return len(m.b) }

// InUse returns the bytes currently allocated: a leak check compares it
// before and after a sequence that should free everything it allocated.
func (m *Memory) InUse() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inUse
}

// Alloc returns the bus address of size zeroed bytes aligned to align (a
// power of two; 0 means 8).
func (m *Memory) Alloc(size, align int) (uint64, error) {
	if align == 0 {
		align = 8
	}
	if size <= 0 || align&(align-1) != 0 {
		return 0, fmt.Errorf("myritest: alloc %d bytes aligned %d: bad arguments", size, align)
	}
	size = (size + 7) &^ 7
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.free {
		// Alignment is of the bus address, not of the offset.
		addr := (m.base + uint64(s.off) + uint64(align) - 1) &^ (uint64(align) - 1)
		start := int(addr - m.base)
		if start+size > s.off+s.size {
			continue
		}
		var repl []span
		if start > s.off {
			repl = append(repl, span{s.off, start - s.off})
		}
		if end := start + size; end < s.off+s.size {
			repl = append(repl, span{end, s.off + s.size - end})
		}
		m.free = append(m.free[:i], append(repl, m.free[i+1:]...)...)
		m.allocs[uint64(start)] = size
		m.inUse += size
		clear(m.b[start : start+size])
		return addr, nil
	}
	return 0, fmt.Errorf("myritest: alloc %d bytes aligned %d (%d of %d in use): %w", size, align, m.inUse, len(m.b), ErrNoMemory)
}

// Free releases the block at addr, which Alloc returned.
func (m *Memory) Free(addr uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	off := addr - m.base
	size, ok := m.allocs[off]
	if addr < m.base || !ok {
		return fmt.Errorf("myritest: free %#x: not an allocated block", addr)
	}
	delete(m.allocs, off)
	m.inUse -= size
	o := int(off)
	i := sort.Search(len(m.free), func(i int) bool { return m.free[i].off > o })
	m.free = append(m.free, span{})
	copy(m.free[i+1:], m.free[i:])
	m.free[i] = span{o, size}
	// Coalesce with the neighbours.
	if i+1 < len(m.free) && m.free[i].off+m.free[i].size == m.free[i+1].off {
		m.free[i].size += m.free[i+1].size
		m.free = append(m.free[:i+1], m.free[i+2:]...)
	}
	if i > 0 && m.free[i-1].off+m.free[i-1].size == m.free[i].off {
		m.free[i-1].size += m.free[i].size
		m.free = append(m.free[:i], m.free[i+1:]...)
	}
	return nil
}

// Bytes returns the n bytes at bus address addr: the guest's view, which
// the device may be writing.
func (m *Memory) Bytes(addr uint64, n int) ([]byte, error) {
	if addr < m.base || n < 0 || addr-m.base > uint64(len(m.b)) || uint64(n) > uint64(len(m.b))-(addr-m.base) {
		return nil, fmt.Errorf("myritest: %d bytes at %#x: outside guest memory [%#x, %#x)", n, addr, m.base, m.base+uint64(len(m.b)))
	}
	o := addr - m.base
	return m.b[o : o+uint64(n) : o+uint64(n)], nil
}

// mustBytes is Bytes for ranges the driver allocated itself.
func (m *Memory) mustBytes(addr uint64, n int) []byte {
	b, err := m.Bytes(addr, n)
	if err != nil {
		panic(err) // the driver's own buffer: a bug in this package
	}
	return b
}

// word returns the aligned 32-bit word at addr for atomic access.
func (m *Memory) word(addr uint64) *uint32 {
	if addr&3 != 0 {
		panic(fmt.Sprintf("myritest: unaligned word at %#x", addr))
	}
	return (*uint32)(unsafe.Pointer(&m.mustBytes(addr, 4)[0]))
}

// loadBE32 atomically loads the big-endian word at addr.
func (m *Memory) loadBE32(addr uint64) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], atomic.LoadUint32(m.word(addr)))
	return binary.BigEndian.Uint32(b[:])
}

// storeBE32 atomically stores v big-endian at addr.
func (m *Memory) storeBE32(addr uint64, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	atomic.StoreUint32(m.word(addr), binary.NativeEndian.Uint32(b[:]))
}
