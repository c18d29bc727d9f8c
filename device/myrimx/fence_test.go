package myrimx_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/leaktest"
)

const canaryByte = 0xcc

// TestFenceDeregRacingSend is acceptance 2: a DEREG of the receive region
// races a 16 MiB SEND in flight, 1000 times (100 with -short), spread
// over lanes (endpoint pairs running at once; one, since more only add
// contention on a 2-core machine). After
// DEREG_DONE not one byte reaches the region's pages: each receive region
// is 4096 pages of a block with an unregistered canary page after every
// 64 (inside) and canary pages on both sides (around); every byte past
// the transferred prefix is still canary. The transfer's completions come
// before DEREG_DONE, REGION_INVALIDATED (or SUCCESS when it won the
// race), with the exact bytes that landed.
func TestFenceDeregRacingSend(t *testing.T) {
	leaktest.Check(t)
	const lanes = 1
	iters := 1000
	if testing.Short() {
		iters = 100
	}
	start := time.Now()
	hub := myrimx.NewHub()
	a := mxtest.NewNIC(t, hub, mxtest.Options{Name: "fa", Audit: dma.AuditObserve, RAMSize: 24 << 20})
	b := mxtest.NewNIC(t, hub, mxtest.Options{Name: "fb", Audit: dma.AuditObserve, Base: 3 << 30, RAMSize: 72 << 20})

	const size = 16 << 20
	const pages = size / 4096
	src := a.AllocBuffer(size, false)
	data := pattern(size, 4)
	for i, c := range data {
		if c == canaryByte {
			data[i] = ^c
		}
	}
	a.Fill(src, 0, data)
	// Compare against guest memory, not the Go heap: the race detector
	// shadows heap bytes, which would make every comparison cost 8x.
	data = a.Bytes(src.Pages[0], size)
	canary := b.Bytes(b.Alloc(4096, 4096), 4096)
	copy(canary, bytes.Repeat([]byte{canaryByte}, 4096))

	type lane struct {
		ea, eb           *mxtest.Endpoint
		dst              mxtest.Buffer
		img              []byte
		blockPages       int
		cut, whole, none int
	}
	ls := make([]*lane, lanes)
	for l := range lanes {
		ln := &lane{ea: a.Open(l, 8, 10), eb: b.Open(l, 8, 10)}
		_, ev, err := ln.ea.Register(1, 1, myrimx.AccessSendSrc, src)
		must(t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
		// The receive block: [canary][64 region pages][canary]...[canary].
		ln.blockPages = 1 + pages + pages/64
		block := b.Alloc(ln.blockPages*4096, 4096)
		ln.img = b.Bytes(block, ln.blockPages*4096)
		for i := range ln.img {
			ln.img[i] = canaryByte
		}
		ln.dst = mxtest.Buffer{Length: size, UserVA: 0x7f12_0000_0000}
		for i := range pages {
			ln.dst.Pages = append(ln.dst.Pages, block+uint64(1+i+i/64)*4096)
		}
		ls[l] = ln
	}

	run := func(l int, ln *lane) error {
		ea, eb, dst, img := ln.ea, ln.eb, ln.dst, ln.img
		nic, epi := eb.Addr()
		rng := rand.New(rand.NewPCG(5, uint64(l)))
		for it := l; it < iters; it += lanes {
			gen := uint32(it + 1)
			_, ev, err := eb.Register(2, gen, myrimx.AccessRecvDst, dst)
			if err != nil || ev.Status != myrimx.StatusSuccess {
				return fmt.Errorf("iteration %d: REG %v %v", it, ev, err)
			}
			rs := eb.Post(mxtest.RecvCmd(2, gen, 0, size, 0, 0, 0))[0]
			// FENCEs make sure the RECV is posted and the SEND matched it (a's
			// worker moves the transfer, b's executes the DEREG: two goroutines).
			if err := eb.Fence(uint64(it + 1)); err != nil {
				return err
			}
			ss := ea.Post(mxtest.SendCmd(1, 1, 0, size, nic, epi, 0, uint64(it)))[0]
			if err := ea.Fence(uint64(it + 1)); err != nil {
				return err
			}
			// Let the transfer get somewhere: 0 to ~2 ms.
			if d := rng.IntN(2200); d > 200 {
				time.Sleep(time.Duration(d) * time.Microsecond)
			}
			ds := eb.Post(mxtest.DeregCmd(2, gen, myrimx.ReasonUnmap))[0]
			dev, err := eb.WaitSeq(ds)
			if err != nil || dev.Type != myrimx.EvtDeregDone || dev.Status != myrimx.StatusSuccess {
				return fmt.Errorf("iteration %d: DEREG %v %v", it, dev, err)
			}
			// The receive completed before DEREG_DONE: it is already polled.
			found := false
			for _, e := range eb.Pending() {
				found = found || e.Seq == rs
			}
			if !found {
				return fmt.Errorf("iteration %d: RECV_DONE not before DEREG_DONE (pending %v)", it, eb.Pending())
			}
			rev, _ := eb.WaitSeq(rs)
			sev, err := ea.WaitSeq(ss)
			if err != nil {
				return err
			}
			xfer := int(rev.XferLen)
			switch {
			case xfer == size:
				ln.whole++
				if rev.Status != myrimx.StatusSuccess || sev.Status != myrimx.StatusSuccess {
					return fmt.Errorf("iteration %d: whole transfer but %v / %v", it, rev, sev)
				}
			case rev.Status != myrimx.StatusRegionInvalidated || sev.Status != myrimx.StatusRegionInvalidated:
				return fmt.Errorf("iteration %d: cut transfer completed %v / %v, want REGION_INVALIDATED", it, rev, sev)
			case xfer == 0:
				ln.none++
			default:
				ln.cut++
			}
			if sev.XferLen != rev.XferLen {
				return fmt.Errorf("iteration %d: SEND_DONE says %d bytes, RECV_DONE %d", it, sev.XferLen, rev.XferLen)
			}
			// The image: region bytes [0, xfer) hold the data, everything else
			// (the rest of the region, the canary pages) is untouched.
			for pg := range ln.blockPages {
				got := img[pg*4096 : (pg+1)*4096]
				want := canary
				if pg > 0 && (pg-1)%65 != 64 {
					ri := (pg-1)/65*64 + (pg-1)%65 // region page index
					lo := ri * 4096
					if lo < xfer {
						n := min(4096, xfer-lo)
						if !bytes.Equal(got[:n], data[lo:lo+n]) {
							return fmt.Errorf("iteration %d: region page %d holds wrong data", it, ri)
						}
						got, want = got[n:], canary[n:]
					}
				}
				if !bytes.Equal(got, want) {
					return fmt.Errorf("iteration %d: block page %d changed past the %d bytes transferred (DEREG_DONE %v)", it, pg, xfer, dev)
				}
			}
			// Put the canaries back where the data went.
			for lo := 0; lo < xfer; lo += 4096 {
				copy(b.Bytes(dst.Pages[lo/4096], 4096), canary)
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, lanes)
	for l, ln := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[l] = run(l, ln)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var cut, whole, none int
	for _, ln := range ls {
		cut, whole, none = cut+ln.cut, whole+ln.whole, none+ln.none
	}
	t.Logf("%d iterations in %d lanes in %v: %d cut mid-transfer, %d before the first byte, %d whole",
		iters, lanes, time.Since(start).Round(time.Millisecond), cut, none, whole)
	if cut == 0 {
		t.Errorf("no DEREG landed mid-transfer in %d iterations: the race was not exercised", iters)
	}
	for _, n := range []*mxtest.NIC{a, b} {
		if c := n.Dev.AuditCounters(); c.Violations != 0 {
			t.Errorf("%s: %d audit violations: %v", n.Dev.Name(), c.Violations, c.PerCheck)
		}
	}
}
