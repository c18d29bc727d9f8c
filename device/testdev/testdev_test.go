package testdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/pci/pcitest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func crc(p []byte) uint32 { return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) }

// ramp returns n bytes that differ from their neighbours and from canaries.
func ramp(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ byte(i>>8) ^ seed
	}
	return p
}

func TestResetValues(t *testing.T) {
	r := newRig(t)
	want := map[uint64]uint32{
		abi.RegID:        0x7e571234,
		abi.RegVersion:   0x00010000,
		abi.RegMaxDMALen: 0x100000,
		abi.RegWinSize:   0x100000,
		abi.RegIRQMode:   abi.IRQModeMSIX,
	}
	// Every other offset, registers or not, reads 0 after reset, also
	// after everything writable was written.
	for reg := uint64(0); reg < abi.RegsSize; reg += 4 {
		r.write(t, reg, 0xffffffff) // doorbells too: an op that fails
	}
	r.waitIdle(t)
	r.irq.Take()
	r.d.Reset()
	got := map[uint64]uint32{}
	for reg := uint64(0); reg < abi.RegsSize; reg += 4 {
		if v := r.read(t, reg); v != 0 {
			got[reg] = v
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("registers after reset (-want +got):\n%s", diff)
	}
}

func TestIRQMode(t *testing.T) {
	r := newRig(t)
	for _, m := range []msi.Mode{msi.ModeNone, msi.ModeINTx, msi.ModeMSI, msi.ModeMSIX} {
		r.irq.SetMode(m)
		if got := r.read(t, abi.RegIRQMode); got != uint32(m) {
			t.Errorf("IRQ_MODE with %v = %d, want %d", m, got, m)
		}
	}
	r.d.Detach()
	if got := r.read(t, abi.RegIRQMode); got != abi.IRQModeNone {
		t.Errorf("IRQ_MODE detached = %d, want %d", got, abi.IRQModeNone)
	}
}

func TestAccessSizes(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name  string
		off   uint64
		write []byte
		// then read back
		readOff uint64
		readN   int
		want    []byte
	}{
		{"byte", abi.RegScratch + 1, []byte{0xab}, abi.RegScratch, 4, []byte{0, 0xab, 0, 0}},
		{"half", abi.RegScratch + 2, []byte{0x34, 0x12}, abi.RegScratch, 4, []byte{0, 0, 0x34, 0x12}},
		{"qword SRC", abi.RegDMASrcLo, []byte{1, 2, 3, 4, 5, 6, 7, 8}, abi.RegDMASrcLo, 8, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{"unaligned across SRC_HI/DST_LO", abi.RegDMASrcHi + 2, []byte{0xaa, 0xbb, 0xcc, 0xdd}, abi.RegDMASrcHi, 8,
			[]byte{0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0}},
		{"read ID bytes", abi.RegScratch, []byte{9}, abi.RegID + 1, 2, []byte{0x12, 0x57}},
		{"unlisted offset", 0xffc, []byte{1, 2, 3, 4}, 0xff8, 8, make([]byte, 8)},
		{"IRQ_CTRL reserved bits", abi.RegIRQCtrl, []byte{0xff, 0xff, 0xff, 0xff}, abi.RegIRQCtrl, 4,
			[]byte{0x03, 0x03, 0x03, 0x00}},
		{"ID is read-only", abi.RegID, []byte{0, 0, 0, 0}, abi.RegID, 4, []byte{0x34, 0x12, 0x57, 0x7e}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			if err := r.d.WriteBAR(abi.RegsBAR, tt.off, tt.write); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, tt.readN)
			if err := r.d.ReadBAR(abi.RegsBAR, tt.readOff, got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBARBounds(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		bar int
		off uint64
		n   int
		ok  bool
	}{
		{abi.RegsBAR, 0, abi.RegsSize, true},
		{abi.RegsBAR, abi.RegsSize - 1, 1, true},
		{abi.RegsBAR, abi.RegsSize - 1, 2, false},
		{abi.RegsBAR, 1<<64 - 1, 2, false},
		{abi.RegsBAR, 0, 0, false},
		{abi.MSIXBAR, 0x40, 8, true},
		{abi.MSIXBAR, abi.MSIXSize, 1, false},
		{abi.WindowBAR, abi.WindowSize - 8, 8, true},
		{abi.WindowBAR, abi.WindowSize - 4, 8, false},
		{1, 0, 4, false},
		{3, 0, 4, false},
		{5, 0, 4, false},
		{-1, 0, 4, false},
		{6, 0, 4, false},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		errR := r.d.ReadBAR(tt.bar, tt.off, p)
		errW := r.d.WriteBAR(tt.bar, tt.off, p)
		if (errR == nil) != tt.ok || (errW == nil) != tt.ok {
			t.Errorf("BAR%d %d@%#x: read err %v, write err %v, want ok=%v", tt.bar, tt.n, tt.off, errR, errW, tt.ok)
		}
	}
}

func TestBAR2AndWindowAccess(t *testing.T) {
	r := newRig(t)
	if err := r.d.WriteBAR(abi.MSIXBAR, 0x900, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	got := []byte{9, 9, 9, 9}
	if err := r.d.ReadBAR(abi.MSIXBAR, 0x900, got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]byte{0, 0, 0, 0}, got); diff != "" {
		t.Errorf("BAR2 read (-want +got):\n%s", diff)
	}
	// The window over messages is the window memory, trapped page or not.
	for _, off := range []uint64{0, abi.WinTrapped + 0x10} {
		if err := r.d.WriteBAR(abi.WindowBAR, off, []byte{5, 6, 7}); err != nil {
			t.Fatal(err)
		}
		var mem [3]byte
		r.win.ReadAt(mem[:], off)
		if diff := cmp.Diff([]byte{5, 6, 7}, mem[:]); diff != "" {
			t.Errorf("window memory at %#x (-want +got):\n%s", off, diff)
		}
		r.win.WriteAt([]byte{8, 9}, off)
		got := make([]byte, 2)
		if err := r.d.ReadBAR(abi.WindowBAR, off, got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]byte{8, 9}, got); diff != "" {
			t.Errorf("window read at %#x (-want +got):\n%s", off, diff)
		}
	}
}

// regsState is what a test checks after an op.
type regsState struct {
	Status, Result, DoneBytes uint32
	Fail                      uint64
	Ops, Errors               uint32
}

func (r *rig) state(t *testing.T) regsState {
	t.Helper()
	return regsState{
		Status:    r.read(t, abi.RegDMAStatus),
		Result:    r.read(t, abi.RegDMAResult),
		DoneBytes: r.read(t, abi.RegDMADoneBytes),
		Fail:      uint64(r.read(t, abi.RegDMAFailHi))<<32 | uint64(r.read(t, abi.RegDMAFailLo)),
		Ops:       r.read(t, abi.RegCntDMAOps),
		Errors:    r.read(t, abi.RegCntDMAErrors),
	}
}

func errStatus(c abi.Cause, write bool) uint32 {
	s := uint32(abi.StatusDone|abi.StatusError) | uint32(c)<<abi.StatusCauseShift
	if write {
		s |= abi.StatusFaultWrite
	}
	return s
}

func TestOps(t *testing.T) {
	leaktest.Check(t)
	src := uint64(ramIOVA + 0x0123)
	dst := uint64(ramIOVA + 0x8ffd)
	pattern := uint32(0x44332211)
	fill := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(pattern >> (8 * (i % 4)))
		}
		return p
	}
	tests := []struct {
		name     string
		op       abi.Op
		src, dst uint64
		n        int
		// where the data ends up and what it should be
		check func(r *rig, data []byte) (got, want []byte)
		crcOf func(data []byte) []byte
	}{
		{"copy", abi.OpCopy, src, dst, 10000,
			func(r *rig, data []byte) ([]byte, []byte) { return r.mem.bytes(dst, len(data)), data },
			func(data []byte) []byte { return data }},
		{"copy 1 byte", abi.OpCopy, src, dst, 1,
			func(r *rig, data []byte) ([]byte, []byte) { return r.mem.bytes(dst, 1), data },
			func(data []byte) []byte { return data }},
		{"fill", abi.OpFill, 0, dst, 9001,
			func(r *rig, _ []byte) ([]byte, []byte) { return r.mem.bytes(dst, 9001), fill(9001) },
			func([]byte) []byte { return fill(9001) }},
		{"checksum", abi.OpChecksum, src, 0, 20000,
			func(r *rig, data []byte) ([]byte, []byte) { return r.mem.bytes(src, len(data)), data },
			func(data []byte) []byte { return data }},
		{"guest to window", abi.OpGuestToWindow, src, 0x1234, 12345,
			func(r *rig, data []byte) ([]byte, []byte) {
				got := make([]byte, len(data))
				r.win.ReadAt(got, 0x1234)
				return got, data
			},
			func(data []byte) []byte { return data }},
		{"guest to window end", abi.OpGuestToWindow, src, abi.WindowSize - 100, 100,
			func(r *rig, data []byte) ([]byte, []byte) {
				got := make([]byte, len(data))
				r.win.ReadAt(got, abi.WindowSize-100)
				return got, data
			},
			func(data []byte) []byte { return data }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			data := ramp(tt.n, 0x3c)
			if tt.src >= ramIOVA {
				r.mem.set(tt.src, data)
			}
			r.program(t, tt.op, tt.src, tt.dst, uint32(tt.n), pattern)
			r.write(t, abi.RegDMADoorbell, 1)
			r.waitIdle(t)
			want := regsState{Status: abi.StatusDone, Result: crc(tt.crcOf(data)), DoneBytes: uint32(tt.n), Ops: 1}
			if diff := cmp.Diff(want, r.state(t)); diff != "" {
				t.Errorf("registers (-want +got):\n%s", diff)
			}
			got, wantData := tt.check(r, data)
			if !bytes.Equal(got, wantData) {
				t.Errorf("data differs")
			}
			r.mem.checkCanaries(t)
		})
	}
	t.Run("window to guest", func(t *testing.T) {
		r := newRig(t)
		data := ramp(abi.MaxDMALen, 0x5a)
		r.win.WriteAt(data, 0)
		r.program(t, abi.OpWindowToGuest, 0x2000, ramIOVA, ramSize, 0)
		r.write(t, abi.RegDMADoorbell, 0)
		r.waitIdle(t)
		want := regsState{Status: abi.StatusDone, Result: crc(data[0x2000 : 0x2000+ramSize]), DoneBytes: ramSize, Ops: 1}
		if diff := cmp.Diff(want, r.state(t)); diff != "" {
			t.Errorf("registers (-want +got):\n%s", diff)
		}
		if !bytes.Equal(r.mem.bytes(ramIOVA, ramSize), data[0x2000:0x2000+ramSize]) {
			t.Errorf("data differs")
		}
		r.mem.checkCanaries(t)
	})
	t.Run("checksum max length", func(t *testing.T) {
		r := &rig{mem: newFakeMem(ramIOVA, abi.MaxDMALen), irq: pcitest.NewRaiser(msi.ModeNone), win: &fakeWindow{}}
		r.d = newDevice("td0", r.win, testLog(t))
		if err := r.d.Attach(pci.Host{Mem: r.mem, IRQ: r.irq}); err != nil {
			t.Fatal(err)
		}
		defer r.d.Detach()
		data := ramp(abi.MaxDMALen, 1)
		r.mem.set(ramIOVA, data)
		r.program(t, abi.OpChecksum, ramIOVA, 0, abi.MaxDMALen, 0)
		r.write(t, abi.RegDMADoorbell, 0)
		r.waitIdle(t)
		want := regsState{Status: abi.StatusDone, Result: crc(data), DoneBytes: abi.MaxDMALen, Ops: 1}
		if diff := cmp.Diff(want, r.state(t)); diff != "" {
			t.Errorf("registers (-want +got):\n%s", diff)
		}
	})
}

