package myri10ge_test

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
)

// FuzzBAR0Writes drives a NIC with random BAR0 stores, biased to the
// trigger windows (mailbox, rings, doorbells, claims, handoff), random
// commands, receive postings, send chains, guest memory writes, frames
// from the wire and carrier changes, starting from a NIC that is up. The
// NIC sits on a dma.Map over memfd RAM with read-only canary pages on
// both sides. Invariants: no panic; the canaries are untouched; every
// frame from the wire is received or counted dropped; every frame counted
// sent reached the wire and is a legal frame; every interrupt counted was
// raised; a RESET and the driver's bring-up always recover the NIC.
func FuzzBAR0Writes(f *testing.F) {
	for _, s := range bar0Seeds() {
		f.Add(s.ops)
	}
	z := newBAR0Fuzz(f) // one NIC and RAM per process: a NIC costs 16 MiB
	f.Fuzz(func(t *testing.T, ops []byte) {
		z.start(t)
		z.bringUp()
		z.run(ops)
		z.check()
	})
}

// Guest RAM of the fuzz NIC and the structures its bring-up uses.
const (
	fzBase   = 0x1_0000_0000
	fzSize   = 256 << 10
	fzGuard  = 4096
	fzResp   = fzBase          // command responses
	fzRxDone = fzBase + 0x1000 // 1024 slots
	fzStats  = fzBase + 0x2000 // interrupt blocks, 0x100 per slice
	fzBufs   = fzBase + 0x10000
	fzSlices = 2
	fzMaxOps = 256
)

type countingIRQ struct{ raised, lowered atomic.Uint64 }

func (c *countingIRQ) Raise(int)      { c.raised.Add(1) }
func (c *countingIRQ) Lower()         { c.lowered.Add(1) }
func (c *countingIRQ) Mode() msi.Mode { return msi.ModeMSI }

// bar0Fuzz is a NIC on guest RAM with read-only canary pages on both
// sides, reused from input to input: power-on (Reset) and attach at
// start, detach at check.
type bar0Fuzz struct {
	t    testing.TB
	nic  *myri10ge.NIC
	dmap *dma.Map
	port *fabrictest.Port
	ram  []byte // guard | RAM | guard
	log  *logrus.Entry

	irq      *countingIRQ
	base     myri10ge.Stats // counters at start
	dropped  uint64         // the port's Dropped at start
	injected uint64
}

func canaryByte(i int) byte { return byte(0xA5 ^ i*7) }

func newBAR0Fuzz(tb testing.TB) *bar0Fuzz {
	ram := dmatest.NewRAM(tb, fzGuard+fzSize+fzGuard)
	b := ram.Bytes()
	for i := range fzGuard {
		b[i], b[fzGuard+fzSize+i] = canaryByte(i), canaryByte(i)
	}
	quiet := (&logSink{}).logger(logrus.PanicLevel)
	m := dma.NewMap(quiet)
	tb.Cleanup(func() { m.Close() })
	for _, mp := range []dma.Mapping{
		{IOVA: fzBase - fzGuard, Size: fzGuard, Offset: 0, Fd: ram.Fd(), Prot: dma.ProtRead},
		{IOVA: fzBase, Size: fzSize, Offset: fzGuard, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite},
		{IOVA: fzBase + fzSize, Size: fzGuard, Offset: fzGuard + fzSize, Fd: ram.Fd(), Prot: dma.ProtRead},
	} {
		if err := m.Add(mp); err != nil {
			tb.Fatal(err)
		}
	}
	m.SetBusMaster(true)
	port := fabrictest.NewPort(1 << 14)
	nic, err := myri10ge.New(myri10ge.Config{Name: "fuzz0", MAC: macA, Slices: fzSlices, Port: port, Log: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nic.Detach()
		nic.Close()
	})
	return &bar0Fuzz{t: tb, nic: nic, dmap: m, port: port, ram: b, log: quiet}
}

