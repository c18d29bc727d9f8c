package myrimx_test

import (
	"bytes"
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
)

const all = ^uint64(0)

func (p *pair) reg(ep *mxtest.Endpoint, id, gen, access uint32, b mxtest.Buffer) {
	p.t.Helper()
	_, ev, err := ep.Register(id, gen, access, b)
	must(p.t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
}

// TestREGStatuses: every way a REG completes.
func TestREGStatuses(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	buf := p.a.AllocBuffer(8192, false)
	p.reg(p.ea, 1, 1, myrimx.AccessSendSrc, buf)

	cases := []struct {
		name string
		cmd  func() mxtest.Cmd
		want myrimx.Status
	}{
		{"id in use", func() mxtest.Cmd { return mxtest.RegCmd(1, 2, myrimx.AccessSendSrc, buf, p.list(buf)) }, myrimx.StatusBusy},
		{"id out of range", func() mxtest.Cmd { return mxtest.RegCmd(myrimx.RegionsPerEP, 1, 1, buf, p.list(buf)) }, myrimx.StatusBadCommand},
		{"no access", func() mxtest.Cmd { return mxtest.RegCmd(3, 1, 0, buf, p.list(buf)) }, myrimx.StatusBadCommand},
		{"unknown access bit", func() mxtest.Cmd { return mxtest.RegCmd(3, 1, 0x10, buf, p.list(buf)) }, myrimx.StatusBadCommand},
		{"page shift 13", func() mxtest.Cmd {
			c := mxtest.RegCmd(3, 1, 1, buf, p.list(buf))
			c[myrimx.CmdRegPageShift] = 13
			return c
		}, myrimx.StatusBadCommand},
		{"length beyond pages", func() mxtest.Cmd {
			b := buf
			b.Length = 3 * 4096
			return mxtest.RegCmd(3, 1, 1, b, p.list(buf))
		}, myrimx.StatusBadCommand},
		{"too many pages", func() mxtest.Cmd {
			c := mxtest.RegCmd(3, 1, 1, buf, p.list(buf))
			le32(c[:], myrimx.CmdRegNrPages, myrimx.MaxPages+1)
			return c
		}, myrimx.StatusNoResources},
		{"unmapped pages", func() mxtest.Cmd {
			b := p.a.UnmappedBuffer(2)
			return mxtest.RegCmd(3, 1, 1, b, p.list(b))
		}, myrimx.StatusBadAddress},
		{"page list unmapped", func() mxtest.Cmd { return mxtest.RegCmd(3, 1, 1, buf, 0x20_0000_0000) }, myrimx.StatusBadAddress},
		{"unaligned page", func() mxtest.Cmd {
			b := buf
			b.Pages = []uint64{buf.Pages[0] + 8, buf.Pages[1]}
			return mxtest.RegCmd(3, 1, 1, b, p.list(b))
		}, myrimx.StatusBadAddress},
	}
	for _, c := range cases {
		ev, err := p.ea.Do(c.cmd())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ev.Type != myrimx.EvtRegDone || ev.Status != c.want {
			t.Errorf("%s: %v, want status %d", c.name, ev, c.want)
		}
	}
	ro := p.a.ReadOnlyBuffer(8<<30, 16384)
	do(t, p.ea, mxtest.RegCmd(4, 1, myrimx.AccessRecvDst, ro, p.list(ro)), myrimx.EvtRegDone, myrimx.StatusBadAddress)
	do(t, p.ea, mxtest.RegCmd(4, 1, myrimx.AccessSendSrc, ro, p.list(ro)), myrimx.EvtRegDone, myrimx.StatusSuccess)

	// A retired generation may not come back; DEREG is idempotent on it.
	do(t, p.ea, mxtest.DeregCmd(1, 1, myrimx.ReasonUser), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	do(t, p.ea, mxtest.DeregCmd(1, 1, myrimx.ReasonUser), myrimx.EvtDeregDone, myrimx.StatusSuccess)
	do(t, p.ea, mxtest.DeregCmd(9, 1, myrimx.ReasonUser), myrimx.EvtDeregDone, myrimx.StatusBadRDMAWin)
	do(t, p.ea, mxtest.RegCmd(1, 1, myrimx.AccessSendSrc, buf, p.list(buf)), myrimx.EvtRegDone, myrimx.StatusBusy)
	p.reg(p.ea, 1, 2, myrimx.AccessSendSrc, buf)
	if n := len(p.a.Dev.Registrations()); n != 2 {
		t.Errorf("%d live registrations, want 2", n)
	}
	// The page list at an unmapped address is a driver bug the audit sees
	// (A1: the device was told to DMA outside the client's map); nothing
	// else here is a violation.
	p.violations = true
	if c := p.a.Dev.AuditCounters(); c.Violations != 1 || c.PerCheck["A1-mapping"] != 1 {
		t.Errorf("audit %+v, want exactly the one A1", c)
	}
}

func le32(b []byte, off int, v uint32) {
	b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// regWindows allocates a length-byte buffer on each NIC and registers
// a's as a SEND source on ea and b's as a RECV destination on eb, both as
// (id, gen): the setup of most two-sided tests.
func (p *pair) regWindows(id, gen uint32, length int, scatter bool) (src, dst mxtest.Buffer) {
	src = p.a.AllocBuffer(length, scatter)
	dst = p.b.AllocBuffer(length, scatter)
	p.reg(p.ea, id, gen, myrimx.AccessSendSrc, src)
	p.reg(p.eb, id, gen, myrimx.AccessRecvDst, dst)
	return src, dst
}

// list writes b's page list into a's memory.
func (p *pair) list(b mxtest.Buffer) uint64 {
	l := p.a.Alloc(8*len(b.Pages), 8)
	for i, pg := range b.Pages {
		p.a.ChangePageList(l, i, pg)
	}
	return l
}

// TestSendStatuses: SEND and RECV refused before any byte moves.
func TestSendStatuses(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	p.regWindows(1, 5, 4096, false)
	nic, epi := p.eb.Addr()
	closed := p.b.Open(1, 4, 4)
	closed.NIC.Write32(closed.Reg(myrimx.EPCtrl), myrimx.EPCtrlClose)

	sends := []struct {
		name string
		cmd  mxtest.Cmd
		want myrimx.Status
	}{
		{"stale generation", mxtest.SendCmd(1, 4, 0, 10, nic, epi, 0, 0), myrimx.StatusBadRDMAWin},
		{"unknown region", mxtest.SendCmd(7, 5, 0, 10, nic, epi, 0, 0), myrimx.StatusBadRDMAWin},
		{"id beyond the table", mxtest.SendCmd(5000, 5, 0, 10, nic, epi, 0, 0), myrimx.StatusBadRDMAWin},
		{"past the region", mxtest.SendCmd(1, 5, 4000, 100, nic, epi, 0, 0), myrimx.StatusAccess},
		{"unknown nic", mxtest.SendCmd(1, 5, 0, 10, 0x1234, epi, 0, 0), myrimx.StatusBadEndpoint},
		{"endpoint beyond the nic", mxtest.SendCmd(1, 5, 0, 10, nic, 77, 0, 0), myrimx.StatusBadEndpoint},
		{"endpoint closed", mxtest.SendCmd(1, 5, 0, 10, nic, 1, 0, 0), myrimx.StatusEndpointClosed},
	}
	for _, c := range sends {
		ev, err := p.ea.Do(c.cmd)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ev.Type != myrimx.EvtSendDone || ev.Status != c.want || ev.XferLen != 0 {
			t.Errorf("%s: %v, want status %d", c.name, ev, c.want)
		}
	}
	// Access is per direction: the receive buffer cannot be a send source.
	do(t, p.eb, mxtest.SendCmd(1, 5, 0, 10, nic, epi, 0, 0), myrimx.EvtSendDone, myrimx.StatusAccess)
	do(t, p.ea, mxtest.RecvCmd(1, 5, 0, 10, 0, 0, 0), myrimx.EvtRecvDone, myrimx.StatusAccess)
	do(t, p.eb, mxtest.RecvCmd(1, 4, 0, 10, 0, 0, 0), myrimx.EvtRecvDone, myrimx.StatusBadRDMAWin)
}

// TestMatchMaskOrderTruncated: MX matching. A message goes to the first
// posted receive whose masked match equals its masked match bits; waiting
// messages are taken in arrival order; a short receive is TRUNCATED.
func TestMatchMaskOrderTruncated(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	src, dst := p.regWindows(1, 1, 64<<10, true)
	data := pattern(64<<10, 2)
	p.a.Fill(src, 0, data)
	nic, epi := p.eb.Addr()

	// Receives posted first: r1 wants exactly 0xaa00, r2 any match with the
	// low byte 0x01, r3 anything at all.
	r := p.eb.Post(
		mxtest.RecvCmd(1, 1, 0, 1000, 0xaa00, all, 101),
		mxtest.RecvCmd(1, 1, 1000, 1000, 0x01, 0xff, 102),
		mxtest.RecvCmd(1, 1, 2000, 1000, 0xdead, 0, 103),
	)
	s := p.ea.Post(
		mxtest.SendCmd(1, 1, 0, 500, nic, epi, 0x7701, 1),   // r2 (r1 exact mismatch)
		mxtest.SendCmd(1, 1, 500, 500, nic, epi, 0xaa00, 2), // r1
		mxtest.SendCmd(1, 1, 1000, 800, nic, epi, 0x1, 3),   // r3 (r2 taken)
	)
	want := []struct {
		recv   uint32
		match  uint64
		srcOff int
		dstOff int
		n      int
	}{{r[1], 0x7701, 0, 1000, 500}, {r[0], 0xaa00, 500, 0, 500}, {r[2], 0x1, 1000, 2000, 800}}
	for _, w := range want {
		ev, err := p.eb.WaitSeq(w.recv)
		must(t, ev, err, myrimx.EvtRecvDone, myrimx.StatusSuccess)
		if ev.Match != w.match || ev.XferLen != uint32(w.n) {
			t.Errorf("recv %d got %v, want match %#x, %d bytes", w.recv, ev, w.match, w.n)
		}
		if !bytes.Equal(p.b.Read(dst, uint64(w.dstOff), w.n), data[w.srcOff:w.srcOff+w.n]) {
			t.Errorf("recv %d: bytes differ", w.recv)
		}
	}
	for _, q := range s {
		ev, err := p.ea.WaitSeq(q)
		must(t, ev, err, myrimx.EvtSendDone, myrimx.StatusSuccess)
	}

	// Arrival order: three sends with the same match wait; receives take
	// them oldest first. The third receive is shorter: TRUNCATED.
	s = p.ea.Post(
		mxtest.SendCmd(1, 1, 0, 100, nic, epi, 0x42, 11),
		mxtest.SendCmd(1, 1, 100, 200, nic, epi, 0x42, 12),
		mxtest.SendCmd(1, 1, 300, 3000, nic, epi, 0x42, 13),
	)
	// The FENCE completes once a's worker executed the sends: they wait at b.
	if err := p.ea.Fence(1); err != nil {
		t.Fatal(err)
	}
	r = p.eb.Post(
		mxtest.RecvCmd(1, 1, 0, 1000, 0x42, all, 21),
		mxtest.RecvCmd(1, 1, 1000, 1000, 0x42, all, 22),
		mxtest.RecvCmd(1, 1, 2000, 1000, 0x42, all, 23),
	)
	for i, w := range []struct {
		srcOff, n, msg int
		st             myrimx.Status
	}{{0, 100, 100, myrimx.StatusSuccess}, {100, 200, 200, myrimx.StatusSuccess}, {300, 1000, 3000, myrimx.StatusTruncated}} {
		ev, err := p.eb.WaitSeq(r[i])
		must(t, ev, err, myrimx.EvtRecvDone, w.st)
		if ev.XferLen != uint32(w.n) || ev.MsgLen != uint32(w.msg) {
			t.Errorf("recv %d: %v, want %d of %d bytes", i, ev, w.n, w.msg)
		}
		if !bytes.Equal(p.b.Read(dst, uint64(i*1000), w.n), data[w.srcOff:w.srcOff+w.n]) {
			t.Errorf("recv %d: bytes differ", i)
		}
		ev, err = p.ea.WaitSeq(s[i])
		must(t, ev, err, myrimx.EvtSendDone, myrimx.StatusSuccess)
		if ev.XferLen != uint32(w.n) {
			t.Errorf("send %d: %v, want %d bytes moved", i, ev, w.n)
		}
	}
}

// TestCancelFenceNop: CANCEL by seq and by cookie, NOT_FOUND, FENCE with
// its event, register and status block, NOP.
func TestCancelFenceNop(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	p.regWindows(1, 1, 4096, false)
	nic, epi := p.eb.Addr()

	rs := p.eb.Post(mxtest.RecvCmd(1, 1, 0, 100, 1, all, 0xc1), mxtest.RecvCmd(1, 1, 0, 100, 2, all, 0xc2))
	ss := p.ea.Post(mxtest.SendCmd(1, 1, 0, 100, nic, epi, 3, 0xc3))
	for _, c := range []struct {
		ep  *mxtest.Endpoint
		cmd mxtest.Cmd
		tgt uint32
	}{
		{p.eb, mxtest.CancelCmd(rs[0]), rs[0]},
		{p.eb, mxtest.CancelCookieCmd(0xc2), rs[1]},
		{p.ea, mxtest.CancelCmd(ss[0]), ss[0]},
	} {
		do(t, c.ep, c.cmd, myrimx.EvtCancelDone, myrimx.StatusSuccess)
		ev, err := c.ep.WaitSeq(c.tgt)
		if err != nil || ev.Status != myrimx.StatusCancelled || ev.XferLen != 0 {
			t.Errorf("cancelled command %d: %v %v", c.tgt, ev, err)
		}
	}
	do(t, p.eb, mxtest.CancelCmd(999), myrimx.EvtCancelDone, myrimx.StatusNotFound)

	ev := do(t, p.ea, mxtest.FenceCmd(77, true), myrimx.EvtFenceDone, myrimx.StatusSuccess)
	if ev.Match != 77 {
		t.Errorf("FENCE_DONE %v, want fence_seq 77", ev)
	}
	if got := p.a.Read64(p.ea.Reg(myrimx.EPFenceDone)); got != 77 {
		t.Errorf("FENCE_DONE register %d", got)
	}
	if f, head, _, _, _ := p.ea.StatusBlock(); f != 77 || head == 0 {
		t.Errorf("status block fence %d head %d", f, head)
	}
	do(t, p.ea, mxtest.NopCmd(true), myrimx.EvtNopDone, myrimx.StatusSuccess)
}

// TestPageListChangedAfterREG: the device's copy of the page list is the
// truth; a guest that rewrites its array later changes nothing.
func TestPageListChangedAfterREG(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	src := p.a.AllocBuffer(8192, false)
	dst := p.b.AllocBuffer(8192, false)
	other := p.b.AllocBuffer(4096, false)
	data := pattern(8192, 3)
	p.a.Fill(src, 0, data)
	p.reg(p.ea, 1, 1, myrimx.AccessSendSrc, src)
	list, ev, err := p.eb.Register(1, 1, myrimx.AccessRecvDst, dst)
	must(t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
	p.b.ChangePageList(list, 1, other.Pages[0])
	nic, epi := p.eb.Addr()
	r := p.eb.Post(mxtest.RecvCmd(1, 1, 0, 8192, 0, 0, 0))[0]
	p.ea.Post(mxtest.SendCmd(1, 1, 0, 8192, nic, epi, 0, 0))
	ev, err = p.eb.WaitSeq(r)
	must(t, ev, err, myrimx.EvtRecvDone, myrimx.StatusSuccess)
	if !bytes.Equal(p.b.Read(dst, 0, 8192), data) {
		t.Error("data did not land in the registered pages")
	}
	if !bytes.Equal(p.b.Read(other, 0, 4096), make([]byte, 4096)) {
		t.Error("data landed in the page the guest wrote into its list after REG")
	}
}

// TestRegionInvalidatedWhilePosted: a DEREG completes the region's posted
// operations REGION_INVALIDATED before its own DEREG_DONE; afterwards
// the handle is dead (BAD_RDMAWIN), and a new generation of the same id
// works.
func TestRegionInvalidatedWhilePosted(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	_, dst := p.regWindows(1, 1, 4096, false)
	seqs := p.eb.Post(mxtest.RecvCmd(1, 1, 0, 100, 0, 0, 0), mxtest.DeregCmd(1, 1, myrimx.ReasonUnmap))
	evs := []mxtest.Event{}
	for len(evs) < 2 {
		ev, err := p.eb.Wait(func(mxtest.Event) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if evs[0].Seq != seqs[0] || evs[0].Status != myrimx.StatusRegionInvalidated || evs[1].Type != myrimx.EvtDeregDone {
		t.Fatalf("events %v, want RECV_DONE REGION_INVALIDATED then DEREG_DONE", evs)
	}
	nic, epi := p.eb.Addr()
	do(t, p.eb, mxtest.RecvCmd(1, 1, 0, 100, 0, 0, 0), myrimx.EvtRecvDone, myrimx.StatusBadRDMAWin)
	p.reg(p.eb, 1, 2, myrimx.AccessRecvDst, dst)
	r := p.eb.Post(mxtest.RecvCmd(1, 2, 0, 100, 0, 0, 0))[0]
	p.ea.Post(mxtest.SendCmd(1, 1, 0, 100, nic, epi, 0, 0))
	ev, err := p.eb.WaitSeq(r)
	must(t, ev, err, myrimx.EvtRecvDone, myrimx.StatusSuccess)
}

// TestGarbageAndOverflow: unknown opcodes complete BAD_COMMAND and are
// counted; a tail beyond the ring and an unconsumed event queue put the
// endpoint in ERROR with their cause; a reset and reopen recovers it.
func TestGarbageAndOverflow(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	g := mxtest.Garbage(5, 42)
	p.ea.PostRaw(g, 5)
	for range 5 {
		ev, err := p.ea.Wait(func(ev mxtest.Event) bool { return ev.Type == myrimx.EvtEPError })
		must(t, ev, err, myrimx.EvtEPError, myrimx.StatusBadCommand)
	}
	if _, _, _, bad, _ := p.ea.StatusBlock(); bad != 5 {
		t.Errorf("status block bad_cmds %d, want 5", bad)
	}
	if p.ea.State() != myrimx.EPStateOpen {
		t.Error("garbage commands took the endpoint down")
	}
	p.ea.PostRaw(nil, 5+1000) // tail far beyond the ring
	if err := p.ea.WaitState(myrimx.EPStateError, myrimx.EPCauseBadRing); err != nil {
		t.Fatal(err)
	}
	p.ea.Reopen()

	small := p.a.Open(1, 6, 2) // 4 events
	small.Flood(6)
	if err := small.WaitState(myrimx.EPStateError, myrimx.EPCauseEventQFull); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, over := small.StatusBlock(); over == 0 && p.a.Dev.Counters().EQOverflows == 0 {
		t.Error("overflow not counted")
	}
	small.Reopen()
	do(t, small, mxtest.NopCmd(true), myrimx.EvtNopDone, myrimx.StatusSuccess)
}