func TestOpErrors(t *testing.T) {
	leaktest.Check(t)
	ram := uint64(ramIOVA)
	tests := []struct {
		name     string
		setup    func(r *rig)
		op       abi.Op
		src, dst uint64
		n        uint32
		want     regsState
		// untouched: this RAM range must still hold its canary-free
		// initial contents (zero), i.e. nothing was written there.
		untouched [2]uint64
	}{
		{name: "bad op 0", op: 0, src: ram, dst: ram + 0x1000, n: 16,
			want: regsState{Status: errStatus(abi.CauseBadOp, false), Errors: 1}},
		{name: "bad op 6", op: 6, src: ram, dst: ram + 0x1000, n: 16,
			want: regsState{Status: errStatus(abi.CauseBadOp, false), Errors: 1}},
		{name: "length 0", op: abi.OpCopy, src: ram, dst: ram + 0x1000, n: 0,
			want: regsState{Status: errStatus(abi.CauseBadLength, false), Errors: 1}},
		{name: "length over max", op: abi.OpFill, dst: ram, n: abi.MaxDMALen + 1,
			want: regsState{Status: errStatus(abi.CauseBadLength, false), Errors: 1}, untouched: [2]uint64{ram, ram + ramSize}},
		{name: "length huge", op: abi.OpChecksum, src: ram, n: 0xffffffff,
			want: regsState{Status: errStatus(abi.CauseBadLength, false), Errors: 1}},
		{name: "dst wraps", op: abi.OpFill, dst: 1<<64 - 8, n: 16,
			want: regsState{Status: errStatus(abi.CauseBadLength, false), Errors: 1}},
		{name: "src wraps", op: abi.OpCopy, src: 1<<64 - 1, dst: ram, n: 2,
			want: regsState{Status: errStatus(abi.CauseBadLength, false), Errors: 1}, untouched: [2]uint64{ram, ram + 2}},
		{name: "dst ends at 2^64 ok range check", op: abi.OpFill, dst: 1<<64 - 16, n: 16,
			want: regsState{Status: errStatus(abi.CauseUnmapped, true), Fail: 1<<64 - 16, Errors: 1}},
		{name: "window src past end", op: abi.OpWindowToGuest, src: abi.WindowSize - 8, dst: ram, n: 9,
			want: regsState{Status: errStatus(abi.CauseWindowRange, false), Errors: 1}, untouched: [2]uint64{ram, ram + 16}},
		{name: "window src HI set", op: abi.OpWindowToGuest, src: 1 << 32, dst: ram, n: 4,
			want: regsState{Status: errStatus(abi.CauseWindowRange, false), Errors: 1}, untouched: [2]uint64{ram, ram + 16}},
		{name: "window dst past end", op: abi.OpGuestToWindow, src: ram, dst: abi.WindowSize, n: 1,
			want: regsState{Status: errStatus(abi.CauseWindowRange, false), Errors: 1}},
		{name: "unmapped src", op: abi.OpCopy, src: 0x1000, dst: ram, n: 64,
			want: regsState{Status: errStatus(abi.CauseUnmapped, false), Fail: 0x1000, Errors: 1}, untouched: [2]uint64{ram, ram + 64}},
		{name: "src runs off the end of RAM", op: abi.OpChecksum, src: ram + ramSize - 0x1800, n: 0x2000,
			want: regsState{Status: errStatus(abi.CauseUnmapped, false), Fail: ram + ramSize, DoneBytes: 0x1800, Errors: 1}},
		{name: "dst hole mid-way", setup: func(r *rig) { r.mem.holes[ram+0x3000] = true },
			op: abi.OpFill, dst: ram + 0x1800, n: 0x4000,
			want:      regsState{Status: errStatus(abi.CauseUnmapped, true), Fail: ram + 0x3000, DoneBytes: 0x1800, Errors: 1},
			untouched: [2]uint64{ram + 0x4000, ram + 0x5800}},
		{name: "read-only dst", setup: func(r *rig) { r.mem.readOnly[ram+0x2000] = true },
			op: abi.OpCopy, src: ram, dst: ram + 0x1f00, n: 0x200,
			want: regsState{Status: errStatus(abi.CauseReadOnly, true), Fail: ram + 0x2000, DoneBytes: 0x100, Errors: 1}},
		{name: "bus master off", setup: func(r *rig) { r.mem.setBusMaster(false) },
			op: abi.OpCopy, src: ram, dst: ram + 0x1000, n: 8,
			want: regsState{Status: errStatus(abi.CauseBusMaster, false), Fail: ram, Errors: 1}},
		{name: "not registered", setup: func(r *rig) {
			r.mem.hook = dma.HookFunc(func(op dma.Op, addr uint64, n int) error {
				if op == dma.Write {
					return dma.ErrNotRegistered
				}
				return nil
			})
		}, op: abi.OpWindowToGuest, src: 0, dst: ram + 0x10, n: 8,
			want: regsState{Status: errStatus(abi.CauseNotRegistered, true), Fail: ram + 0x10, Errors: 1}},
		{name: "other DMA error", setup: func(r *rig) {
			r.mem.hook = dma.HookFunc(func(dma.Op, uint64, int) error { return errors.New("socket gone") })
		}, op: abi.OpChecksum, src: ram + 0x10, n: 8,
			want: regsState{Status: errStatus(abi.CauseDMAFailed, false), Fail: ram + 0x10, Errors: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.mem.set(ram, make([]byte, ramSize))
			r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable|1<<abi.IRQCtrlDMAVectorShift)
			if tt.setup != nil {
				tt.setup(r)
			}
			r.program(t, tt.op, tt.src, tt.dst, tt.n, 0xdeadbeef)
			r.write(t, abi.RegDMADoorbell, 1)
			r.waitIdle(t)
			if diff := cmp.Diff(tt.want, r.state(t)); diff != "" {
				t.Errorf("registers (-want +got):\n%s", diff)
			}
			// An error completes like a success: status bit and interrupt.
			if got := r.read(t, abi.RegIRQStatus); got != abi.IRQStatusDMA {
				t.Errorf("IRQ_STATUS = %#x, want %#x", got, abi.IRQStatusDMA)
			}
			if raised, _ := r.irq.Take(); !cmp.Equal(raised, []int{1}) {
				t.Errorf("raised %v, want [1]", raised)
			}
			if u := tt.untouched; u[1] > u[0] {
				if got := r.mem.bytes(u[0], int(u[1]-u[0])); !bytes.Equal(got, make([]byte, len(got))) {
					t.Errorf("RAM [%#x, %#x) was written", u[0], u[1])
				}
			}
			r.mem.checkCanaries(t)
		})
	}
}