// start powers the NIC on, clears guest RAM and attaches the NIC.
func (z *bar0Fuzz) start(t *testing.T) {
	z.t = t
	clear(z.ram[fzGuard : fzGuard+fzSize])
	z.nic.Reset()
	z.port.SetLink(true)
	for len(z.port.Sent) > 0 {
		<-z.port.Sent
	}
	z.irq, z.base, z.dropped, z.injected = &countingIRQ{}, z.nic.Stats(), z.port.Dropped(), 0
	if err := z.nic.Attach(pci.Host{Mem: z.dmap, IRQ: z.irq, Log: z.log}); err != nil {
		t.Fatal(err)
	}
}

// mem is the guest's view of n bytes at addr, inside RAM.
func (z *bar0Fuzz) mem(addr uint64, n int) []byte {
	o := fzGuard + int(addr-fzBase)
	return z.ram[o : o+n]
}

func (z *bar0Fuzz) write(off uint64, p []byte) { z.nic.WriteBAR(0, off, p) } // errors: out of range, ignored

func (z *bar0Fuzz) cmd(c abi.Cmd, d0, d1, d2 uint32, resp uint64) abi.Status {
	if resp >= fzBase && resp+8 <= fzBase+fzSize {
		binary.BigEndian.PutUint32(z.mem(resp+4, 4), 0xFFFFFFFF)
	}
	blk := cmdBlock(c, d0, d1, d2, resp)
	for i := 0; i < 64; i += 8 {
		z.write(bar0Cmd+uint64(i), blk[i:i+8])
	}
	if resp >= fzBase && resp+8 <= fzBase+fzSize {
		return abi.Status(binary.BigEndian.Uint32(z.mem(resp+4, 4)))
	}
	return abi.StatusNoResponse
}

// postRx posts group grp of a ring of slice s the driver's way.
func (z *bar0Fuzz) postRx(big bool, s, grp int, addr func(i int) uint64) {
	ring := uint64(bar0SmallRing)
	if big {
		ring = bar0BigRing
	}
	ring += uint64(s) * 0x1000
	b, low := rxGroup(addr, 0)
	off := ring + uint64(grp)*64
	z.write(off, b[:32])
	z.write(off+32, b[32:])
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], low)
	z.write(off+4, w[:])
}

// bringUp is the driver's open, by hand: RESET, queues, blocks, sizes,
// buffers, ETHERNET_UP. It fails the test if the NIC does not answer.
func (z *bar0Fuzz) bringUp() {
	z.t.Helper()
	clear(z.mem(fzRxDone, 0x2000))
	steps := []struct {
		c          abi.Cmd
		d0, d1, d2 uint32
	}{
		{abi.CmdReset, 0, 0, 0},
		{abi.CmdSetIntrqSize, 4096, 0, 0},
		{abi.CmdSetIntrqDMA, fzRxDone & 0xFFFFFFFF, fzRxDone >> 32, 0},
		{abi.CmdSetStatsDMAV2, fzStats & 0xFFFFFFFF, fzStats >> 32, 64},
		{abi.CmdSetMTU, 9018, 0, 0},
		{abi.CmdSetSmallBufferSize, 126, 0, 0},
		{abi.CmdSetBigBufferSize, 4096, 0, 0},
		{abi.CmdEthernetUp, 0, 0, 0},
	}
	for _, st := range steps {
		if s := z.cmd(st.c, st.d0, st.d1, st.d2, fzResp); s != abi.StatusOK {
			z.t.Fatalf("bring-up: %s: %s", st.c, s)
		}
	}
	for grp := range 2 {
		z.postRx(false, 0, grp, func(i int) uint64 { return fzBufs + uint64(grp*8+i)*128 })
		z.postRx(true, 0, grp, func(i int) uint64 { return fzBufs + 0x1000 + uint64(grp*8+i)*4096 })
	}
}

// fuzzOps reads the fuzz input; past its end every read is 0.
type fuzzOps struct {
	b []byte
	i int
}

func (r *fuzzOps) more() bool { return r.i < len(r.b) }
func (r *fuzzOps) u8() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}
func (r *fuzzOps) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }
func (r *fuzzOps) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }
func (r *fuzzOps) bytes(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = r.u8()
	}
	return p
}

