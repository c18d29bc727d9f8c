package dma

import (
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/dma/dmatest"
)

// BenchmarkCopy compares DMA through Map.ReadAt/WriteAt with a plain copy
// from and to the same shared memory, in the same run: the difference is
// what the map costs (lookup, lock, gates, fault guard) per access.
func BenchmarkCopy(b *testing.B) {
	const iova = 0x1_0000_0000
	ram := dmatest.NewRAM(b, 2<<20)
	m := NewMap(nil)
	m.SetBusMaster(true)
	defer m.Close()
	if err := m.Add(Mapping{IOVA: iova, Size: 2 << 20, Fd: ram.Fd(), Prot: rw}); err != nil {
		b.Fatal(err)
	}
	guest := ram.Bytes()
	buf := make([]byte, 1<<20)
	const off = 0x1000
	for _, size := range []int{64, 1500, 64 << 10, 1 << 20} {
		p := buf[:size]
		b.Run(fmt.Sprintf("size=%d/dir=read/impl=copy", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(p, guest[off:])
			}
		})
		b.Run(fmt.Sprintf("size=%d/dir=read/impl=dma", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := m.ReadAt(p, iova+off); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("size=%d/dir=write/impl=copy", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(guest[off:], p)
			}
		})
		b.Run(fmt.Sprintf("size=%d/dir=write/impl=dma", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := m.WriteAt(p, iova+off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLookup reads 8 bytes from maps spread over the IOVA space, with
// 1 and with 4096 maps (one 4 KiB page each, with holes between them, all
// in one memfd): sort.Search keeps the lookup logarithmic.
func BenchmarkLookup(b *testing.B) {
	for _, maps := range []int{1, 4096} {
		b.Run(fmt.Sprintf("maps=%d", maps), func(b *testing.B) {
			ram := dmatest.NewRAM(b, maps*0x1000)
			m := NewMap(nil)
			m.SetBusMaster(true)
			defer m.Close()
			for i := range maps {
				mp := Mapping{IOVA: uint64(i) * 0x2000, Size: 0x1000, Offset: uint64(i) * 0x1000, Fd: ram.Fd(), Prot: rw}
				if err := m.Add(mp); err != nil {
					b.Fatal(err)
				}
			}
			// A fixed pseudo-random walk over the maps.
			addrs := make([]uint64, 1024)
			x := uint32(1)
			for i := range addrs {
				x = x*1664525 + 1013904223
				addrs[i] = uint64(int(x>>8)%maps)*0x2000 + uint64(x%0xff8)
			}
			var p [8]byte
			// Fault every page into our mapping first: the first touch of a
			// page costs microseconds and is not what this measures.
			for i := range maps {
				if _, err := m.ReadAt(p[:], uint64(i)*0x2000); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				if _, err := m.ReadAt(p[:], addrs[i%len(addrs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkRun reads 64 bytes per op through a Run of perRun accesses
// (Begin, the reads, End) and, for comparison, through the Map itself:
// what the read lock costs per access, and what a run saves of it.
func BenchmarkRun(b *testing.B) {
	const iova = 0x1_0000_0000
	ram := dmatest.NewRAM(b, 1<<20)
	m := NewMap(nil)
	m.SetBusMaster(true)
	defer m.Close()
	if err := m.Add(Mapping{IOVA: iova, Size: 1 << 20, Fd: ram.Fd(), Prot: rw}); err != nil {
		b.Fatal(err)
	}
	var p [64]byte
	b.Run("impl=map", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.ReadAt(p[:], iova+0x1000); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, perRun := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("impl=run/per-run=%d", perRun), func(b *testing.B) {
			var run Run
			i := 0
			s := run.Begin(m)
			for b.Loop() {
				if _, err := s.ReadAt(p[:], iova+0x1000); err != nil {
					b.Fatal(err)
				}
				if i++; i == perRun {
					run.End()
					s, i = run.Begin(m), 0
				}
			}
			run.End()
		})
	}
}