func TestFillPatternFromStart(t *testing.T) {
	r := newRig(t)
	// A fill that starts 3 bytes before a page boundary: the pattern is
	// counted from the start of the range, across pieces.
	dst := uint64(ramIOVA + 0x0ffd)
	r.program(t, abi.OpFill, 0, dst, 8, 0x44332211)
	r.write(t, abi.RegDMADoorbell, 1)
	r.waitIdle(t)
	want := []byte{0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0x33, 0x44}
	if diff := cmp.Diff(want, r.mem.bytes(dst, 8)); diff != "" {
		t.Errorf("fill (-want +got):\n%s", diff)
	}
}

func TestSnapshotAtDoorbell(t *testing.T) {
	r := newRig(t)
	gate, _ := r.mem.hold()
	r.mem.set(ramIOVA, []byte("abcd"))
	before := r.mem.bytes(ramIOVA+0x200, 4)
	r.program(t, abi.OpCopy, ramIOVA, ramIOVA+0x100, 4, 0)
	r.write(t, abi.RegDMADoorbell, 1)
	if s := r.read(t, abi.RegDMAStatus); s != abi.StatusBusy {
		t.Errorf("status right after doorbell = %#x, want BUSY", s)
	}
	// Reprogram while busy: the running op keeps its snapshot.
	r.program(t, abi.OpFill, 0, ramIOVA+0x200, 4, 0x01010101)
	close(gate)
	r.waitIdle(t)
	if got := r.mem.bytes(ramIOVA+0x100, 4); string(got) != "abcd" {
		t.Errorf("copied %q, want abcd", got)
	}
	if got := r.mem.bytes(ramIOVA+0x200, 4); !bytes.Equal(got, before) {
		t.Errorf("the reprogrammed op ran: %x", got)
	}
	if got := r.read(t, abi.RegDMAResult); got != crc([]byte("abcd")) {
		t.Errorf("result %#x, want the copy's CRC", got)
	}
}

