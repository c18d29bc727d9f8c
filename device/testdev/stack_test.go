package testdev

// The whole stack over a real socket: vfiousertest client (fake QEMU) ->
// vfiouser.Server -> pci.Function -> testdev, with memfd guest RAM mapped
// through DMA_MAP, MSI-X on eventfds, and the window mmapped from the fd
// the server hands out.

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/msi/msitest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/pci/pcitest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

const (
	stackIOVA = 0x40000000
	stackRAM  = 2 << 20

	cfgCommand = 0x04
	cmdMemory  = 1 << 1
	cmdMaster  = 1 << 2
)

// stack is a served testdev with one connected client.
type stack struct {
	dev *Device
	f   *pci.Function
	srv *vfiouser.Server
	c   *vfiousertest.Client
	ram *dmatest.RAM
	evs []*msitest.EventFD
}

// newFunction returns a testdev wrapped in a pci.Function; the device's
// window is closed at the end of the test.
func newFunction(t *testing.T) (*Device, *pci.Function) {
	t.Helper()
	dev, err := New("td0", testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
	})
	f, err := pci.NewFunction(dev, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return dev, f
}

// newStack serves a testdev on a temporary socket and connects a client
// that has negotiated, mapped RAM (with its fd unless noFD) at stackIOVA,
// enabled memory and bus mastering, and enabled the 4 MSI-X vectors.
func newStack(t *testing.T, noFD bool) *stack {
	t.Helper()
	s := &stack{}
	s.dev, s.f = newFunction(t)
	path := filepath.Join(t.TempDir(), "td0.sock")
	srv, err := vfiouser.Listen(vfiouser.Config{Path: path, Function: s.f, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	vfiousertest.Serve(t, srv)
	s.c = vfiousertest.Negotiated(t, path)
	s.ram = dmatest.NewRAM(t, stackRAM)
	if noFD {
		err = s.c.MapRAMNoFD(s.ram, stackIOVA)
	} else {
		err = s.c.MapRAM(s.ram, stackIOVA)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.c.WriteConfig(cfgCommand, []byte{cmdMemory | cmdMaster, 0}); err != nil {
		t.Fatal(err)
	}
	s.evs, err = s.c.EnableMSIX(t, abi.NumVectors)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dial connects and negotiates a client, closed (and checked for protocol
// violations) at the end of the test.
func (s *stack) read(t *testing.T, reg uint64) uint32 {
	t.Helper()
	var b [4]byte
	if err := s.c.ReadRegion(abi.RegsBAR, reg, b[:]); err != nil {
		t.Fatalf("read %#x: %v", reg, err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (s *stack) write(t *testing.T, reg uint64, v uint32) {
	t.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := s.c.WriteRegion(abi.RegsBAR, reg, b[:]); err != nil {
		t.Fatalf("write %#x: %v", reg, err)
	}
}

// start programs and starts an op with one 8-byte write per address pair,
// as a 64-bit guest would.
func (s *stack) start(t *testing.T, op abi.Op, src, dst uint64, n, pattern uint32) {
	t.Helper()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], src)
	if err := s.c.WriteRegion(abi.RegsBAR, abi.RegDMASrcLo, b[:]); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(b[:], dst)
	if err := s.c.WriteRegion(abi.RegsBAR, abi.RegDMADstLo, b[:]); err != nil {
		t.Fatal(err)
	}
	s.write(t, abi.RegDMALen, n)
	s.write(t, abi.RegDMAOp, uint32(op))
	s.write(t, abi.RegDMAPattern, pattern)
	s.write(t, abi.RegDMADoorbell, 1)
}

// waitIRQ waits for one signal on vector v's eventfd.
func (s *stack) waitIRQ(t *testing.T, v int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.evs[v].Wait(ctx); err != nil {
		t.Fatalf("vector %d: %v", v, err)
	}
}

// ram returns the guest's view of n bytes at iova.
func (s *stack) ramAt(iova uint64, n int) []byte {
	off := iova - stackIOVA
	return s.ram.Bytes()[off : off+uint64(n)]
}

// mmapWindow maps BAR4 as QEMU does, from the region info's fd and offset.
func (s *stack) mmapWindow(t *testing.T) []byte {
	t.Helper()
	ri, err := s.c.RegionInfo(pci.RegionBAR0 + abi.WindowBAR)
	if err != nil {
		t.Fatal(err)
	}
	defer ri.Close()
	if ri.Fd < 0 || ri.Flags&vfiousertest.RegionFlagMmap == 0 {
		t.Fatalf("BAR4 region info %+v: not mmappable", ri)
	}
	mem, err := unix.Mmap(ri.Fd, int64(ri.Offset), int(ri.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func word(mem []byte, off uint64) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }

func TestConformance(t *testing.T) {
	leaktest.Check(t)
	_, f := newFunction(t)
	if err := pcitest.Check(f); err != nil {
		t.Error(err)
	}
}

func TestStackLayout(t *testing.T) {
	leaktest.Check(t)
	s := newStack(t, false)
	id, err := s.c.ReadConfig32(0)
	if err != nil {
		t.Fatal(err)
	}
	if id != abi.IDValue {
		t.Errorf("config ID %#x, want %#x", id, abi.IDValue)
	}
	if got := s.read(t, abi.RegID); got != abi.IDValue {
		t.Errorf("BAR0 ID %#x, want %#x", got, abi.IDValue)
	}
	type region struct {
		Size   uint64
		Mmap   bool
		Sparse []vfiousertest.Area
	}
	var got []region
	for _, i := range []uint32{0, 1, 2, 3, 4, 5} {
		ri, err := s.c.RegionInfo(i)
		if err != nil {
			t.Fatalf("region %d: %v", i, err)
		}
		got = append(got, region{ri.Size, ri.Flags&vfiousertest.RegionFlagMmap != 0, ri.Sparse})
		ri.Close()
	}
	want := []region{
		{Size: abi.RegsSize}, {}, {Size: abi.MSIXSize}, {},
		{Size: abi.WindowSize, Mmap: true, Sparse: []vfiousertest.Area{{Offset: 0, Size: abi.WinTrapped}}}, {},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("regions 0-5 (-want +got):\n%s", diff)
	}
	var irqs []uint32
	for _, i := range []uint32{vfiousertest.IRQIndexINTx, vfiousertest.IRQIndexMSI, vfiousertest.IRQIndexMSIX} {
		ii, err := s.c.IRQInfo(i)
		if err != nil {
			t.Fatal(err)
		}
		irqs = append(irqs, ii.Count)
	}
	if diff := cmp.Diff([]uint32{1, 1, abi.NumVectors}, irqs); diff != "" {
		t.Errorf("IRQ counts INTx, MSI, MSI-X (-want +got):\n%s", diff)
	}
	if got := s.read(t, abi.RegIRQMode); got != abi.IRQModeMSIX {
		t.Errorf("IRQ_MODE %d, want MSI-X", got)
	}
}

func TestStackOps(t *testing.T) {
	leaktest.Check(t)
	for _, noFD := range []bool{false, true} {
		name := "shared RAM"
		if noFD {
			name = "message DMA"
		}
		t.Run(name, func(t *testing.T) {
			s := newStack(t, noFD)
			win := s.mmapWindow(t)
			s.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable|2<<abi.IRQCtrlDMAVectorShift)
			data := ramp(100000, 0x11)
			src, dst := uint64(stackIOVA+0x1003), uint64(stackIOVA+0x80000)
			copy(s.ramAt(src, len(data)), data)

			check := func(what string, wantResult uint32, got, want []byte) {
				t.Helper()
				s.waitIRQ(t, 2)
				if st := s.read(t, abi.RegDMAStatus); st != abi.StatusDone {
					t.Fatalf("%s: status %#x, want DONE", what, st)
				}
				if r := s.read(t, abi.RegDMAResult); r != wantResult {
					t.Errorf("%s: result %#x, want %#x", what, r, wantResult)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: data differs", what)
				}
			}
			s.start(t, abi.OpCopy, src, dst, uint32(len(data)), 0)
			check("copy", crc(data), s.ramAt(dst, len(data)), data)

			s.start(t, abi.OpFill, 0, dst+1, 4097, 0xa1b2c3d4)
			fill := make([]byte, 4097)
			for i := range fill {
				fill[i] = byte(uint32(0xa1b2c3d4) >> (8 * (i % 4)))
			}
			check("fill", crc(fill), s.ramAt(dst+1, 4097), fill)

			s.start(t, abi.OpChecksum, src, 0, uint32(len(data)), 0)
			check("checksum", crc(data), s.ramAt(src, len(data)), data)

			s.start(t, abi.OpGuestToWindow, src, 0x3000, uint32(len(data)), 0)
			check("guest to window", crc(data), win[0x3000:0x3000+len(data)], data)

			copy(win[abi.WinTrapped:], "trapped page")
			s.start(t, abi.OpWindowToGuest, abi.WinTrapped, dst, 12, 0)
			check("window to guest", crc([]byte("trapped page")), s.ramAt(dst, 12), []byte("trapped page"))

			if got := s.read(t, abi.RegCntDMAOps); got != 5 {
				t.Errorf("CNT_DMA_OPS %d, want 5", got)
			}
			if noFD {
				if r, w := s.c.DMAStats(); r == 0 || w == 0 {
					t.Errorf("message DMA: %d reads, %d writes served", r, w)
				}
			}
		})
	}
}

func TestStackDMAErrors(t *testing.T) {
	leaktest.Check(t)
	s := newStack(t, false)
	s.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
	// Runs off the end of the mapped RAM: the first page past it fails.
	end := uint64(stackIOVA + stackRAM)
	s.start(t, abi.OpFill, 0, end-0x1800, 0x2000, 0x01020304)
	s.waitIRQ(t, 0)
	got := []uint32{s.read(t, abi.RegDMAStatus), s.read(t, abi.RegDMAFailLo), s.read(t, abi.RegDMAFailHi),
		s.read(t, abi.RegDMADoneBytes), s.read(t, abi.RegCntDMAErrors)}
	want := []uint32{errStatus(abi.CauseUnmapped, true), uint32(end), uint32(end >> 32), 0x1800, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status, fail lo/hi, done bytes, errors (-want +got):\n%s", diff)
	}
	// Bus mastering off: the guest's mistake is device state, not an
	// error reply (the client would have failed the write).
	if err := s.c.WriteConfig(cfgCommand, []byte{cmdMemory, 0}); err != nil {
		t.Fatal(err)
	}
	s.start(t, abi.OpChecksum, stackIOVA, 0, 16, 0)
	s.waitIRQ(t, 0)
	if st := s.read(t, abi.RegDMAStatus); st != errStatus(abi.CauseBusMaster, false) {
		t.Errorf("status %#x, want BUS_MASTER error", st)
	}
}

func TestStackResetMidOp(t *testing.T) {
	leaktest.Check(t)
	// Message DMA makes a 1 MiB op take 256 round trips through the
	// client, so the reset lands in the middle of it.
	s := newStack(t, true)
	s.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable)
	dst := uint64(stackIOVA + 0x100000)
	s.start(t, abi.OpFill, 0, dst, abi.MaxDMALen, 0x5a5a5a5a)
	if st := s.read(t, abi.RegDMAStatus); st != abi.StatusBusy {
		t.Fatalf("status %#x right after the doorbell, want BUSY", st)
	}
	if err := s.c.Reset(); err != nil {
		t.Fatal(err)
	}
	if st := s.read(t, abi.RegDMAStatus); st != 0 {
		t.Errorf("status %#x right after DEVICE_RESET, want 0", st)
	}
	// The reset turned bus mastering off; turn it on and run a new op. The
	// engine finishes the cancelled op's piece first, so once the new op
	// has completed, the old one can no longer show.
	if err := s.c.WriteConfig(cfgCommand, []byte{cmdMemory | cmdMaster, 0}); err != nil {
		t.Fatal(err)
	}
	s.write(t, abi.RegIRQCtrl, abi.IRQCtrlDMAEnable|1<<abi.IRQCtrlDMAVectorShift)
	s.start(t, abi.OpFill, 0, stackIOVA, 8, 0x77777777)
	s.waitIRQ(t, 1)
	got := []uint32{s.read(t, abi.RegDMAStatus), s.read(t, abi.RegCntDMAOps), s.read(t, abi.RegCntDMAErrors), s.read(t, abi.RegCntIRQs)}
	if diff := cmp.Diff([]uint32{abi.StatusDone, 1, 0, 1}, got); diff != "" {
		t.Errorf("status, ops, errors, irqs (-want +got):\n%s", diff)
	}
	if n := s.evs[0].Count(); n != 0 {
		t.Errorf("the cancelled op raised vector 0 %d times", n)
	}
	if tail := s.ramAt(dst+abi.MaxDMALen-4096, 4096); !bytes.Equal(tail, make([]byte, 4096)) {
		t.Errorf("the cancelled fill reached its last page")
	}
}

func TestStackIRQRaise(t *testing.T) {
	leaktest.Check(t)
	s := newStack(t, false)
	for _, v := range []int{3, 0, 2, 1} {
		s.write(t, abi.RegIRQRaise, uint32(v))
		s.waitIRQ(t, v)
	}
	if got := s.read(t, abi.RegCntIRQs); got != 4 {
		t.Errorf("CNT_IRQS %d, want 4", got)
	}
	// INTx: MSI-X off, INTx on an eventfd. IRQ_STATUS keeps the line up
	// until the guest clears it.
	if err := s.c.DisableIRQs(vfiousertest.IRQIndexMSIX); err != nil {
		t.Fatal(err)
	}
	intx := msitest.NewEventFD(t)
	fd := intx.Fd()
	err := s.c.SetIRQs(vfiousertest.IRQIndexINTx, vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger, 0, 1, []int{fd}, nil)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.read(t, abi.RegIRQMode); got != abi.IRQModeINTx {
		t.Errorf("IRQ_MODE %d, want INTx", got)
	}
	s.write(t, abi.RegIRQRaise, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := intx.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	asserted := func() bool {
		st, err := s.c.ReadConfig(0x06, 2)
		if err != nil {
			t.Fatal(err)
		}
		return st[0]&(1<<3) != 0
	}
	if !asserted() {
		t.Error("STATUS.INTERRUPT clear while IRQ_STATUS.SOFT is set")
	}
	s.write(t, abi.RegIRQStatus, abi.IRQStatusSoft)
	if asserted() {
		t.Error("STATUS.INTERRUPT still set after IRQ_STATUS was cleared")
	}
}

func TestStackWindowDoorbell(t *testing.T) {
	leaktest.Check(t)
	s := newStack(t, false)
	win := s.mmapWindow(t)
	data := ramp(0x20000, 0x42)
	copy(win[0x10000:], data)
	s.write(t, abi.RegIRQCtrl, abi.IRQCtrlWinEnable|3<<abi.IRQCtrlWinVectorShift)
	for seq := uint32(1); seq <= 3; seq++ {
		n := uint32(0x8000) * seq
		atomic.StoreUint32(word(win, abi.WinDBOffset), 0x10000)
		atomic.StoreUint32(word(win, abi.WinDBLength), n)
		atomic.StoreUint32(word(win, abi.WinDBDoorbell), seq) // the guest's plain store: nobody is told
		deadline := time.Now().Add(10 * time.Second)
		for atomic.LoadUint32(word(win, abi.WinDBAck)) != seq {
			if time.Now().After(deadline) {
				t.Fatalf("doorbell %d: no ack after 10 s", seq)
			}
			time.Sleep(100 * time.Microsecond)
		}
		want := crc(data[:n])
		got := []uint32{atomic.LoadUint32(word(win, abi.WinDBResult)), atomic.LoadUint32(word(win, abi.WinDBStatus)),
			s.read(t, abi.RegWinResult), s.read(t, abi.RegWinSeq), s.read(t, abi.RegCntWinDoorbells)}
		if diff := cmp.Diff([]uint32{want, 0, want, seq, seq}, got); diff != "" {
			t.Errorf("doorbell %d: result, status, mirrors, count (-want +got):\n%s", seq, diff)
		}
		s.waitIRQ(t, 3)
	}
	// The trapped page over messages and the mmap are one memory.
	if err := s.c.WriteRegion(abi.WindowBAR, abi.WinTrapped+8, []byte("via message")); err != nil {
		t.Fatal(err)
	}
	if got := string(win[abi.WinTrapped+8 : abi.WinTrapped+19]); got != "via message" {
		t.Errorf("mmap sees %q after a REGION_WRITE", got)
	}
	got := make([]byte, 4)
	if err := s.c.ReadRegion(abi.WindowBAR, 0x10000, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[:4]) {
		t.Errorf("REGION_READ of the mmapped part: %x, want %x", got, data[:4])
	}
}

func TestStackReconnect(t *testing.T) {
	leaktest.Check(t)
	s := newStack(t, false)
	s.write(t, abi.RegScratch, 0x1234)
	if err := s.c.Close(); err != nil {
		t.Fatal(err)
	}
	// A new client finds a reset device whose engine and poller run again.
	s.c = vfiousertest.Negotiated(t, s.srv.Path())
	ram := dmatest.NewRAM(t, 1<<16)
	if err := s.c.MapRAM(ram, stackIOVA); err != nil {
		t.Fatal(err)
	}
	if err := s.c.WriteConfig(cfgCommand, []byte{cmdMemory | cmdMaster, 0}); err != nil {
		t.Fatal(err)
	}
	if got := s.read(t, abi.RegScratch); got != 0 {
		t.Errorf("scratch %#x after reconnect, want 0", got)
	}
	s.start(t, abi.OpFill, 0, stackIOVA, 4, 0x01010101)
	deadline := time.Now().Add(10 * time.Second)
	for s.read(t, abi.RegDMAStatus)&abi.StatusBusy != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := s.read(t, abi.RegDMAStatus); st != abi.StatusDone {
		t.Errorf("status %#x after reconnect, want DONE", st)
	}
	if got := ram.Bytes()[:4]; !bytes.Equal(got, []byte{1, 1, 1, 1}) {
		t.Errorf("fill after reconnect wrote %x", got)
	}
	win := s.mmapWindow(t)
	atomic.StoreUint32(word(win, abi.WinDBLength), 0)
	atomic.StoreUint32(word(win, abi.WinDBDoorbell), atomic.LoadUint32(word(win, abi.WinDBDoorbell))+1)
	for atomic.LoadUint32(word(win, abi.WinDBAck)) != atomic.LoadUint32(word(win, abi.WinDBDoorbell)) {
		if time.Now().After(deadline) {
			t.Fatal("no window doorbell ack after reconnect")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestStackDisconnectMidOp(t *testing.T) {
	leaktest.Check(t)
	// The client leaves while the engine waits for its DMA replies: the
	// server must still detach the device (the engine gives up) and serve
	// the next client.
	s := newStack(t, true)
	s.start(t, abi.OpCopy, stackIOVA, stackIOVA+abi.MaxDMALen, abi.MaxDMALen, 0)
	if st := s.read(t, abi.RegDMAStatus); st != abi.StatusBusy {
		t.Fatalf("status %#x right after the doorbell, want BUSY", st)
	}
	if err := s.c.Close(); err != nil {
		t.Fatal(err)
	}
	s.c = vfiousertest.Negotiated(t, s.srv.Path())
	if got := s.read(t, abi.RegDMAStatus); got != 0 {
		t.Errorf("status %#x for the next client, want 0", got)
	}
	if got := s.read(t, abi.RegID); got != abi.IDValue {
		t.Errorf("ID %#x for the next client", got)
	}
}
