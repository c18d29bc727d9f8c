package myrimx_test

import (
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
)

// TestDeregReasonsCountedAndLogged: a transfer, then DEREGs with the
// notifier's reasons (and one the ABI does not define), an INV_SYNC and a
// FENCE; the device counts each retirement under its reason, logs it with
// the bytes the registration moved, and counts per endpoint.
func TestDeregReasonsCountedAndLogged(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	const size = 100000
	src, _ := p.regWindows(1, 7, size, true)
	nic, epi := p.eb.Addr()
	rs := p.eb.Post(mxtest.RecvCmd(1, 7, 0, size, 0, 0, 0))[0]
	ss := p.ea.Post(mxtest.SendCmd(1, 7, 0, size, nic, epi, 0, 0))[0]
	ev, err := p.ea.WaitSeq(ss)
	must(t, ev, err, myrimx.EvtSendDone, myrimx.StatusSuccess)
	ev, err = p.eb.WaitSeq(rs)
	must(t, ev, err, myrimx.EvtRecvDone, myrimx.StatusSuccess)

	do(t, p.ea, mxtest.DeregCmd(1, 7, myrimx.ReasonClear), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	do(t, p.eb, mxtest.DeregCmd(1, 7, myrimx.ReasonMigrate), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	// A DEREG of a retired generation succeeds and retires nothing more.
	do(t, p.eb, mxtest.DeregCmd(1, 7, myrimx.ReasonUser), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	p.reg(p.ea, 2, 1, myrimx.AccessSendSrc, src)
	do(t, p.ea, mxtest.DeregCmd(2, 1, myrimx.Reason(200)), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	p.reg(p.ea, 3, 1, myrimx.AccessSendSrc, src)
	p.ea.InvSync(3, 1)
	if err := p.ea.Fence(5); err != nil {
		t.Fatal(err)
	}

	a := p.a.Dev.DeregsByReason()
	want := map[string]uint64{"clear": 1, "other": 1, "inv-sync": 1, "migrate": 0, "exclusive": 0, "unmap": 0}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s: deregs[%s] = %d, want %d (all %v)", p.a.Dev.Name(), k, a[k], v, a)
		}
	}
	if b := p.b.Dev.DeregsByReason(); b["migrate"] != 1 || b["user"] != 0 || b["clear"] != 0 {
		t.Errorf("%s: deregs %v, want migrate 1, nothing else", p.b.Dev.Name(), b)
	}
	if len(a) != 13 { // 12 reasons and "other"
		t.Errorf("deregs by reason has %d keys, want 13: %v", len(a), a)
	}

	list, total := p.a.Dev.Retired()
	if total != 3 || len(list) != 3 {
		t.Fatalf("%s retired %d %v, want 3", p.a.Dev.Name(), total, list)
	}
	first := list[0]
	if first.Seq != 1 || first.Endpoint != 0 || first.ID != 1 || first.Gen != 7 || first.Reason != myrimx.ReasonClear ||
		first.Length != size || first.Pages != len(src.Pages) || first.Ops != 1 || first.BytesRead != size ||
		first.BytesWritten != 0 || first.Retired.Before(first.Registered) {
		t.Errorf("first retirement %+v", first)
	}
	if list[1].Reason.String() != "reason-200" || list[2].Reason != myrimx.ReasonInvSync || list[2].Seq != 3 {
		t.Errorf("retirements %+v", list[1:])
	}
	if l, _ := p.b.Dev.Retired(); len(l) != 1 || l[0].BytesWritten != size || l[0].Reason != myrimx.ReasonMigrate {
		t.Errorf("%s retired %+v", p.b.Dev.Name(), l)
	}

	eps := p.a.Dev.EndpointCounters()
	e := eps[0]
	if e.State != "open" || e.Regs != 3 || e.Deregs != 3 || e.Sends != 1 || e.Recvs != 0 || e.Fences != 1 ||
		e.BytesSent != size || e.BytesReceived != 0 || e.Live != 0 {
		t.Errorf("endpoint 0 of %s: %+v", p.a.Dev.Name(), e)
	}
	if e := p.b.Dev.EndpointCounters()[0]; e.Recvs != 1 || e.BytesReceived != size || e.Deregs != 1 {
		t.Errorf("endpoint 0 of %s: %+v", p.b.Dev.Name(), e)
	}
	if eps[1].State != "closed" || eps[1].Regs != 0 {
		t.Errorf("endpoint 1 of %s: %+v", p.a.Dev.Name(), eps[1])
	}
	if c := p.a.Dev.Counters(); c.Fences != 1 || c.Deregs != 3 {
		t.Errorf("counters %+v, want 1 fence, 3 deregs", c)
	}
}

// TestRetiredLogBounded: the log keeps the last RetiredLogSize
// retirements, oldest first, and the total counts them all.
func TestRetiredLogBounded(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	b := p.a.AllocBuffer(4096, false)
	const n = myrimx.RetiredLogSize + 40
	for i := range uint32(n) {
		p.reg(p.ea, 4, i+1, myrimx.AccessSendSrc, b)
		do(t, p.ea, mxtest.DeregCmd(4, i+1, myrimx.ReasonUnmap), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	}
	list, total := p.a.Dev.Retired()
	if total != n || len(list) != myrimx.RetiredLogSize {
		t.Fatalf("retired total %d, %d logged; want %d, %d", total, len(list), n, myrimx.RetiredLogSize)
	}
	for i, r := range list {
		if want := uint64(n - myrimx.RetiredLogSize + i + 1); r.Seq != want || uint64(r.Gen) != want {
			t.Fatalf("log[%d] = seq %d gen %d, want %d", i, r.Seq, r.Gen, want)
		}
	}
	if got := p.a.Dev.DeregsByReason()["unmap"]; got != n {
		t.Errorf("unmap deregs %d, want %d", got, n)
	}
}

// TestStaleGenerationAfterReuse: DEREG (id, g), REG (id, g+1), then a
// SEND and a RECV with (id, g) fail BAD_RDMAWIN and move nothing; (id,
// g+1) works.
func TestStaleGenerationAfterReuse(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	src, dst := p.regWindows(3, 7, 4096, false)
	nic, epi := p.eb.Addr()
	for _, ep := range []*mxtest.Endpoint{p.ea, p.eb} {
		do(t, ep, mxtest.DeregCmd(3, 7, myrimx.ReasonUnmap), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	}
	p.reg(p.ea, 3, 8, myrimx.AccessSendSrc, src)
	p.reg(p.eb, 3, 8, myrimx.AccessRecvDst, dst)
	do(t, p.ea, mxtest.SendCmd(3, 7, 0, 100, nic, epi, 0, 0), myrimx.EvtSendDone, myrimx.StatusBadRDMAWin)
	do(t, p.eb, mxtest.RecvCmd(3, 7, 0, 100, 0, 0, 0), myrimx.EvtRecvDone, myrimx.StatusBadRDMAWin)
	r := p.eb.Post(mxtest.RecvCmd(3, 8, 0, 100, 0, 0, 0))[0]
	p.ea.Post(mxtest.SendCmd(3, 8, 0, 100, nic, epi, 0, 0))
	ev, err := p.eb.WaitSeq(r)
	must(t, ev, err, myrimx.EvtRecvDone, myrimx.StatusSuccess)
}