func TestDoorbellWhileBusy(t *testing.T) {
	r := newRig(t)
	gate, _ := r.mem.hold()
	r.program(t, abi.OpFill, 0, ramIOVA, 16, 0x77777777)
	r.write(t, abi.RegDMADoorbell, 1)
	r.write(t, abi.RegDMADoorbell, 1)
	if s := r.read(t, abi.RegDMAStatus); s != abi.StatusBusy|abi.StatusOverrun {
		t.Errorf("status = %#x, want BUSY|OVERRUN", s)
	}
	if n := r.read(t, abi.RegCntDMAErrors); n != 1 {
		t.Errorf("errors = %d, want 1", n)
	}
	close(gate)
	s := r.waitIdle(t)
	// The overrun bit stays until the next accepted doorbell.
	if s != abi.StatusDone|abi.StatusOverrun {
		t.Errorf("status after the op = %#x, want DONE|OVERRUN", s)
	}
	if got := r.mem.bytes(ramIOVA, 16); !bytes.Equal(got, bytes.Repeat([]byte{0x77}, 16)) {
		t.Errorf("fill = %x", got)
	}
	r.write(t, abi.RegDMADoorbell, 1)
	if s := r.waitIdle(t); s != abi.StatusDone {
		t.Errorf("status after the next op = %#x, want DONE", s)
	}
	if n := r.read(t, abi.RegCntDMAOps); n != 2 {
		t.Errorf("ops = %d, want 2", n)
	}
}