// addr is a guest address: mostly inside RAM, sometimes at its edges or
// anywhere at all.
func (r *fuzzOps) addr() uint64 {
	switch sel := r.u8(); sel % 8 {
	case 6:
		return fzBase + fzSize - uint64(sel>>3) // straddling the end
	case 7:
		return uint64(r.u32())<<32 | uint64(r.u32())
	default:
		return fzBase + uint64(r.u16())*4%fzSize
	}
}

// BAR0 windows with side effects, and all of BAR0.
var fuzzWindows = []struct{ base, size uint64 }{
	{bar0Cmd, 64},
	{bar0SendRing, fzSlices * 0x4000},
	{bar0SmallRing, fzSlices * 0x1000},
	{bar0BigRing, fzSlices * 0x1000},
	{0x380000, 0x40000 + fzSlices*64}, // SEND_GO, SEND_STOP
	{bar0Claim, 0x1000},               // claims, deassert, coalescing, RSS table
	{0xFC0000, 0x200},                 // handoff, dummy RDMA
	{0, 16 << 20},
}

// Op codes of the fuzz input.
const (
	opStore = iota
	opCmd
	opFrame
	opClaim
	opPostRx
	opSend
	opGuestMem
	opLink
	numOps
)

func (z *bar0Fuzz) run(in []byte) {
	r := &fuzzOps{b: in}
	for n := 0; r.more() && n < fzMaxOps; n++ {
		switch r.u8() % numOps {
		case opStore:
			w := fuzzWindows[int(r.u8())%len(fuzzWindows)]
			off := w.base + uint64(r.u32())%w.size
			z.write(off, r.bytes(int(r.u8())%72))
		case opCmd:
			c := abi.Cmd(r.u8() % 72)
			d0, d1, d2 := r.u32(), r.u32(), r.u32()
			resp := uint64(fzResp)
			if r.u8()%4 == 0 {
				resp = r.addr()
			}
			z.cmd(c, d0, d1, d2, resp)
		case opFrame:
			n := int(r.u16()) % 9100
			f := make([]byte, n)
			copy(f, r.bytes(min(n, 64)))
			for i := 64; i < n; i++ {
				f[i] = byte(i * 13)
			}
			if n >= 6 && r.u8()%4 != 0 {
				copy(f, macA) // past the unicast filter
			}
			z.port.Inject(f)
			z.injected++
		case opClaim:
			sel := r.u8()
			z.write(bar0Claim+uint64(sel%fzSlices)*8+uint64(sel>>7)*4, []byte{0, 0, 0, 3})
		case opPostRx:
			sel, grp := r.u8(), int(r.u8()%64)
			base := r.addr()
			z.postRx(sel&1 != 0, int(sel>>1)%fzSlices, grp, func(i int) uint64 { return base + uint64(i)*2048 })
		case opSend:
			sel := r.u8()
			slot := int(r.u16() % 1024)
			var descs [][16]byte
			for range 1 + int(sel%4) {
				descs = append(descs, desc(r.addr(), int(r.u16()%9100), int(r.u16()), int(r.u8()%16), int(r.u8()), r.u8()))
			}
			for _, s := range myritest.SubmitOrder(bar0SendRing+uint64(sel>>7)*0x4000, 1024, slot, descs) {
				z.write(s.Off, s.Data)
			}
		case opGuestMem:
			a := fzBase + uint64(r.u16())*4%fzSize
			p := r.bytes(int(r.u8()))
			copy(z.mem(a, min(len(p), int(fzBase+fzSize-a))), p)
		case opLink:
			z.port.SetLink(r.u8()%2 == 0)
		}
	}
}

