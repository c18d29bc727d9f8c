package myrimx_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/leaktest"
)

const canaryByte = 0xcc

// TestFenceDeregRacingSend is acceptance 2: a DEREG of the receive region
// races a 16 MiB SEND in flight, 1000 times (100 with -short). After
// DEREG_DONE not one byte reaches the region's pages: the receive region
// is 4096 pages of a block with an unregistered canary page after every
// 64 (inside) and canary pages on both sides (around); every byte past
// the transferred prefix is still canary. The transfer's completions come
// before DEREG_DONE, REGION_INVALIDATED (or SUCCESS when it won the
// race), with the exact bytes that landed.
func TestFenceDeregRacingSend(t *testing.T) {
	leaktest.Check(t)
	iters := 1000
	if testing.Short() {
		iters = 100
	}
	start := time.Now()
	hub := myrimx.NewHub()
	a := mxtest.NewNIC(t, hub, mxtest.Options{Name: "fa", Audit: dma.AuditObserve})
	b := mxtest.NewNIC(t, hub, mxtest.Options{Name: "fb", Audit: dma.AuditObserve, Base: 3 << 30})
	ea, eb := a.Open(0, 8, 10), b.Open(0, 8, 10)

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
	_, ev, err := ea.Register(1, 1, myrimx.AccessSendSrc, src)
	must(t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)

	// The receive block: [canary][64 region pages][canary]...[canary].
	blockPages := 1 + pages + pages/64
	block := b.Alloc(blockPages*4096, 4096)
	img := b.Bytes(block, blockPages*4096)
	for i := range img {
		img[i] = canaryByte
	}
	dst := mxtest.Buffer{Length: size, UserVA: 0x7f12_0000_0000}
	for i := range pages {
		dst.Pages = append(dst.Pages, block+uint64(1+i+i/64)*4096)
	}
	canary := bytes.Repeat([]byte{canaryByte}, 4096)
	nic, epi := eb.Addr()
	rng := rand.New(rand.NewPCG(5, 5))

	var cut, whole, none int
	for it := range iters {
		gen := uint32(it + 1)
		_, ev, err := eb.Register(2, gen, myrimx.AccessRecvDst, dst)
		must(t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
		rs := eb.Post(mxtest.RecvCmd(2, gen, 0, size, 0, 0, 0))[0]
		// FENCEs make sure the RECV is posted and the SEND matched it (a's
		// worker moves the transfer, b's executes the DEREG: two goroutines).
		if err := eb.Fence(uint64(it + 1)); err != nil {
			t.Fatal(err)
		}
		ss := ea.Post(mxtest.SendCmd(1, 1, 0, size, nic, epi, 0, uint64(it)))[0]
		if err := ea.Fence(uint64(it + 1)); err != nil {
			t.Fatal(err)
		}
		// Let the transfer get somewhere: 0 to ~2 ms.
		if d := rng.IntN(2200); d > 200 {
			time.Sleep(time.Duration(d) * time.Microsecond)
		}
		ds := eb.Post(mxtest.DeregCmd(2, gen, myrimx.ReasonUnmap))[0]
		dev, err := eb.WaitSeq(ds)
		must(t, dev, err, myrimx.EvtDeregDone, myrimx.StatusSuccess)
		// The receive completed before DEREG_DONE: it is already polled.
		var rev mxtest.Event
		found := false
		for _, e := range eb.Pending() {
			if e.Seq == rs {
				rev, found = e, true
			}
		}
		if !found {
			t.Fatalf("iteration %d: RECV_DONE not before DEREG_DONE (pending %v)", it, eb.Pending())
		}
		rev, _ = eb.WaitSeq(rs)
		sev, err := ea.WaitSeq(ss)
		if err != nil {
			t.Fatal(err)
		}
		xfer := int(rev.XferLen)
		switch {
		case xfer == size:
			whole++
			if rev.Status != myrimx.StatusSuccess || sev.Status != myrimx.StatusSuccess {
				t.Fatalf("iteration %d: whole transfer but %v / %v", it, rev, sev)
			}
		case rev.Status != myrimx.StatusRegionInvalidated || sev.Status != myrimx.StatusRegionInvalidated:
			t.Fatalf("iteration %d: cut transfer completed %v / %v, want REGION_INVALIDATED", it, rev, sev)
		case xfer == 0:
			none++
		default:
			cut++
		}
		if sev.XferLen != rev.XferLen {
			t.Fatalf("iteration %d: SEND_DONE says %d bytes, RECV_DONE %d", it, sev.XferLen, rev.XferLen)
		}
		// The image: region bytes [0, xfer) hold the data, everything else
		// (the rest of the region, the canary pages) is untouched.
		for pg := range blockPages {
			got := img[pg*4096 : (pg+1)*4096]
			want := canary
			if pg > 0 && (pg-1)%65 != 64 {
				ri := (pg-1)/65*64 + (pg-1)%65 // region page index
				lo := ri * 4096
				if lo < xfer {
					n := min(4096, xfer-lo)
					if !bytes.Equal(got[:n], data[lo:lo+n]) {
						t.Fatalf("iteration %d: region page %d holds wrong data", it, ri)
					}
					got, want = got[n:], canary[n:]
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("iteration %d: block page %d changed past the %d bytes transferred (DEREG_DONE %v)", it, pg, xfer, dev)
			}
		}
		// Put the canaries back where the data went.
		for lo := 0; lo < xfer; lo += 4096 {
			copy(b.Bytes(dst.Pages[lo/4096], 4096), canary)
		}
	}
	t.Logf("%d iterations in %v: %d cut mid-transfer, %d before the first byte, %d whole", iters, time.Since(start).Round(time.Millisecond), cut, none, whole)
	if cut == 0 {
		t.Errorf("no DEREG landed mid-transfer in %d iterations: the race was not exercised", iters)
	}
	for _, n := range []*mxtest.NIC{a, b} {
		if c := n.Dev.AuditCounters(); c.Violations != 0 {
			t.Errorf("%s: %d audit violations: %v", n.Dev.Name(), c.Violations, c.PerCheck)
		}
	}
}