func TestInterrupts(t *testing.T) {
	leaktest.Check(t)
	t.Run("completion vectors", func(t *testing.T) {
		r := newRig(t)
		for _, v := range []int{0, 3, 2} {
			r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable|uint32(v)<<abi.IRQCtrlDMAVectorShift)
			r.program(t, abi.OpFill, 0, ramIOVA, 4, 0)
			r.write(t, abi.RegDMADoorbell, 1)
			r.waitIdle(t)
			if raised, _ := r.irq.Take(); !cmp.Equal(raised, []int{v}) {
				t.Errorf("raised %v, want [%d]", raised, v)
			}
		}
		if n := r.read(t, abi.RegCntIRQs); n != 3 {
			t.Errorf("CNT_IRQS = %d, want 3", n)
		}
	})
	t.Run("disabled completion sets status only", func(t *testing.T) {
		r := newRig(t)
		r.write(t, abi.RegIRQCtrl, abi.IRQCtrlWinEnable)
		r.program(t, abi.OpFill, 0, ramIOVA, 4, 0)
		r.write(t, abi.RegDMADoorbell, 1)
		r.waitIdle(t)
		if raised, _ := r.irq.Take(); raised != nil {
			t.Errorf("raised %v, want none", raised)
		}
		if got := r.read(t, abi.RegIRQStatus); got != abi.IRQStatusDMA {
			t.Errorf("IRQ_STATUS = %#x, want DMA", got)
		}
		if n := r.read(t, abi.RegCntIRQs); n != 0 {
			t.Errorf("CNT_IRQS = %d, want 0", n)
		}
	})
	t.Run("raise now", func(t *testing.T) {
		r := newRig(t)
		for _, v := range []uint32{2, 0, 4, 0xffffffff, 3} {
			r.write(t, abi.RegIRQRaise, v)
		}
		raised, _ := r.irq.Take()
		if diff := cmp.Diff([]int{2, 0, 3}, raised); diff != "" {
			t.Errorf("raised (-want +got):\n%s", diff)
		}
		if got := r.read(t, abi.RegIRQStatus); got != abi.IRQStatusSoft {
			t.Errorf("IRQ_STATUS = %#x, want SOFT", got)
		}
		if n := r.read(t, abi.RegCntIRQs); n != 3 {
			t.Errorf("CNT_IRQS = %d, want 3", n)
		}
		if got := r.read(t, abi.RegIRQRaise); got != 0 {
			t.Errorf("IRQ_RAISE reads %#x", got)
		}
		// A byte write raises the vector in that byte.
		if err := r.d.WriteBAR(abi.RegsBAR, abi.RegIRQRaise, []byte{1}); err != nil {
			t.Fatal(err)
		}
		if raised, _ := r.irq.Take(); !cmp.Equal(raised, []int{1}) {
			t.Errorf("byte write raised %v, want [1]", raised)
		}
	})
	t.Run("INTx level", func(t *testing.T) {
		r := newRig(t)
		r.irq.SetMode(msi.ModeINTx)
		r.write(t, abi.RegIRQRaise, 0)
		r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
		r.program(t, abi.OpFill, 0, ramIOVA, 4, 0)
		r.write(t, abi.RegDMADoorbell, 1)
		r.waitIdle(t)
		if raised, lowers := r.irq.Take(); !cmp.Equal(raised, []int{0, 0}) || lowers != 0 {
			t.Errorf("raised %v lowers %d, want [0 0] and 0", raised, lowers)
		}
		// Clearing one of two asserting bits keeps the line up.
		r.write(t, abi.RegIRQStatus, abi.IRQStatusSoft)
		if _, lowers := r.irq.Take(); lowers != 0 {
			t.Errorf("lowered with DMA still pending")
		}
		// Disabling the source lowers it; enabling it again re-asserts.
		r.write(t, abi.RegIRQCtrl, 0)
		if _, lowers := r.irq.Take(); lowers != 1 {
			t.Errorf("lowers = %d after disabling the source, want 1", lowers)
		}
		r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
		if raised, _ := r.irq.Take(); !cmp.Equal(raised, []int{0}) {
			t.Errorf("re-enabling raised %v, want [0]", raised)
		}
		r.write(t, abi.RegIRQStatus, 0xffffffff)
		if _, lowers := r.irq.Take(); lowers != 1 {
			t.Errorf("lowers = %d after clearing, want 1", lowers)
		}
		if got := r.read(t, abi.RegIRQStatus); got != 0 {
			t.Errorf("IRQ_STATUS = %#x after clearing", got)
		}
		// Reset lowers an asserted line.
		r.write(t, abi.RegIRQRaise, 0)
		r.irq.Take()
		r.d.Reset()
		if _, lowers := r.irq.Take(); lowers != 1 {
			t.Errorf("lowers = %d after reset, want 1", lowers)
		}
	})
	t.Run("MSI-X enabling a pending source sends nothing", func(t *testing.T) {
		r := newRig(t)
		r.program(t, abi.OpFill, 0, ramIOVA, 4, 0)
		r.write(t, abi.RegDMADoorbell, 1)
		r.waitIdle(t)
		r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
		if raised, _ := r.irq.Take(); raised != nil {
			t.Errorf("raised %v, want none: MSI-X signals events only", raised)
		}
	})
}

