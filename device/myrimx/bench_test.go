package myrimx_test

import (
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
)

// BenchmarkMXSendRecv is SEND/RECV throughput between two NICs (audit
// off), a window of up to 64 messages (16 MiB) in flight, the driver
// polling its event queue, against impl=baseline: a plain
// copy of the same bytes between the same guest memories in the same
// chunks (at most 64 KiB, never across a page run). The goal is 0.8x of
// the baseline from 64 KiB messages.
func BenchmarkMXSendRecv(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		window := min(64, 16<<20/size)
		for _, impl := range []string{"baseline", "ours"} {
			b.Run(fmt.Sprintf("size=%d/impl=%s", size, impl), func(b *testing.B) {
				hub := myrimx.NewHub()
				a := mxtest.NewNIC(b, hub, mxtest.Options{Name: "ba", Audit: dma.AuditOff, RAMSize: 40 << 20})
				c := mxtest.NewNIC(b, hub, mxtest.Options{Name: "bb", Audit: dma.AuditOff, RAMSize: 40 << 20, Base: 3 << 30})
				ea, eb := a.Open(0, 8, 10), c.Open(0, 8, 10)
				src := a.AllocBuffer(size*window, false)
				dst := c.AllocBuffer(size*window, false)
				a.Fill(src, 0, pattern(size*window, 1))
				b.SetBytes(int64(size))
				if impl == "baseline" {
					sb := a.Bytes(src.Pages[0], size*window)
					db := c.Bytes(dst.Pages[0], size*window)
					i := 0
					for b.Loop() {
						o := (i % window) * size
						for k := 0; k < size; k += myrimx.Chunk {
							n := min(myrimx.Chunk, size-k)
							copy(db[o+k:o+k+n], sb[o+k:o+k+n])
						}
						i++
					}
					return
				}
				_, ev, err := ea.Register(1, 1, myrimx.AccessSendSrc, src)
				must(b, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
				_, ev, err = eb.Register(1, 1, myrimx.AccessRecvDst, dst)
				must(b, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
				nic, epi := eb.Addr()
				recvs := make([]mxtest.Cmd, window)
				sends := make([]mxtest.Cmd, window)
				for w := range window {
					recvs[w] = mxtest.RecvCmd(1, 1, uint64(w*size), uint32(size), 0, 0, 0)
					sends[w] = mxtest.SendCmd(1, 1, uint64(w*size), uint32(size), nic, epi, 0, 0)
				}
				left := 0
				for b.Loop() {
					if left == 0 {
						// A new window: post it whole, then wait for its last message.
						rs := eb.Post(recvs...)
						ea.Post(sends...)
						last := rs[window-1]
						if _, err := eb.Wait(func(ev mxtest.Event) bool { return ev.Seq == last }); err != nil {
							b.Fatal(err)
						}
						eb.Drain()
						ea.Drain()
						left = window
					}
					left--
				}
			})
		}
	}
}

// BenchmarkMXReg is REG of 1 GiB in 4 KiB pages (262144 page addresses)
// and its DEREG, against impl=baseline: reading the same page list from
// guest memory into a fresh slice, the least a REG can do. B/op is the
// device's memory per registration.
func BenchmarkMXReg(b *testing.B) {
	const gib = 1 << 30
	for _, impl := range []string{"baseline", "ours"} {
		b.Run("size=1GiB/impl="+impl, func(b *testing.B) {
			hub := myrimx.NewHub()
			n := mxtest.NewNIC(b, hub, mxtest.Options{Name: "breg", Audit: dma.AuditOff, RAMSize: gib + 8<<20})
			e := n.Open(0, 8, 10)
			e.Spin = true
			buf := mxtest.Buffer{Length: gib}
			for i := range gib / 4096 {
				buf.Pages = append(buf.Pages, n.Base+uint64(i)*4096)
			}
			list := n.Alloc(8*len(buf.Pages), 8)
			for i, p := range buf.Pages {
				n.ChangePageList(list, i, p)
			}
			if impl == "baseline" {
				raw := n.Bytes(list, 8*len(buf.Pages))
				for b.Loop() {
					pages := make([]uint64, len(buf.Pages))
					for i := range pages {
						pages[i] = uint64(raw[8*i]) | uint64(raw[8*i+1])<<8 | uint64(raw[8*i+2])<<16 | uint64(raw[8*i+3])<<24 |
							uint64(raw[8*i+4])<<32 | uint64(raw[8*i+5])<<40 | uint64(raw[8*i+6])<<48 | uint64(raw[8*i+7])<<56
					}
					if pages[len(pages)-1] != buf.Pages[len(pages)-1] {
						b.Fatal("decode")
					}
				}
				return
			}
			gen := uint32(0)
			for b.Loop() {
				gen++
				ev, err := e.Do(mxtest.RegCmd(1, gen, myrimx.AccessSendSrc|myrimx.AccessRecvDst, buf, list))
				must(b, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
				ev, err = e.Do(mxtest.DeregCmd(1, gen, myrimx.ReasonUser))
				must(b, ev, err, myrimx.EvtDeregDone, myrimx.StatusSuccess)
			}
		})
	}
}
