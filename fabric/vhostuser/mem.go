package vhostuser

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// memory is the guest RAM the front end shared: each region mmapped from
// its fd. Lookups are bounds-checked: an address or length outside every
// region is an error, never an access.
type memory struct {
	regions []mappedRegion
}

type mappedRegion struct {
	Region
	mapping []byte // the whole mmap, from offset 0 of the fd
	data    []byte // the region itself: mapping[MmapOffset:]
}

// mapMemory maps every region; on error nothing stays mapped. The fds are
// the caller's to close (a mapping outlives its fd).
func mapMemory(rs []Region, fds []int) (*memory, error) {
	m := &memory{}
	for i, r := range rs {
		size := r.MmapOffset + r.Size
		b, err := unix.Mmap(fds[i], 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			m.unmap()
			return nil, fmt.Errorf("vhostuser: mmap region %d (%d bytes): %w", i, size, err)
		}
		m.regions = append(m.regions, mappedRegion{Region: r, mapping: b, data: b[r.MmapOffset:size:size]})
	}
	return m, nil
}

func (m *memory) unmap() {
	if m == nil {
		return
	}
	for _, r := range m.regions {
		unix.Munmap(r.mapping)
	}
	m.regions = nil
}

// guest returns the n bytes at guest physical address gpa, if one region
// holds them all.
func (m *memory) guest(gpa uint64, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if gpa >= r.GuestPhys && gpa-r.GuestPhys < r.Size && n <= r.Size-(gpa-r.GuestPhys) {
			off := gpa - r.GuestPhys
			return r.data[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("vhostuser: guest range %d@%#x outside guest memory", n, gpa)
}

// user returns the n bytes at the front end's virtual address va (ring
// addresses are given that way).
func (m *memory) user(va uint64, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if va >= r.UserAddr && va-r.UserAddr < r.Size && n <= r.Size-(va-r.UserAddr) {
			off := va - r.UserAddr
			return r.data[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("vhostuser: front-end range %d@%#x outside guest memory", n, va)
}
