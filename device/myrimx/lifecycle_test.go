package myrimx_test

import (
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
)

// bigTransfer starts a 16 MiB SEND from a to b and returns once the
// transfer is matched and moving; dst is b's receive buffer (16 MiB at least).
func bigTransfer(t *testing.T, p *pair, dst mxtest.Buffer) (sendSeq, recvSeq uint32) {
	t.Helper()
	const size = 16 << 20
	src := p.a.AllocBuffer(size, false)
	p.a.Fill(src, 0, pattern(size, 9))
	p.reg(p.ea, 1, 1, myrimx.AccessSendSrc, src)
	p.reg(p.eb, 1, 1, myrimx.AccessRecvDst, dst)
	nic, epi := p.eb.Addr()
	recvSeq = p.eb.Post(mxtest.RecvCmd(1, 1, 0, size, 0, 0, 0))[0]
	if err := p.eb.Fence(100); err != nil {
		t.Fatal(err)
	}
	sendSeq = p.ea.Post(mxtest.SendCmd(1, 1, 0, size, nic, epi, 0, 0))[0]
	if err := p.ea.Fence(100); err != nil {
		t.Fatal(err)
	}
	return sendSeq, recvSeq
}

// TestDMAUnmapRevokesBeforeReply: QEMU's DMA_UNMAP of RAM holding live
// registrations (one idle, one receiving a 16 MiB SEND): when Remove
// returns (the reply), both are revoked, REGION_REVOKED is already in the
// event queue, the transfer has completed REGION_INVALIDATED on both
// sides, and the audit saw no DMA into unmapped RAM.
func TestDMAUnmapRevokesBeforeReply(t *testing.T) {
	p := newPair(t, dma.AuditEnforce)
	const extra = 0x2_0000_0000
	ram := dmatest.NewRAM(t, 20<<20)
	if err := p.b.Map.Add(dma.Mapping{IOVA: extra, Size: 20 << 20, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		t.Fatal(err)
	}
	dst := mxtest.Buffer{Length: 16 << 20}
	for i := range (16 << 20) / 4096 {
		dst.Pages = append(dst.Pages, extra+uint64(i)*4096)
	}
	idle := mxtest.Buffer{Length: 4096, Pages: []uint64{extra + 17<<20}}
	p.reg(p.eb, 5, 1, myrimx.AccessRecvDst, idle)
	ss, rs := bigTransfer(t, p, dst)

	if err := p.b.Map.Remove(extra, 20<<20); err != nil {
		t.Fatal(err)
	}
	// The reply: everything below must already be there.
	evs := p.eb.Poll()
	revoked := map[uint32]bool{}
	var recv *mxtest.Event
	for i, ev := range evs {
		switch {
		case ev.Type == myrimx.EvtRegionRevoked:
			if ev.Reason != uint8(myrimx.ReasonDMAUnmap) {
				t.Errorf("REGION_REVOKED %v, want reason DMA_UNMAP", ev)
			}
			revoked[ev.Region] = true
		case ev.Seq == rs:
			recv = &evs[i]
		}
	}
	if !revoked[1] || !revoked[5] {
		t.Errorf("revoked %v before the reply, want regions 1 and 5 (events %v)", revoked, evs)
	}
	if recv == nil || recv.Status != myrimx.StatusRegionInvalidated && recv.XferLen != 16<<20 {
		t.Fatalf("RECV_DONE before the reply: %v (events %v)", recv, evs)
	}
	sev, err := p.ea.WaitSeq(ss)
	if err != nil || sev.XferLen != recv.XferLen {
		t.Errorf("SEND_DONE %v %v, want %d bytes like the receive", sev, err, recv.XferLen)
	}
	if n := len(p.b.Dev.Registrations()); n != 0 {
		t.Errorf("%d registrations survived the unmap", n)
	}
	do(t, p.eb, mxtest.RecvCmd(5, 1, 0, 10, 0, 0, 0), myrimx.EvtRecvDone, myrimx.StatusBadRDMAWin)
}

// TestResetDuringSend: a function reset of the receiving NIC during a 16
// MiB SEND: the sender's SEND completes REGION_INVALIDATED with the bytes
// moved, the receiver's endpoints are closed and its table empty.
func TestResetDuringSend(t *testing.T) {
	for _, how := range []string{"DEVICE_RESET", "DEV_CTRL"} {
		t.Run(how, func(t *testing.T) {
			p := newPair(t, dma.AuditObserve)
			dst := p.b.AllocBuffer(16<<20, false)
			ss, _ := bigTransfer(t, p, dst)
			if how == "DEVICE_RESET" {
				p.b.Func.Reset()
			} else {
				p.b.Write32(myrimx.RegDevCtrl, myrimx.DevCtrlReset)
			}
			ev, err := p.ea.WaitSeq(ss)
			if err != nil {
				t.Fatal(err)
			}
			ok := ev.Status == myrimx.StatusRegionInvalidated || ev.Status == myrimx.StatusSuccess && ev.XferLen == 16<<20
			if how == "DEVICE_RESET" {
				// DEVICE_RESET clears bus mastering before the device hears of
				// the reset (pci.Function.Reset): the chunk in flight then may
				// end at the door, DMA_FAULT, and be the one A2 the audit sees.
				ok = ok || ev.Status == myrimx.StatusDMAFault
				p.violations = true
				if c := p.b.Dev.AuditCounters(); c.Violations > 1 || c.Violations != c.PerCheck["A2-bus-master"] {
					t.Errorf("audit after DEVICE_RESET: %+v, want at most one A2", c)
				}
			}
			if !ok {
				t.Errorf("SEND_DONE %v after the peer's reset", ev)
			}
			if p.eb.State() != myrimx.EPStateClosed || len(p.b.Dev.Registrations()) != 0 {
				t.Errorf("after reset: endpoint state %d, %d registrations", p.eb.State(), len(p.b.Dev.Registrations()))
			}
		})
	}
}

// TestDisconnectMidSend: the sending client goes away (the function is
// detached as vfiouser does on disconnect) in the middle of a 16 MiB
// SEND: the receiver's RECV completes REGION_INVALIDATED with what had
// arrived, and no goroutine is left behind.
func TestDisconnectMidSend(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	dst := p.b.AllocBuffer(16<<20, false)
	_, rs := bigTransfer(t, p, dst)
	p.a.Func.Detach()
	p.a.Map.RemoveAll()
	ev, err := p.eb.WaitSeq(rs)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Status != myrimx.StatusRegionInvalidated && !(ev.Status == myrimx.StatusSuccess && ev.XferLen == 16<<20) {
		t.Errorf("RECV_DONE %v after the sender's disconnect", ev)
	}
	// The peer endpoint is gone: a new SEND to it is refused.
	src := p.b.AllocBuffer(4096, false)
	p.reg(p.eb, 9, 1, myrimx.AccessSendSrc, src)
	nic, epi := p.ea.Addr()
	do(t, p.eb, mxtest.SendCmd(9, 1, 0, 10, nic, epi, 0, 0), myrimx.EvtSendDone, myrimx.StatusEndpointClosed)
}
