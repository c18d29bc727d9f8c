package myrimx_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/leaktest"
)

// pair is two NICs on one hub, an endpoint open on each, the audit in
// observe mode. At the end of the test (or subtest) that made it, it
// checks that no goroutine leaked and asserts 0 audit violations unless
// the test said otherwise.
type pair struct {
	t          *testing.T
	hub        *myrimx.Hub
	a, b       *mxtest.NIC
	ea, eb     *mxtest.Endpoint
	violations bool // the test expects violations
}

func newPair(t *testing.T, mode dma.AuditMode) *pair {
	t.Helper()
	leaktest.Check(t)
	hub := myrimx.NewHub()
	p := &pair{t: t, hub: hub}
	p.a = mxtest.NewNIC(t, hub, mxtest.Options{Name: "mxa", Audit: mode})
	p.b = mxtest.NewNIC(t, hub, mxtest.Options{Name: "mxb", Audit: mode, Base: 3 << 30})
	p.ea = p.a.Open(0, 8, 10)
	p.eb = p.b.Open(0, 8, 10)
	t.Cleanup(func() {
		if p.violations || mode == dma.AuditOff {
			return
		}
		for _, n := range []*mxtest.NIC{p.a, p.b} {
			if c := n.Dev.AuditCounters(); c.Violations != 0 {
				t.Errorf("%s: %d audit violations in a correct test: %v", n.Dev.Name(), c.Violations, c.PerCheck)
			}
		}
	})
	return p
}

func must(t testing.TB, ev mxtest.Event, err error, typ myrimx.EventType, st myrimx.Status) mxtest.Event {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != typ || ev.Status != st {
		t.Fatalf("event %v, want type %d status %d", ev, typ, st)
	}
	return ev
}

// do runs c on ep (post, wait for the completion) and fails the test
// unless the completion has type typ and status st.
func do(t testing.TB, ep *mxtest.Endpoint, c mxtest.Cmd, typ myrimx.EventType, st myrimx.Status) mxtest.Event {
	t.Helper()
	ev, err := ep.Do(c)
	return must(t, ev, err, typ, st)
}

func pattern(n int, seed uint64) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func TestIdentityAndRegisters(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	s := p.a.Dev.Spec()
	if s.VendorID != 0x14c1 || s.DeviceID == 0x0008 || s.DeviceID == 0x0009 || s.Class != 0x028000 {
		t.Errorf("identity %04x:%04x class %06x", s.VendorID, s.DeviceID, s.Class)
	}
	if s.MSIX == nil || s.MSIX.Vectors != 1+myrimx.DefaultEndpoints {
		t.Errorf("MSI-X %+v, want a vector per endpoint plus one", s.MSIX)
	}
	if got := p.a.Read64(myrimx.RegMagic); uint32(got) != myrimx.Magic || got>>32 != myrimx.ABIVersion {
		t.Errorf("MAGIC/ABI_VERSION %#x", got)
	}
	if got := p.a.Read64(myrimx.RegNICID); got != p.a.Dev.NICID() || got>>48 != 0 {
		t.Errorf("NIC_ID %#x", got)
	}
	caps := p.a.Read64(myrimx.RegCaps)
	if caps&0xff != myrimx.DefaultEndpoints || (caps>>8)&0xffff != myrimx.RegionsPerEP || (caps>>40)&0xff != myrimx.AuditObserve {
		t.Errorf("CAPS %#x", caps)
	}
	if got := p.a.Read64(myrimx.RegMaxPages); got != myrimx.MaxPages {
		t.Errorf("MAX_PAGES %d", got)
	}
}

func TestSendRecv(t *testing.T) {
	p := newPair(t, dma.AuditObserve)
	const size = 300000
	src := p.a.AllocBuffer(size, true)
	dst := p.b.AllocBuffer(size, true)
	data := pattern(size, 1)
	p.a.Fill(src, 0, data)
	_, ev, err := p.ea.Register(1, 1, myrimx.AccessSendSrc, src)
	must(t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)
	_, ev, err = p.eb.Register(2, 1, myrimx.AccessRecvDst, dst)
	must(t, ev, err, myrimx.EvtRegDone, myrimx.StatusSuccess)

	rs := p.eb.Post(mxtest.RecvCmd(2, 1, 0, size, 0x55, ^uint64(0), 9))[0]
	nic, epi := p.eb.Addr()
	ss := p.ea.Post(mxtest.SendCmd(1, 1, 0, size, nic, epi, 0x55, 8))[0]
	ev, err = p.ea.WaitSeq(ss)
	must(t, ev, err, myrimx.EvtSendDone, myrimx.StatusSuccess)
	if ev.XferLen != size || ev.Cookie != 8 {
		t.Errorf("SEND_DONE %v", ev)
	}
	ev, err = p.eb.WaitSeq(rs)
	must(t, ev, err, myrimx.EvtRecvDone, myrimx.StatusSuccess)
	if ev.XferLen != size || ev.MsgLen != size || ev.Match != 0x55 || ev.SrcNIC != p.a.Dev.NICID() || ev.SrcEP != 0 {
		t.Errorf("RECV_DONE %v", ev)
	}
	if got := p.b.Read(dst, 0, size); !bytes.Equal(got, data) {
		t.Error("received bytes differ")
	}
}
