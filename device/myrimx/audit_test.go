package myrimx_test

import (
	"bytes"
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
)

// TestAuditStaleUserCache is scenario 15 of §6.10 end to end: a program
// keeps a VA-keyed registration cache without a notifier, munmaps its
// buffer and maps new memory at the same VA, then reuses the cached handle
// for a RECV. The device still holds the old pages (the handle is VALID);
// only the page tables tell the truth. With PT_ROOT given, the page-table
// oracle (A7) reports it: in observe mode the data lands in the orphaned
// pages, in enforce mode the RECV completes DMA_FAULT and nothing lands.
// Before the bug, the same traffic with correct page tables has 0
// violations.
func TestAuditStaleUserCache(t *testing.T) {
	for _, mode := range []dma.AuditMode{dma.AuditObserve, dma.AuditEnforce} {
		t.Run(mode.String(), func(t *testing.T) {
			p := newPair(t, mode)
			p.violations = true
			const size = 3 * 4096
			src := p.a.AllocBuffer(size, false)
			dst := p.b.AllocBuffer(size, true)
			data := pattern(size, 11)
			p.a.Fill(src, 0, data)
			pt := dmatest.NewPageTables(p.b.RAM.Bytes(), p.b.Base, 4, func() uint64 { return p.b.Alloc(4096, 4096) })
			for i, pg := range dst.Pages {
				pt.Map(dst.UserVA+uint64(i)*4096, pg, 1, true)
			}
			p.b.Write64(p.eb.Reg(myrimx.EPPTRoot), pt.PTRoot())
			p.reg(p.ea, 1, 1, myrimx.AccessSendSrc, src)
			p.reg(p.eb, 1, 1, myrimx.AccessRecvDst, dst)
			nic, epi := p.eb.Addr()
			send := func() mxtest.Event {
				r := p.eb.Post(mxtest.RecvCmd(1, 1, 0, size, 0, 0, 0))[0]
				p.ea.Post(mxtest.SendCmd(1, 1, 0, size, nic, epi, 0, 0))
				ev, err := p.eb.WaitSeq(r)
				if err != nil {
					t.Fatal(err)
				}
				return ev
			}
			if ev := send(); ev.Status != myrimx.StatusSuccess {
				t.Fatalf("correct RECV: %v", ev)
			}
			if c := p.b.Dev.AuditCounters(); c.Violations != 0 {
				t.Fatalf("correct traffic: %+v", c)
			}
			// munmap + mmap at the same VA: new pages, no DEREG.
			fresh := p.b.AllocBuffer(size, false)
			for i, pg := range fresh.Pages {
				pt.Map(dst.UserVA+uint64(i)*4096, pg, 1, true)
			}
			ev := send()
			c := p.b.Dev.AuditCounters()
			if c.PerCheck["A7-page-table"] == 0 {
				t.Errorf("A7 did not fire: %+v", c)
			}
			if mode == dma.AuditEnforce {
				if ev.Status != myrimx.StatusDMAFault || ev.XferLen != 0 {
					t.Errorf("enforce: RECV %v, want DMA_FAULT with nothing moved", ev)
				}
			} else if ev.Status != myrimx.StatusSuccess {
				t.Errorf("observe: RECV %v, want it to go through as buggy hardware would", ev)
			}
			if got := p.b.Read(fresh, 0, size); !bytes.Equal(got, make([]byte, size)) {
				t.Error("the new buffer at the VA changed: the device wrote where it was not registered")
			}
		})
	}
}