func TestWindowDoorbell(t *testing.T) {
	leaktest.Check(t)
	data := ramp(0x3000, 9)
	tests := []struct {
		name      string
		off, n    uint32
		want      uint32
		cause     abi.Cause
		ctrl      uint32
		wantRaise []int
	}{
		{"range", 0x100, 0x2000, crc(data[0x100:0x2100]), abi.CauseNone, 0, nil},
		{"empty", 0x100, 0, 0, abi.CauseNone, 0, nil},
		{"whole window", 0, abi.WindowSize, 0, abi.CauseNone, 0, nil}, // want filled below
		{"past the end", abi.WindowSize - 4, 5, 0, abi.CauseWindowRange, abi.IRQCtrlWinEnable | 3<<abi.IRQCtrlWinVectorShift, []int{3}},
		{"offset past the end", abi.WindowSize + 1, 0, 0, abi.CauseWindowRange, 0, nil},
		{"with interrupt", 0, 4, crc(data[:4]), abi.CauseNone, abi.IRQCtrlWinEnable | 2<<abi.IRQCtrlWinVectorShift | abi.IRQCtrlDMAEnable, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.win.WriteAt(data, 0)
			if tt.name == "whole window" {
				all := make([]byte, abi.WindowSize)
				r.win.ReadAt(all, 0)
				binary.LittleEndian.PutUint32(all[abi.WinDBOffset:], tt.off)
				binary.LittleEndian.PutUint32(all[abi.WinDBLength:], tt.n)
				binary.LittleEndian.PutUint32(all[abi.WinDBDoorbell:], 7)
				tt.want = crc(all)
			}
			r.write(t, abi.RegIRQCtrl, tt.ctrl)
			r.win.Store32(abi.WinDBOffset, tt.off)
			r.win.Store32(abi.WinDBLength, tt.n)
			r.win.ring(7)
			got := []uint32{r.win.Load32(abi.WinDBResult), r.win.Load32(abi.WinDBStatus), r.win.Load32(abi.WinDBAck),
				r.read(t, abi.RegWinResult), r.read(t, abi.RegWinStatus), r.read(t, abi.RegWinSeq),
				r.read(t, abi.RegCntWinDoorbells), r.read(t, abi.RegIRQStatus)}
			want := []uint32{tt.want, uint32(tt.cause), 7, tt.want, uint32(tt.cause), 7, 1, abi.IRQStatusWin}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("result, status, ack, mirrors, count, IRQ_STATUS (-want +got):\n%s", diff)
			}
			if raised, _ := r.irq.Take(); !cmp.Equal(raised, tt.wantRaise) {
				t.Errorf("raised %v, want %v", raised, tt.wantRaise)
			}
		})
	}
}

