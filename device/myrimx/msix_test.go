package myrimx

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
)

// raiser records the vectors raised.
type raiser struct {
	mu sync.Mutex
	n  map[int]int
}

func (r *raiser) Raise(v int) { r.mu.Lock(); r.n[v]++; r.mu.Unlock() }
func (r *raiser) Lower()      {}
func (r *raiser) Mode() msi.Mode {
	return msi.ModeMSIX
}
func (r *raiser) count(v int) int { r.mu.Lock(); defer r.mu.Unlock(); return r.n[v] }

// TestMSIXPerEndpoint: each endpoint's events raise its own vector 1+e,
// once until the driver re-arms it through EQ_HEAD; an endpoint error
// raises the device vector 0 too.
func TestMSIXPerEndpoint(t *testing.T) {
	leaktest.Check(t)
	const base = 1 << 30
	ram := dmatest.NewRAM(t, 1<<20)
	m := dma.NewMap(nil)
	defer m.Close()
	if err := m.Add(dma.Mapping{IOVA: base, Size: 1 << 20, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		t.Fatal(err)
	}
	m.SetBusMaster(true)
	d, err := New(Config{Name: "msix", Hub: NewHub(), Endpoints: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	irq := &raiser{n: map[int]int{}}
	if err := d.Attach(pci.Host{Mem: m, IRQ: irq}); err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	w64 := func(off, v uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		d.WriteBAR(RegsBAR, off, b[:])
	}
	mem := ram.Bytes()
	const ep = 2
	page := uint64(PageSize * (1 + ep))
	cmdq, eq, sb := uint64(base), uint64(base+0x1000), uint64(base+0x2000)
	w64(page+EPCmdqBase, cmdq)
	w64(page+EPCmdqOrder, 4)
	w64(page+EPEqBase, eq)
	w64(page+EPEqOrder, 2) // 4 events
	w64(page+EPStatusGPA, sb)
	w64(page+EPCtrl, EPCtrlOpen)
	tail := uint64(0)
	nop := func() {
		c := mem[cmdq-base+(tail%16)*CmdSize:]
		clear(c[:CmdSize])
		c[CmdOpcode], c[CmdFlags] = byte(OpNop), FlagEvent
		tail++
		w64(page+EPCmdqTail, tail)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (vector %d raised %d times)", what, 1+ep, irq.count(1+ep))
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	eqTail := func() uint32 { return binary.LittleEndian.Uint32(mem[sb-base+SBEqTail:]) }
	nop()
	waitFor("the first event's vector", func() bool { return irq.count(1+ep) == 1 })
	nop()
	waitFor("the second event", func() bool { return eqTail() == 2 })
	if n := irq.count(1 + ep); n != 1 {
		t.Errorf("vector %d raised %d times before re-arm, want 1", 1+ep, n)
	}
	w64(page+EPEqHead, 1) // consumed one: one still waiting, so it fires now
	if n := irq.count(1 + ep); n != 2 {
		t.Errorf("re-arm with an event waiting: vector raised %d times, want 2", n)
	}
	for i, n := range []int{irq.count(1), irq.count(2), irq.count(0)} {
		if n != 0 {
			t.Errorf("vector %d raised %d times by endpoint %d's events", []int{1, 2, 0}[i], n, ep)
		}
	}
	// Overflow: 4 slots, 2 written, 1 consumed: the fourth NOP finds it full.
	nop()
	nop()
	nop()
	nop()
	waitFor("EVENTQ_FULL", func() bool { return irq.count(VectorDevice) > 0 })
	if st := d.readReg(page + EPStatus); st != EPStateError|EPCauseEventQFull<<8 {
		t.Errorf("EP_STATUS %#x, want ERROR/EVENTQ_FULL", st)
	}
}
