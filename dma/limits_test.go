package dma

import (
	"errors"
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/dma/dmatest"
	"golang.org/x/sys/unix"
)

func newLimitedMap(t testing.TB, l Limits) *Map {
	t.Helper()
	m := NewMapLimits(nil, l)
	m.SetBusMaster(true)
	t.Cleanup(func() { m.Close() })
	return m
}

// sparseMemfd is a memfd of size bytes with no pages behind it.
func sparseMemfd(t testing.TB, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("dma-sparse", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		t.Fatalf("ftruncate %d: %v", size, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func dup(t testing.TB, fd int) int {
	t.Helper()
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return nfd
}

func wantLimit(t *testing.T, err error, errno unix.Errno) {
	t.Helper()
	if !errors.Is(err, ErrLimit) || !errors.Is(err, errno) {
		t.Fatalf("error %v, want ErrLimit with %v", err, errno)
	}
}

// Every per-client limit refuses with its errno, leaves the earlier maps
// working, and frees room again when maps go.
func TestLimits(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x10000)
	t.Run("maps", func(t *testing.T) {
		m := newLimitedMap(t, Limits{MaxMaps: 3})
		for i := range 3 {
			mustAdd(t, m, Mapping{IOVA: uint64(i) << 20, Size: 0x1000, Fd: -1, Prot: rw})
		}
		wantLimit(t, m.Add(Mapping{IOVA: 3 << 20, Size: 0x1000, Fd: ram.Fd(), Prot: rw}), unix.ENOSPC)
		mustRemove(t, m, 0, 0x1000)
		mustAdd(t, m, Mapping{IOVA: 3 << 20, Size: 0x1000, Fd: ram.Fd(), Prot: rw})
		if m.Refusals() != 1 {
			t.Errorf("Refusals = %d, want 1", m.Refusals())
		}
	})
	t.Run("mmaps", func(t *testing.T) {
		m := newLimitedMap(t, Limits{MaxMmaps: 2})
		mustAdd(t, m, Mapping{IOVA: 0, Size: 0x1000, Fd: ram.Fd(), Prot: rw})
		mustAdd(t, m, Mapping{IOVA: 0x1000, Size: 0x1000, Offset: 0x1000, Fd: ram.Fd(), Prot: rw})
		wantLimit(t, m.Add(Mapping{IOVA: 0x2000, Size: 0x1000, Offset: 0x2000, Fd: ram.Fd(), Prot: rw}), unix.ENOSPC)
		// Maps without an fd cost no mmap.
		mustAdd(t, m, Mapping{IOVA: 0x2000, Size: 0x1000, Fd: -1, Prot: rw})
		if _, err := m.WriteAt([]byte("ok"), 0x1000); err != nil {
			t.Errorf("earlier map after a refusal: %v", err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		m := newLimitedMap(t, Limits{MaxBytes: 0x3000})
		mustAdd(t, m, Mapping{IOVA: 0, Size: 0x2000, Fd: ram.Fd(), Prot: rw})
		// 0x800 bytes round to a page, which no longer fits with 0x2000.
		mustAdd(t, m, Mapping{IOVA: 0x10000, Size: 0x800, Offset: 0x2800, Fd: ram.Fd(), Prot: rw})
		wantLimit(t, m.Add(Mapping{IOVA: 0x20000, Size: 0x100, Offset: 0x4000, Fd: ram.Fd(), Prot: rw}), unix.ENOMEM)
	})
	t.Run("files", func(t *testing.T) {
		other := dmatest.NewRAM(t, 0x1000)
		m := newLimitedMap(t, Limits{MaxFiles: 1})
		mustAdd(t, m, Mapping{IOVA: 0, Size: 0x1000, Fd: ram.Fd(), Prot: rw})
		mustAdd(t, m, Mapping{IOVA: 0x1000, Size: 0x1000, Offset: 0x1000, Fd: ram.Fd(), Prot: rw})
		wantLimit(t, m.Add(Mapping{IOVA: 0x2000, Size: 0x1000, Fd: other.Fd(), Prot: rw}), unix.ENOSPC)
		mustRemove(t, m, 0, 0x2000)
		mustAdd(t, m, Mapping{IOVA: 0x2000, Size: 0x1000, Fd: other.Fd(), Prot: rw})
	})
}

// The process budget is shared: one map using it up refuses the next map
// of another, and Close gives everything back.
func TestBudgetShared(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x10000)
	b := NewBudget(3, 0x4000)
	a := newLimitedMap(t, Limits{Budget: b})
	c := newLimitedMap(t, Limits{Budget: b})
	mustAdd(t, a, Mapping{IOVA: 0, Size: 0x1000, Fd: ram.Fd(), Prot: rw})
	mustAdd(t, a, Mapping{IOVA: 0x1000, Size: 0x1000, Offset: 0x1000, Fd: ram.Fd(), Prot: rw})
	mustAdd(t, c, Mapping{IOVA: 0, Size: 0x1000, Fd: ram.Fd(), Prot: rw})
	wantLimit(t, c.Add(Mapping{IOVA: 0x1000, Size: 0x1000, Fd: ram.Fd(), Prot: rw}), unix.ENOSPC)
	a.Close()
	wantLimit(t, c.Add(Mapping{IOVA: 0x1000, Size: 0x8000, Fd: ram.Fd(), Prot: rw}), unix.ENOMEM)
	mustAdd(t, c, Mapping{IOVA: 0x1000, Size: 0x3000, Fd: ram.Fd(), Prot: rw})
	c.Close()
	if st := b.Stats(); st.Mmaps != 0 || st.Bytes != 0 || st.Refusals != 2 {
		t.Errorf("budget after both closed: %+v, want empty with 2 refusals", st)
	}
}

// A 4 KiB map of a 40 TiB sparse memfd costs 4 KiB of address space, and a
// map of the whole file is refused by the bytes limit, not attempted.
func TestSparseHugeFile(t *testing.T) {
	const huge = 40 << 40
	fd := sparseMemfd(t, huge)
	m := newMap(t)
	mustAdd(t, m, Mapping{IOVA: 0x1000, Size: 0x1000, Offset: huge / 2, Fd: dup(t, fd), Prot: rw})
	if u := m.Usage(); u.Bytes != 0x1000 || u.Mmaps != 1 {
		t.Errorf("usage %+v, want one mmap of 4 KiB", u)
	}
	if _, err := m.WriteAt([]byte("deep"), 0x1000); err != nil {
		t.Fatal(err)
	}
	wantLimit(t, m.Add(Mapping{IOVA: 1 << 50, Size: huge, Fd: dup(t, fd), Prot: rw}), unix.ENOMEM)
}

// BenchmarkAddAtLimit measures one DMA_MAP (fd-less, in the worst place:
// in front of every other map) and its DMA_UNMAP in a map that already
// holds n maps. The baseline is the same pair in an empty map; the sorted
// slice costs a memmove of n pointers per insert and a binary search per
// lookup.
func BenchmarkAddAtLimit(b *testing.B) {
	for _, n := range []int{0, 1024, DefaultMaxMaps - 1} {
		impl := "ours"
		if n == 0 {
			impl = "baseline"
		}
		b.Run(fmt.Sprintf("impl=%s/maps=%d", impl, n), func(b *testing.B) {
			m := NewMap(nil)
			defer m.Close()
			for i := range n {
				if err := m.Add(Mapping{IOVA: uint64(i+1) << 12, Size: 0x1000, Fd: -1, Prot: rw}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if err := m.Add(Mapping{IOVA: 0, Size: 0x1000, Fd: -1, Prot: rw}); err != nil {
					b.Fatal(err)
				}
				if err := m.Remove(0, 0x1000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
