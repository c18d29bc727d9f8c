package guest

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BAR is a memory BAR mapped through sysfs resourceN. Register accesses go
// through Read32/Write32, which are single aligned 32-bit loads and stores
// (so the device sees exactly one access of that size).
type BAR struct {
	Mem []byte
}

// MapBAR maps BAR i of d (the whole BAR, read/write, shared).
func (d PCIDev) MapBAR(i int) (*BAR, error) {
	f, err := os.OpenFile(filepath.Join(d.Dir, fmt.Sprintf("resource%d", i)), os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return nil, fmt.Errorf("guest: map BAR%d: %w", i, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("guest: map BAR%d: %w", i, err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("guest: map BAR%d (%d bytes): %w", i, st.Size(), err)
	}
	return &BAR{Mem: mem}, nil
}

func (b *BAR) word(off uint64) *uint32 {
	if off%4 != 0 || off+4 > uint64(len(b.Mem)) {
		panic(fmt.Sprintf("guest: BAR access %#x outside %#x or misaligned", off, len(b.Mem)))
	}
	return (*uint32)(unsafe.Pointer(&b.Mem[off]))
}

// Read32 loads the 32-bit register at off.
func (b *BAR) Read32(off uint64) uint32 { return atomic.LoadUint32(b.word(off)) }

// Write32 stores v to the 32-bit register at off.
func (b *BAR) Write32(off uint64, v uint32) { atomic.StoreUint32(b.word(off), v) }

// Write64 stores v as two 32-bit stores, low half first.
func (b *BAR) Write64(off uint64, v uint64) {
	b.Write32(off, uint32(v))
	b.Write32(off+4, uint32(v>>32))
}

// Close unmaps the BAR.
func (b *BAR) Close() error { return unix.Munmap(b.Mem) }

// PageSize is the guest page size.
const PageSize = 4096

// DMABuffer is locked, populated anonymous memory whose pages' guest
// physical addresses are known, for programming a device's DMA engine.
// Pages need not be physically contiguous: use one page per DMA range, or
// check Contiguous.
type DMABuffer struct {
	Mem   []byte
	phys  []uint64
	pages int
}

// AllocDMA allocates pages locked pages and looks up their physical
// addresses in /proc/self/pagemap (root only: others read PFN 0).
func AllocDMA(pages int) (*DMABuffer, error) {
	mem, err := unix.Mmap(-1, 0, pages*PageSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE|unix.MAP_LOCKED)
	if err != nil {
		return nil, fmt.Errorf("guest: alloc DMA buffer: %w", err)
	}
	if err := unix.Mlock(mem); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("guest: mlock DMA buffer: %w", err)
	}
	// Locked pages may still be migrated by compaction unless this is off.
	_ = os.WriteFile("/proc/sys/vm/compact_unevictable_allowed", []byte("0\n"), 0o644)
	for i := range mem {
		mem[i] = 0
	}
	b := &DMABuffer{Mem: mem, pages: pages}
	if err := b.lookup(); err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	return b, nil
}

func (b *DMABuffer) lookup() error {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	defer f.Close()
	base := uintptr(unsafe.Pointer(&b.Mem[0]))
	b.phys = make([]uint64, b.pages)
	for i := 0; i < b.pages; i++ {
		var e [8]byte
		vpn := (base + uintptr(i*PageSize)) / PageSize
		if _, err := f.ReadAt(e[:], int64(vpn*8)); err != nil {
			return fmt.Errorf("guest: pagemap: %w", err)
		}
		v := binary.LittleEndian.Uint64(e[:])
		if v&(1<<63) == 0 {
			return fmt.Errorf("guest: pagemap: page %d not present", i)
		}
		pfn := v & (1<<55 - 1)
		if pfn == 0 {
			return fmt.Errorf("guest: pagemap: PFN hidden (not root?)")
		}
		b.phys[i] = pfn * PageSize
	}
	return nil
}

// Page returns page i of the buffer.
func (b *DMABuffer) Page(i int) []byte { return b.Mem[i*PageSize : (i+1)*PageSize] }

// Phys returns the guest physical address of page i.
func (b *DMABuffer) Phys(i int) uint64 { return b.phys[i] }

// Contiguous reports whether pages i..j-1 are physically contiguous.
func (b *DMABuffer) Contiguous(i, j int) bool {
	for k := i + 1; k < j; k++ {
		if b.phys[k] != b.phys[k-1]+PageSize {
			return false
		}
	}
	return true
}

// Close unmaps the buffer.
func (b *DMABuffer) Close() error { return unix.Munmap(b.Mem) }