// check verifies the invariants, after one more bring-up and frame.
func (z *bar0Fuzz) check() {
	t := z.t
	// RESET and the bring-up recover the NIC: a frame lands in buffer 0
	// and its rx_done slot.
	z.port.SetLink(true)
	z.bringUp()
	f := sizedFrame(t, 100, 1)
	copy(f, macA)
	before := z.nic.Stats().RxFrames
	z.port.Inject(f)
	z.injected++
	if got := z.nic.Stats().RxFrames; got != before+1 {
		t.Errorf("after RESET and bring-up a frame was not received (RxFrames %d, was %d)", got, before)
	} else if w := binary.BigEndian.Uint32(z.mem(fzRxDone, 4)); int(w&0xFFFF) != len(f) || !csumEq(uint16(w>>16), myritest.Checksum(f[14:])) ||
		!bytes.Equal(z.mem(fzBufs+2, len(f)), f) {
		t.Errorf("after RESET and bring-up: rx_done slot %#08x (checksum want %#04x), buffer 0 %x", w, myritest.Checksum(f[14:]), z.mem(fzBufs, 16))
	}
	z.nic.Detach() // no timer may raise after this

	for i := range fzGuard {
		if z.ram[i] != canaryByte(i) || z.ram[fzGuard+fzSize+i] != canaryByte(i) {
			t.Fatalf("canary page byte %d overwritten: the device wrote outside guest RAM", i)
		}
	}
	st := statsDelta(z.base, z.nic.Stats())
	if st.RxFrames+st.RxDropped != z.injected {
		t.Errorf("%d frames from the wire, %d received and %d dropped", z.injected, st.RxFrames, st.RxDropped)
	}
	if st.TxDropped > st.TxPackets || st.TxFrames < st.TxPackets-st.TxDropped {
		t.Errorf("%d packets taken, %d dropped, %d frames sent", st.TxPackets, st.TxDropped, st.TxFrames)
	}
	dropped := z.port.Dropped() - z.dropped
	sent, nbytes := uint64(len(z.port.Sent))+dropped, uint64(0)
	for len(z.port.Sent) > 0 {
		fr := <-z.port.Sent
		if len(fr) < fabric.MinFrame || len(fr) > fabric.MaxFrame {
			t.Errorf("a %d-byte frame on the wire", len(fr))
		}
		nbytes += uint64(len(fr))
	}
	if sent != st.TxFrames || (dropped == 0 && nbytes != st.TxBytes) {
		t.Errorf("%d frames (%d bytes) reached the wire, %d (%d bytes) counted", sent, nbytes, st.TxFrames, st.TxBytes)
	}
	if r := z.irq.raised.Load(); r != st.Interrupts {
		t.Errorf("%d vectors raised, %d interrupts counted", r, st.Interrupts)
	}
	if st.UnknownCmds+st.FailedCmds > st.Commands {
		t.Errorf("%d commands, %d unknown, %d failed", st.Commands, st.UnknownCmds, st.FailedCmds)
	}
}

// bar0Enc builds fuzz inputs for the seeds.
type bar0Enc struct{ b []byte }

func (e *bar0Enc) u8(v ...byte) *bar0Enc { e.b = append(e.b, v...); return e }
func (e *bar0Enc) u16(v uint16) *bar0Enc { return e.u8(byte(v>>8), byte(v)) }
func (e *bar0Enc) u32(v uint32) *bar0Enc { return e.u16(uint16(v >> 16)).u16(uint16(v)) }

// ramAddr encodes an address inside RAM (a multiple of 4).
func (e *bar0Enc) ramAddr(a uint64) *bar0Enc { return e.u8(0).u16(uint16((a - fzBase) / 4)) }

func (e *bar0Enc) guestMem(a uint64, p []byte) *bar0Enc {
	for len(p) > 0 {
		n := min(len(p), 255)
		e.u8(opGuestMem).u16(uint16((a - fzBase) / 4)).u8(byte(n)).u8(p[:n]...)
		p, a = p[n:], a+uint64(n)
	}
	return e
}

func (e *bar0Enc) frame(n int, toUs bool) *bar0Enc {
	e.u8(opFrame).u16(uint16(n))
	f := sizedFrame(nilTB{}, max(n, 54), byte(n))
	copy(f, macA)
	if !toUs {
		copy(f, macNobody)
	}
	e.u8(f[:min(n, 64)]...)
	if toUs {
		return e.u8(1)
	}
	return e.u8(0)
}

