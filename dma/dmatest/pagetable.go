package dmatest

import (
	"encoding/binary"
	"fmt"
)

// PageTables builds x86-64 page tables (4 or 5 levels) in guest memory,
// as a guest kernel would for a process: what the DMA audit's page-table
// oracle (A7) walks.
type PageTables struct {
	mem    []byte // guest RAM, mem[0] at guest address base
	base   uint64
	levels int
	alloc  func() uint64 // returns a zeroed 4 KiB-aligned guest page
	Root   uint64
}

// x86-64 entry bits.
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	pteUser     = 1 << 2
	ptePageSize = 1 << 7
	pfnMask     = 0x000f_ffff_ffff_f000
)

// NewPageTables allocates a root table with alloc; mem is guest RAM
// starting at guest address base.
func NewPageTables(mem []byte, base uint64, levels int, alloc func() uint64) *PageTables {
	if levels != 4 && levels != 5 {
		panic(fmt.Sprintf("dmatest: %d paging levels", levels))
	}
	pt := &PageTables{mem: mem, base: base, levels: levels, alloc: alloc}
	pt.Root = alloc()
	return pt
}

// PTRoot is the value of myrimx's PT_ROOT register: root | levels.
func (pt *PageTables) PTRoot() uint64 { return pt.Root | uint64(pt.levels) }

func (pt *PageTables) entry(table, idx uint64) []byte {
	off := table + idx*8 - pt.base
	return pt.mem[off : off+8]
}

// Map maps the page of va to the guest page pa with a leaf at level
// (1: 4 KiB, 2: 2 MiB, 3: 1 GiB; pa aligned to it), writable or not.
// Existing tables on the way are reused.
func (pt *PageTables) Map(va, pa uint64, level int, writable bool) {
	table := pt.Root
	for l := pt.levels; l > level; l-- {
		e := pt.entry(table, (va>>(12+9*uint(l-1)))&0x1ff)
		v := binary.LittleEndian.Uint64(e)
		if v&ptePresent == 0 || v&ptePageSize != 0 {
			v = pt.alloc() | ptePresent | pteWritable | pteUser
			binary.LittleEndian.PutUint64(e, v)
		}
		table = v & pfnMask
	}
	v := pa | ptePresent | pteUser
	if writable {
		v |= pteWritable
	}
	if level > 1 {
		v |= ptePageSize
	}
	binary.LittleEndian.PutUint64(pt.entry(table, (va>>(12+9*uint(level-1)))&0x1ff), v)
}

// Unmap clears the 4 KiB leaf of va (as munmap or MADV_DONTNEED does).
func (pt *PageTables) Unmap(va uint64) {
	table := pt.Root
	for l := pt.levels; l > 1; l-- {
		v := binary.LittleEndian.Uint64(pt.entry(table, (va>>(12+9*uint(l-1)))&0x1ff))
		if v&ptePresent == 0 {
			return
		}
		table = v & pfnMask
	}
	binary.LittleEndian.PutUint64(pt.entry(table, (va>>12)&0x1ff), 0)
}