func TestResetDuringOp(t *testing.T) {
	r := newRig(t)
	gate, entered := r.mem.hold()
	r.mem.set(ramIOVA, make([]byte, ramSize))
	r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
	r.program(t, abi.OpFill, 0, ramIOVA, 0x3000, 0x55555555)
	r.write(t, abi.RegDMADoorbell, 1)
	<-entered // the engine is inside the first piece
	r.d.Reset()
	if s := r.read(t, abi.RegDMAStatus); s != 0 {
		t.Errorf("status right after reset = %#x, want 0", s)
	}
	gate <- struct{}{} // let the piece in flight finish
	// A new op after the reset runs and completes normally; the cancelled
	// one never shows.
	close(gate)
	r.program(t, abi.OpFill, 0, ramIOVA+0x8000, 4, 0x66666666)
	r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
	r.write(t, abi.RegDMADoorbell, 1)
	r.waitIdle(t)
	want := regsState{Status: abi.StatusDone, Result: crc([]byte{0x66, 0x66, 0x66, 0x66}), DoneBytes: 4, Ops: 1}
	if diff := cmp.Diff(want, r.state(t)); diff != "" {
		t.Errorf("registers (-want +got):\n%s", diff)
	}
	if raised, _ := r.irq.Take(); !cmp.Equal(raised, []int{0}) {
		t.Errorf("raised %v, want [0] (the new op only)", raised)
	}
	// At most the piece in flight landed: the second page of the cancelled
	// fill was never written.
	if got := r.mem.bytes(ramIOVA+0x1000, 0x2000); bytes.Contains(got, []byte{0x55}) {
		t.Errorf("the cancelled fill went on after reset")
	}
}

func TestResetWithOpPending(t *testing.T) {
	r := newRig(t)
	// Hold the engine in a first op, queue nothing more (doorbell rejected),
	// reset, then start a second op: it must run even though the engine is
	// still finishing the cancelled one.
	gate, entered := r.mem.hold()
	r.program(t, abi.OpFill, 0, ramIOVA, 4, 0x11111111)
	r.write(t, abi.RegDMADoorbell, 1)
	<-entered
	r.d.Reset()
	r.program(t, abi.OpFill, 0, ramIOVA+0x100, 4, 0x22222222)
	r.write(t, abi.RegDMADoorbell, 1)
	close(gate)
	r.waitIdle(t)
	if got := r.mem.bytes(ramIOVA+0x100, 4); !bytes.Equal(got, []byte{0x22, 0x22, 0x22, 0x22}) {
		t.Errorf("second op wrote %x", got)
	}
	if n := r.read(t, abi.RegCntDMAOps); n != 1 {
		t.Errorf("ops = %d, want 1", n)
	}
}

