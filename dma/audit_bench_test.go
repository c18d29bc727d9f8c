package dma

import (
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/dma/dmatest"
)

// BenchmarkAuditChunk is the audit's cost per 64 KiB data chunk (one
// tagged Copy between two regions, the unit a device moves between fence
// checks): impl=baseline is the same Copy with the audit off, impl=ours in
// observe mode; pt=4level adds the page-table oracle (A7) walking 16 pages.
func BenchmarkAuditChunk(b *testing.B) {
	const chunk = 64 << 10
	for _, pt := range []string{"none", "4level"} {
		for _, impl := range []string{"baseline", "ours"} {
			b.Run(fmt.Sprintf("pt=%s/impl=%s", pt, impl), func(b *testing.B) {
				m := NewMap(nil)
				defer m.Close()
				ram := dmatest.NewRAM(b, 8<<20)
				const base = 0x1000_0000
				if err := m.Add(Mapping{IOVA: base, Size: 8 << 20, Fd: ram.Fd(), Prot: ProtRead | ProtWrite}); err != nil {
					b.Fatal(err)
				}
				m.SetBusMaster(true)
				src, dst := uint64(base+1<<20), uint64(base+2<<20)
				pages := func(at uint64) []uint64 {
					var ps []uint64
					for i := range chunk / 4096 {
						ps = append(ps, at+uint64(i)*4096)
					}
					return ps
				}
				s := &fakeSource{regs: map[uint32]RegView{
					1: {Valid: true, Gen: 1, Read: true, PageShift: 12, Length: chunk, UserVA: 0x7f00_0000_0000, Pages: pages(src)},
					2: {Valid: true, Gen: 1, Write: true, PageShift: 12, Length: chunk, UserVA: 0x7f00_1000_0000, Pages: pages(dst)},
				}}
				if pt == "4level" {
					next := uint64(base + 4<<20)
					t := dmatest.NewPageTables(ram.Bytes(), base, 4, func() uint64 { next += 4096; return next - 4096 })
					for i := range uint64(chunk / 4096) {
						t.Map(0x7f00_0000_0000+i*4096, src+i*4096, 1, true)
						t.Map(0x7f00_1000_0000+i*4096, dst+i*4096, 1, true)
					}
					s.root = PTRoot{Addr: t.Root, Levels: 4}
				}
				mode := AuditObserve
				if impl == "baseline" {
					mode = AuditOff
				}
				a := NewAudit(m, mode, s, nil)
				defer a.Close()
				st := Tag{Kind: TagData, Region: 1, Gen: 1}
				dt := Tag{Kind: TagData, Region: 2, Gen: 1}
				buf := make([]byte, chunk)
				b.SetBytes(chunk)
				for b.Loop() {
					if _, err := Copy(a, dt, dst, a, st, src, chunk, buf); err != nil {
						b.Fatal(err)
					}
				}
				if c := a.Counters(); c.Violations != 0 {
					b.Fatalf("violations: %+v", c)
				}
			})
		}
	}
}
