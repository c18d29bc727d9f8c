package testdev

import (
	"encoding/binary"
	"testing"

	"github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/pci/pcitest"
)

// fuzzRecord is one step of FuzzRegisterWrites: 12 bytes.
//
//	kind  u8   (kind % 8) 0-3 write BAR0, 4 read BAR0, 5 reset,
//	           6 wait until the engine is idle, 7 window doorbell
//	off   u16  BAR0 offset (% RegsSize)
//	size  u8   access size (1 + size % 8, clipped to the BAR)
//	value u64  little-endian bytes written; for kind 7 the window
//	           range: offset = low 32 bits, length = high 32 bits
const fuzzRecordSize = 12

func fuzzRecord(kind byte, off uint16, size byte, value uint64) []byte {
	b := make([]byte, fuzzRecordSize)
	b[0] = kind
	binary.LittleEndian.PutUint16(b[1:], off)
	b[3] = size
	binary.LittleEndian.PutUint64(b[4:], value)
	return b
}

// FuzzRegisterWrites drives BAR0 with random accesses, resets and window
// doorbells against a real dma.Map over memfd RAM. Invariants: no panic,
// no error for an in-range access, no byte outside the writable map ever
// changes (the rest of its memfd, a read-only map), constant registers stay constant,
// reserved IRQ_CTRL bits stay 0, DMA_STATUS is never BUSY and DONE at once,
// and the engine always comes back to idle.
func FuzzRegisterWrites(f *testing.F) {
	w := func(off uint16, v uint32) []byte { return fuzzRecord(0, off, 3, uint64(v)) }
	op := func(o abi.Op, src, dst uint64, n, pat uint32) []byte {
		var b []byte
		b = append(b, fuzzRecord(0, abi.RegDMASrcLo, 7, src)...)
		b = append(b, fuzzRecord(0, abi.RegDMADstLo, 7, dst)...)
		b = append(b, w(abi.RegDMALen, n)...)
		b = append(b, w(abi.RegDMAOp, uint32(o))...)
		b = append(b, w(abi.RegDMAPattern, pat)...)
		return append(b, w(abi.RegDMADoorbell, 1)...)
	}
	wait := fuzzRecord(6, 0, 0, 0)
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(cat(w(abi.RegIRQCtrl, abi.IRQCtrlDMAEnable|1<<abi.IRQCtrlDMAVectorShift),
		op(abi.OpCopy, ramIOVA, ramIOVA+0x8000, 0x1800, 0), wait))
	f.Add(cat(op(abi.OpFill, 0, ramIOVA+ramSize-0x10, 0x20, 0x11223344), wait))
	f.Add(cat(op(abi.OpChecksum, ramIOVA, 0, ramSize, 0), op(abi.OpCopy, 0, 0, 1, 0), wait))
	f.Add(cat(op(abi.OpGuestToWindow, ramIOVA, abi.WindowSize-0x100, 0x100, 0), wait,
		op(abi.OpWindowToGuest, abi.WindowSize-0x100, ramIOVA+0x10, 0x100, 0), wait))
	f.Add(cat(op(abi.OpFill, 0, ramIOVA, 0x4000, 0xffffffff), fuzzRecord(5, 0, 0, 0),
		op(abi.OpCopy, ramIOVA, ramIOVA+0x1000, 0x10, 0), wait))
	f.Add(cat(fuzzRecord(0, abi.RegDMASrcHi+2, 7, 0xffffffffffffffff), fuzzRecord(4, abi.RegDMASrcLo, 7, 0),
		fuzzRecord(1, abi.RegIRQRaise, 0, 3), fuzzRecord(2, abi.RegIRQStatus, 3, 0xff), fuzzRecord(4, 0xffe, 7, 0)))
	f.Add(cat(w(abi.RegIRQCtrl, abi.IRQCtrlWinEnable), fuzzRecord(7, 0, 0, 0x100<<32|0x10),
		fuzzRecord(7, 0, 0, 0x10<<32|(abi.WindowSize-4))))
	f.Add(cat(op(abi.OpCopy, ramIOVA, roIOVA-0x10, 0x20, 0), wait, op(abi.OpCopy, roIOVA, ramIOVA, pageSize, 0), wait))
	f.Add(cat(op(abi.OpFill, 0, 1<<64-8, 16, 0), wait, op(abi.Op(9), 0, 0, 0, 0), wait,
		op(abi.OpCopy, ramIOVA, ramIOVA, abi.MaxDMALen+1, 0), wait))

	f.Fuzz(func(t *testing.T, data []byte) {
		r, check := newFuzzRig(t)
		seq := uint32(0)
		checkStatus := func() {
			s := r.read(t, abi.RegDMAStatus)
			if s&abi.StatusBusy != 0 && s&(abi.StatusDone|abi.StatusError) != 0 {
				t.Fatalf("DMA_STATUS %#x: BUSY with DONE or ERROR", s)
			}
		}
		for len(data) >= fuzzRecordSize {
			rec := data[:fuzzRecordSize]
			data = data[fuzzRecordSize:]
			off := uint64(binary.LittleEndian.Uint16(rec[1:])) % abi.RegsSize
			n := min(1+int(rec[3]%8), abi.RegsSize-int(off))
			var val [8]byte
			copy(val[:], rec[4:])
			switch rec[0] % 8 {
			case 0, 1, 2, 3:
				if err := r.d.WriteBAR(abi.RegsBAR, off, val[:n]); err != nil {
					t.Fatalf("write %d@%#x: %v", n, off, err)
				}
			case 4:
				if err := r.d.ReadBAR(abi.RegsBAR, off, val[:n]); err != nil {
					t.Fatalf("read %d@%#x: %v", n, off, err)
				}
				checkStatus()
			case 5:
				r.d.Reset()
			case 6:
				r.waitIdle(t)
			case 7:
				v := binary.LittleEndian.Uint64(rec[4:])
				r.win.Store32(abi.WinDBOffset, uint32(v))
				r.win.Store32(abi.WinDBLength, uint32(v>>32))
				seq++
				r.win.ring(seq)
				if ack := r.win.Load32(abi.WinDBAck); ack != seq {
					t.Fatalf("window ack %d, want %d", ack, seq)
				}
			}
		}
		r.waitIdle(t)
		checkStatus()
		r.d.Detach() // joins the engine: nothing moves after this
		check()
		for reg, want := range map[uint64]uint32{abi.RegID: abi.IDValue, abi.RegVersion: abi.VersionValue,
			abi.RegMaxDMALen: abi.MaxDMALen, abi.RegWinSize: abi.WindowSize} {
			if got := r.read(t, reg); got != want {
				t.Errorf("register %#x = %#x, want %#x", reg, got, want)
			}
		}
		if got := r.read(t, abi.RegIRQCtrl); got&^abi.IRQCtrlWritable != 0 {
			t.Errorf("IRQ_CTRL %#x has reserved bits", got)
		}
	})
}