func (e *bar0Enc) send(slot int, descs ...[16]byte) *bar0Enc {
	e.u8(opSend, byte(len(descs)-1)).u16(uint16(slot))
	for _, d := range descs {
		a := uint64(binary.BigEndian.Uint32(d[0:]))<<32 | uint64(binary.BigEndian.Uint32(d[4:]))
		e.ramAddr(a).u16(binary.BigEndian.Uint16(d[10:])).u16(binary.BigEndian.Uint16(d[8:])).u8(d[13], d[14], d[15])
	}
	return e
}

type bar0Seed struct {
	name string
	ops  []byte
}

func bar0Seeds() []bar0Seed {
	frame := retarget(buildFrame(nilTB{}, frameSpec{TSOpt: true}, pattern(3000, 5)), macPeer, macA)
	tx := uint64(fzBase + 0x20000)
	traffic := (&bar0Enc{}).
		frame(60, true).frame(126, true).frame(127, true).frame(1514, true).frame(9018, true).
		u8(opClaim, 0).u8(opClaim, 0x80).frame(4000, true).frame(100, false).frame(10, true).
		u8(opClaim, 0x80).u8(opClaim, 0)
	plain := (&bar0Enc{}).guestMem(tx, frame[:1514]).
		send(0, desc(tx, 1514, 0, 1, 0, fNoTSO|fFirst)).u8(opClaim, 0x80).
		send(1, desc(tx, 1000, 50, 2, 34, fNoTSO|fFirst|fCksum), desc(tx+1000, 514, 0, 1, 0, fNoTSO)).u8(opClaim, 0x80)
	tso := (&bar0Enc{}).guestMem(tx, frame).
		send(0, desc(tx, 66, 1448, 1, 34, fTSOHdr|fFirst), desc(tx+66, 1448, 1448, 1, 34, fPld|fFirst|fSmall), desc(tx+66+1448, 1552, 1448, 1, 34, fPld|fFirst|fLast|fSmall)).
		u8(opClaim, 0x80)
	commands := (&bar0Enc{})
	for c := range 72 {
		commands.u8(opCmd, byte(c)).u32(0xDEADBEEF).u32(0xDEADBEEF).u32(0xDEADBEEF).u8(1)
	}
	hostile := (&bar0Enc{}).
		u8(opStore, 0).u32(0x3F).u8(1, 0xFF). // mailbox trigger with a stale block
		u8(opCmd, byte(abi.CmdGetSendRingSize)).u32(0).u32(0).u32(0).u8(0).u8(7).u32(7).u32(0).
		u8(opPostRx, 0).u8(1).u8(7).u32(7).u32(0).frame(100, true).
		send(0, desc(fzBase, 100, 0, 1, 0, fNoTSO|fFirst)).
		u8(opSend, 0).u16(1).u8(7).u32(7).u32(0).u16(100).u16(0).u8(1, 0, fNoTSO|fFirst). // outside RAM: halts
		u8(opStore, 6).u32(0x3F).u8(8, 0, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF).               // handoff
		u8(opLink, 1).frame(200, true).u8(opLink, 0)
	return []bar0Seed{{"traffic", traffic.b}, {"plain", plain.b}, {"tso", tso.b}, {"commands", commands.b}, {"hostile", hostile.b}}
}

// nilTB lets seed construction call the frame builders outside a test.
type nilTB struct{ testing.TB }

func (nilTB) Helper()                   {}
func (nilTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

var updateBAR0Seeds = flag.Bool("update-bar0-seeds", false, "rewrite testdata/fuzz/FuzzBAR0Writes")

// TestBAR0Seeds rewrites the committed seeds with -update-bar0-seeds, and
// otherwise checks they are there.
func TestBAR0Seeds(t *testing.T) {
	for _, s := range bar0Seeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.ops)
		keepSeed(t, "FuzzBAR0Writes", s.name, body, *updateBAR0Seeds, "update-bar0-seeds")
	}
}