func TestDetach(t *testing.T) {
	r := newRig(t)
	gate, entered := r.mem.hold()
	r.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
	r.program(t, abi.OpCopy, ramIOVA, ramIOVA+0x8000, 0x4000, 0)
	r.write(t, abi.RegDMADoorbell, 1)
	<-entered
	done := make(chan struct{})
	go func() { r.d.Detach(); close(done) }()
	select {
	case <-done:
		t.Fatal("Detach returned while the engine was inside an access")
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	<-done
	n := r.mem.n.Load()
	if raised, _ := r.irq.Take(); raised != nil {
		t.Errorf("raised %v after detach", raised)
	}
	if r.win.starts != 1 || r.win.stops != 1 {
		t.Errorf("window starts %d stops %d, want 1 and 1", r.win.starts, r.win.stops)
	}
	r.d.Detach() // idempotent
	// Detached: a doorbell fails at once with DMA_FAILED, no memory access.
	r.d.Reset()
	r.program(t, abi.OpFill, 0, ramIOVA, 4, 0)
	r.write(t, abi.RegDMADoorbell, 1)
	want := regsState{Status: errStatus(abi.CauseDMAFailed, false), Errors: 1}
	if diff := cmp.Diff(want, r.state(t)); diff != "" {
		t.Errorf("registers (-want +got):\n%s", diff)
	}
	r.write(t, abi.RegIRQRaise, 0)
	if got := r.mem.n.Load(); got != n {
		t.Errorf("%d memory accesses after detach", got-n)
	}
	if raised, _ := r.irq.Take(); raised != nil {
		t.Errorf("raised %v while detached", raised)
	}
	// And it attaches again.
	if err := r.d.Attach(pci.Host{Mem: r.mem, IRQ: r.irq}); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Attach(pci.Host{Mem: r.mem, IRQ: r.irq}); err == nil {
		t.Error("second Attach without Detach succeeded")
	}
	r.write(t, abi.RegDMADoorbell, 1)
	if s := r.waitIdle(t); s != abi.StatusDone {
		t.Errorf("status after re-attach = %#x", s)
	}
}

func TestAttachNeedsHost(t *testing.T) {
	d := newDevice("td0", &fakeWindow{}, testLog(t))
	if err := d.Attach(pci.Host{}); err == nil {
		t.Error("Attach with an empty host succeeded")
	}
	d.Detach()
}

func TestGuestMistakesAreRateLimitedWarnings(t *testing.T) {
	leaktest.Check(t)
	log, hook := logtest.NewNullLogger()
	r := &rig{mem: newFakeMem(ramIOVA, ramSize), irq: pcitest.NewRaiser(msi.ModeNone), win: &fakeWindow{}}
	r.d = newDevice("td7", r.win, logrus.NewEntry(log))
	if err := r.d.Attach(pci.Host{Mem: r.mem, IRQ: r.irq}); err != nil {
		t.Fatal(err)
	}
	defer r.d.Detach()
	r.program(t, abi.OpCopy, 0x10, ramIOVA, 8, 0) // unmapped source
	start := time.Now()
	for range 3 * ratelog.Burst {
		r.write(t, abi.RegDMADoorbell, 1)
		r.waitIdle(t)
	}
	if n := r.read(t, abi.RegCntDMAErrors); n != 3*ratelog.Burst {
		t.Errorf("CNT_DMA_ERRORS %d, want %d", n, 3*ratelog.Burst)
	}
	// The budget refills one line per Interval: a slow machine may earn more.
	budget := ratelog.Burst + int(time.Since(start)/ratelog.Interval)
	entries := hook.AllEntries()
	if len(entries) < ratelog.Burst || len(entries) > budget {
		t.Fatalf("%d log entries for %d faults, want %d..%d", len(entries), 3*ratelog.Burst, ratelog.Burst, budget)
	}
	e := entries[0]
	got := []any{e.Level, e.Message, e.Data["component"], e.Data["device"], e.Data["cause"], e.Data["iova"]}
	want := []any{logrus.WarnLevel, "guest DMA op failed", "testdev", "td7", abi.CauseUnmapped, "0x10"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("level, message, component, device, cause, iova (-want +got):\n%s", diff)
	}
}