const roIOVA = ramIOVA + ramSize + pageSize // after a one-page hole

// newFuzzRig attaches a device to a real dma.Map (bus mastering on) with
// ramSize writable bytes at ramIOVA, taken from the middle of a memfd whose
// first and last pages hold canaries, and a read-only page at roIOVA.
// check fails the test if anything but the writable map changed.
func newFuzzRig(t *testing.T) (r *rig, check func()) {
	ram := dmatest.NewRAM(t, ramSize+2*pageSize)
	ro := dmatest.NewRAM(t, pageSize)
	for _, b := range [][]byte{ram.Bytes(), ro.Bytes()} {
		for i := range b {
			b[i] = canary(i)
		}
	}
	m := dma.NewMap(nil)
	t.Cleanup(func() { m.Close() })
	for _, mp := range []dma.Mapping{
		{IOVA: ramIOVA, Size: ramSize, Offset: pageSize, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite},
		{IOVA: roIOVA, Size: pageSize, Fd: ro.Fd(), Prot: dma.ProtRead},
	} {
		if err := m.Add(mp); err != nil {
			t.Fatal(err)
		}
	}
	m.SetBusMaster(true)
	r = &rig{irq: pcitest.NewRaiser(msi.ModeMSIX), win: &fakeWindow{}}
	r.d = newDevice("td0", r.win, testLog(t))
	if err := r.d.Attach(pci.Host{Mem: m, IRQ: r.irq}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.d.Detach)
	return r, func() {
		t.Helper()
		b := ram.Bytes()
		for _, i := range []int{0, len(b) - pageSize} {
			for j := i; j < i+pageSize; j++ {
				if b[j] != canary(j) {
					t.Fatalf("memfd byte %#x outside the map changed", j)
				}
			}
		}
		for j, v := range ro.Bytes() {
			if v != canary(j) {
				t.Fatalf("read-only map byte %#x changed", j)
			}
		}
	}
}
