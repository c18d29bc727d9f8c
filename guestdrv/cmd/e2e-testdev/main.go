// Command e2e-testdev runs inside an e2e guest and exercises a testdev
// function (1234:7e57, device/testdev) from user space, without a driver:
// identity, BARs and capabilities from sysfs, registers through an mmap of
// BAR0, the DMA engine into a locked buffer whose physical addresses come
// from /proc/self/pagemap, the BAR4 window (mmapped part, trapped page and
// doorbell), the DMA error paths, counters and the soft interrupt. Each
// check prints one result line (guestdrv/result); the exit status is 1 if
// any failed.
//
//	e2e-testdev [-addr 0000:01:00.0] [-seed N]
//
// Register names and semantics: device/testdev/abi (package abi) and README.md.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"time"

	td "github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/guestdrv/guest"
	"github.com/myriemu/myriemu/guestdrv/result"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// unmappedIOVA is far above any guest RAM or BAR QEMU maps for the server.
const unmappedIOVA = 0x7f00_0000_0000

func main() {
	addr := flag.String("addr", "", "PCI address of the testdev to use (default: the only one)")
	seed := flag.Uint64("seed", 1, "seed of the random test data")
	flag.Parse()
	p := &result.Printer{W: os.Stdout}
	t := &tester{p: p, rng: rand.New(rand.NewPCG(*seed, 0x7e57))}
	t.run(*addr)
	if p.Failures > 0 {
		os.Exit(1)
	}
}

type tester struct {
	p    *result.Printer
	rng  *rand.Rand
	dev  guest.PCIDev
	regs *guest.BAR
	win  *guest.BAR
	buf  *guest.DMABuffer

	wantOps, wantErrors uint32 // expected counter values
}

func (t *tester) run(addr string) {
	if !t.find(addr) {
		return
	}
	t.p.Check("testdev.ids", t.checkIDs(), "subsystem, class and revision as specified")
	t.p.Check("testdev.bars", t.checkBARs(), "BAR0 4 KiB, BAR2 4 KiB, BAR4 1 MiB 64-bit prefetchable")
	t.p.Check("testdev.caps", t.checkCaps(), "PM, MSI, PCIe and MSI-X (4 vectors, table and PBA in BAR2)")
	cmd, err := t.dev.SetCommand(guest.CommandMemory|guest.CommandMaster, 0)
	if err == nil && cmd&(guest.CommandMemory|guest.CommandMaster) != guest.CommandMemory|guest.CommandMaster {
		err = fmt.Errorf("COMMAND reads %#x after setting MEMORY|MASTER", cmd)
	}
	if !t.p.Check("testdev.enable", err, fmt.Sprintf("memory decoding and bus mastering on (COMMAND=%#06x)", cmd)) {
		return
	}
	if t.regs, err = t.dev.MapBAR(td.RegsBAR); err != nil {
		t.p.Failf("testdev.regs", "%v", err)
		return
	}
	defer t.regs.Close()
	if !t.p.Check("testdev.regs", t.checkRegs(), fmt.Sprintf("ID %#08x, version %d.%d, max DMA %d bytes, window %d bytes",
		t.regs.Read32(td.RegID), t.regs.Read32(td.RegVersion)>>16, t.regs.Read32(td.RegVersion)&0xffff,
		t.regs.Read32(td.RegMaxDMALen), t.regs.Read32(td.RegWinSize))) {
		return
	}
	t.p.Check("testdev.scratch", t.checkScratch(), "wrote and read back 0xdeadbeef, 0x12345678, 0 and 0xffffffff")
	t.p.Infof("testdev.irq_mode", "%s", irqMode(t.regs.Read32(td.RegIRQMode)))

	if t.buf, err = guest.AllocDMA(4); err != nil {
		t.p.Failf("testdev.dma.buffer", "%v", err)
		return
	}
	defer t.buf.Close()
	t.p.Infof("testdev.dma.buffer", "4 locked pages at guest physical %#x %#x %#x %#x",
		t.buf.Phys(0), t.buf.Phys(1), t.buf.Phys(2), t.buf.Phys(3))
	if t.win, err = t.dev.MapBAR(td.WindowBAR); err != nil {
		t.p.Failf("testdev.window", "%v", err)
		return
	}
	defer t.win.Close()

	t.dmaOK("testdev.dma.fill", t.fill)
	t.dmaOK("testdev.dma.copy", t.copy)
	t.dmaOK("testdev.dma.checksum", t.checksum)
	t.dmaOK("testdev.dma.window", t.windowOps)
	t.p.Check("testdev.window.doorbell", t.windowDoorbell(), "the device checksummed a window range on a doorbell it polled")
	t.p.Check("testdev.window.trapped", t.trappedPage(), "the trapped last page of BAR4 stores and returns data")

	t.dmaFault("testdev.dma.bad_length", td.CauseBadLength, func() (uint32, error) {
		return t.dma(td.OpFill, 0, t.buf.Phys(0), 0, 0)
	})
	t.dmaFault("testdev.dma.bad_op", td.CauseBadOp, func() (uint32, error) {
		return t.dma(td.Op(99), t.buf.Phys(0), t.buf.Phys(1), 64, 0)
	})
	t.dmaFault("testdev.dma.unmapped", td.CauseUnmapped, func() (uint32, error) {
		st, err := t.dma(td.OpFill, 0, unmappedIOVA, 4096, 0x55)
		if err == nil {
			err = t.expectFault(unmappedIOVA, true)
		}
		return st, err
	})
	t.dmaFault("testdev.dma.bus_master_off", td.CauseBusMaster, func() (uint32, error) {
		if _, err := t.dev.SetCommand(0, guest.CommandMaster); err != nil {
			return 0, err
		}
		st, err := t.dma(td.OpFill, 0, t.buf.Phys(0), 64, 0x66)
		if _, rerr := t.dev.SetCommand(guest.CommandMaster, 0); rerr != nil && err == nil {
			err = rerr
		}
		return st, err
	})
	t.p.Check("testdev.counters", t.checkCounters(), fmt.Sprintf("%d DMA ops succeeded and %d failed, as counted by the device", t.wantOps, t.wantErrors))
	// Last: an INTx nobody handles keeps QEMU's BAR mmaps off for a while.
	t.p.Check("testdev.irq_raise", t.softIRQ(), "IRQ_RAISE set IRQ_STATUS.SOFT and counted an interrupt; RW1C cleared it")
}

func irqMode(v uint32) string {
	switch v {
	case td.IRQModeNone:
		return "no interrupt mechanism enabled"
	case td.IRQModeINTx:
		return "INTx enabled"
	case td.IRQModeMSI:
		return "MSI enabled"
	case td.IRQModeMSIX:
		return "MSI-X enabled"
	}
	return fmt.Sprintf("unknown IRQ mode %d", v)
}

func (t *tester) find(addr string) bool {
	devs, err := guest.FindPCI(guest.SysfsPCI, td.VendorID, td.DeviceID)
	if err != nil {
		t.p.Failf("testdev.found", "%v", err)
		return false
	}
	for _, d := range devs {
		if addr == "" && len(devs) == 1 || d.Addr == addr {
			t.dev = d
			t.p.Passf("testdev.found", "PCI function %04x:%04x at %s, class %#06x, revision %d",
				d.Vendor, d.Device, d.Addr, d.Class, d.Revision)
			return true
		}
	}
	t.p.Failf("testdev.found", "want one %04x:%04x (or -addr %q), found %d", td.VendorID, td.DeviceID, addr, len(devs))
	return false
}

func (t *tester) checkIDs() error {
	d := t.dev
	var errs []error
	if d.SubVendor != td.VendorID || d.SubDevice != td.DeviceID {
		errs = append(errs, fmt.Errorf("subsystem %04x:%04x, want %04x:%04x", d.SubVendor, d.SubDevice, td.VendorID, td.DeviceID))
	}
	if d.Class != td.Class {
		errs = append(errs, fmt.Errorf("class %#06x, want %#06x", d.Class, td.Class))
	}
	if d.Revision != td.Revision {
		errs = append(errs, fmt.Errorf("revision %d, want %d", d.Revision, td.Revision))
	}
	id, err := d.Config32(0)
	if err != nil {
		errs = append(errs, err)
	} else if id != td.IDValue {
		errs = append(errs, fmt.Errorf("config dword 0 %#08x, want %#08x", id, td.IDValue))
	}
	return errors.Join(errs...)
}

func (t *tester) checkBARs() error {
	res, err := t.dev.Resources()
	if err != nil {
		return err
	}
	if len(res) < 6 {
		return fmt.Errorf("%d resources, want at least 6", len(res))
	}
	var errs []error
	want := []struct {
		bar        int
		size       uint64
		mem64, pre bool
	}{
		{td.RegsBAR, td.RegsSize, false, false},
		{td.MSIXBAR, td.MSIXSize, false, false},
		{td.WindowBAR, td.WindowSize, true, true},
	}
	for _, w := range want {
		r := res[w.bar]
		if r.Size() != w.size || r.Flags&guest.ResourceMem == 0 {
			errs = append(errs, fmt.Errorf("BAR%d: %d bytes flags %#x, want a %d-byte memory BAR", w.bar, r.Size(), r.Flags, w.size))
			continue
		}
		if (r.Flags&guest.ResourceMem64 != 0) != w.mem64 || (r.Flags&guest.ResourcePrefetch != 0) != w.pre {
			errs = append(errs, fmt.Errorf("BAR%d flags %#x: want 64-bit=%v prefetchable=%v", w.bar, r.Flags, w.mem64, w.pre))
		}
	}
	for _, unused := range []int{1, 3, 5} {
		if res[unused].Size() != 0 {
			errs = append(errs, fmt.Errorf("BAR%d should be unused, has %d bytes", unused, res[unused].Size()))
		}
	}
	return errors.Join(errs...)
}

func (t *tester) checkCaps() error {
	caps, err := t.dev.Caps()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range []uint8{guest.CapIDPM, guest.CapIDMSI, guest.CapIDPCIe, guest.CapIDMSIX} {
		if _, ok := guest.FindCap(caps, id); !ok {
			errs = append(errs, fmt.Errorf("no capability %#02x in %v", id, caps))
		}
	}
	if c, ok := guest.FindCap(caps, guest.CapIDMSIX); ok {
		ctrl, err1 := t.dev.Config16(c.Off + guest.MSIXControl)
		table, err2 := t.dev.Config32(c.Off + guest.MSIXTable)
		pba, err3 := t.dev.Config32(c.Off + guest.MSIXPBA)
		if err := errors.Join(err1, err2, err3); err != nil {
			return err
		}
		if n := int(ctrl&guest.MSIXTableSizeMsk) + 1; n != td.NumVectors {
			errs = append(errs, fmt.Errorf("MSI-X table size %d, want %d", n, td.NumVectors))
		}
		if table&7 != td.MSIXBAR || table&^7 != td.MSIXTable {
			errs = append(errs, fmt.Errorf("MSI-X table at BAR%d+%#x, want BAR%d+%#x", table&7, table&^7, td.MSIXBAR, td.MSIXTable))
		}
		if pba&7 != td.MSIXBAR || pba&^7 != td.MSIXPBA {
			errs = append(errs, fmt.Errorf("MSI-X PBA at BAR%d+%#x, want BAR%d+%#x", pba&7, pba&^7, td.MSIXBAR, td.MSIXPBA))
		}
	}
	return errors.Join(errs...)
}

func (t *tester) checkRegs() error {
	var errs []error
	check := func(name string, off uint64, want uint32) {
		if got := t.regs.Read32(off); got != want {
			errs = append(errs, fmt.Errorf("%s (%#x) reads %#x, want %#x", name, off, got, want))
		}
	}
	check("ID", td.RegID, td.IDValue)
	check("VERSION", td.RegVersion, td.VersionValue)
	check("MAX_DMA_LEN", td.RegMaxDMALen, td.MaxDMALen)
	check("WIN_SIZE", td.RegWinSize, td.WindowSize)
	check("unlisted 0x0f0", 0x0f0, 0)
	return errors.Join(errs...)
}

func (t *tester) checkScratch() error {
	for _, v := range []uint32{0xdeadbeef, 0x12345678, 0, 0xffffffff} {
		t.regs.Write32(td.RegScratch, v)
		if got := t.regs.Read32(td.RegScratch); got != v {
			return fmt.Errorf("SCRATCH: wrote %#x, read %#x", v, got)
		}
	}
	t.regs.Write32(td.RegID, 0) // read-only: ignored
	if got := t.regs.Read32(td.RegID); got != td.IDValue {
		return fmt.Errorf("ID changed to %#x after a write; it is read-only", got)
	}
	return nil
}

// dma programs one op, rings the doorbell and polls until DONE; it returns
// DMA_STATUS. An error means the engine never finished.
func (t *tester) dma(op td.Op, src, dst uint64, n, pattern uint32) (uint32, error) {
	r := t.regs
	r.Write64(td.RegDMASrcLo, src)
	r.Write64(td.RegDMADstLo, dst)
	r.Write32(td.RegDMALen, n)
	r.Write32(td.RegDMAOp, uint32(op))
	r.Write32(td.RegDMAPattern, pattern)
	r.Write32(td.RegDMADoorbell, 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.Read32(td.RegDMAStatus)
		if st&td.StatusDone != 0 && st&td.StatusBusy == 0 {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("%v: DMA_STATUS still %#x after 10 s", op, st)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// expectOK checks a successful op's status, result CRC and byte count.
func (t *tester) expectOK(op td.Op, st uint32, wantCRC uint32, n uint32) error {
	if st&td.StatusError != 0 {
		return fmt.Errorf("%v failed: DMA_STATUS %#x cause %v, failing IOVA %#x", op, st,
			td.Cause((st&td.StatusCauseMask)>>td.StatusCauseShift), t.failAddr())
	}
	if got := t.regs.Read32(td.RegDMAResult); got != wantCRC {
		return fmt.Errorf("%v: DMA_RESULT %#08x, want CRC-32C %#08x", op, got, wantCRC)
	}
	if got := t.regs.Read32(td.RegDMADoneBytes); got != n {
		return fmt.Errorf("%v: DMA_DONE_BYTES %d, want %d", op, got, n)
	}
	t.wantOps++
	return nil
}

func (t *tester) failAddr() uint64 {
	return uint64(t.regs.Read32(td.RegDMAFailHi))<<32 | uint64(t.regs.Read32(td.RegDMAFailLo))
}

func (t *tester) dmaOK(name string, fn func() (string, error)) {
	detail, err := fn()
	t.p.Check(name, err, detail)
}

func (t *tester) random(p []byte) {
	for i := range p {
		p[i] = byte(t.rng.Uint32())
	}
}

func firstDiff(a, b []byte) string {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			if i >= len(b) {
				return fmt.Sprintf("short by %d bytes at %d", len(a)-i, i)
			}
			return fmt.Sprintf("byte %d is %#02x, want %#02x", i, b[i], a[i])
		}
	}
	return "equal"
}

func (t *tester) fill() (string, error) {
	const pattern = 0x44332211
	page := t.buf.Page(0)
	t.random(page)
	st, err := t.dma(td.OpFill, 0, t.buf.Phys(0), guest.PageSize, pattern)
	if err != nil {
		return "", err
	}
	want := bytes.Repeat([]byte{0x11, 0x22, 0x33, 0x44}, guest.PageSize/4)
	if err := t.expectOK(td.OpFill, st, crc(want), guest.PageSize); err != nil {
		return "", err
	}
	if !bytes.Equal(page, want) {
		return "", fmt.Errorf("FILL: guest page: %s", firstDiff(want, page))
	}
	return fmt.Sprintf("device filled 4096 bytes at %#x with 11 22 33 44 ...", t.buf.Phys(0)), nil
}

func (t *tester) copy() (string, error) {
	src, dst := t.buf.Page(1), t.buf.Page(2)
	t.random(src)
	clear(dst)
	st, err := t.dma(td.OpCopy, t.buf.Phys(1), t.buf.Phys(2), guest.PageSize, 0)
	if err != nil {
		return "", err
	}
	if err := t.expectOK(td.OpCopy, st, crc(src), guest.PageSize); err != nil {
		return "", err
	}
	if !bytes.Equal(dst, src) {
		return "", fmt.Errorf("COPY: destination page: %s", firstDiff(src, dst))
	}
	return fmt.Sprintf("device copied 4096 random bytes %#x -> %#x", t.buf.Phys(1), t.buf.Phys(2)), nil
}

func (t *tester) checksum() (string, error) {
	src := t.buf.Page(1)[100:1100]
	st, err := t.dma(td.OpChecksum, t.buf.Phys(1)+100, 0, uint32(len(src)), 0)
	if err != nil {
		return "", err
	}
	if err := t.expectOK(td.OpChecksum, st, crc(src), uint32(len(src))); err != nil {
		return "", err
	}
	return fmt.Sprintf("device CRC-32C of 1000 guest bytes = %#08x, same as the guest's", crc(src)), nil
}

// windowOps moves a page guest -> window -> guest and reads the window
// through the guest's own mapping of BAR4 too.
func (t *tester) windowOps() (string, error) {
	const off = 0x2000
	src, back := t.buf.Page(1), t.buf.Page(3)
	clear(back)
	st, err := t.dma(td.OpGuestToWindow, t.buf.Phys(1), off, guest.PageSize, 0)
	if err != nil {
		return "", err
	}
	if err := t.expectOK(td.OpGuestToWindow, st, crc(src), guest.PageSize); err != nil {
		return "", err
	}
	seen := make([]byte, guest.PageSize)
	for i := 0; i < guest.PageSize; i += 4 {
		v := t.win.Read32(uint64(off + i))
		seen[i], seen[i+1], seen[i+2], seen[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	if !bytes.Equal(seen, src) {
		return "", fmt.Errorf("GUEST_TO_WINDOW: BAR4 as the guest reads it: %s", firstDiff(src, seen))
	}
	st, err = t.dma(td.OpWindowToGuest, off, t.buf.Phys(3), guest.PageSize, 0)
	if err != nil {
		return "", err
	}
	if err := t.expectOK(td.OpWindowToGuest, st, crc(src), guest.PageSize); err != nil {
		return "", err
	}
	if !bytes.Equal(back, src) {
		return "", fmt.Errorf("WINDOW_TO_GUEST: guest page: %s", firstDiff(src, back))
	}
	return "4096 bytes guest -> window (seen through the guest's BAR4 mapping) -> guest", nil
}

func (t *tester) windowDoorbell() error {
	const off, n = 0x5000, 1000
	data := make([]byte, n+3)
	t.random(data)
	data = data[:n]
	for i := 0; i < n; i += 4 { // single 32-bit stores; the tail word is zero-padded
		var w uint32
		for j := 0; j < 4 && i+j < n; j++ {
			w |= uint32(data[i+j]) << (8 * j)
		}
		t.win.Write32(uint64(off+i), w)
	}
	seq := t.win.Read32(td.WinDBAck) + 1
	t.win.Write32(td.WinDBOffset, off)
	t.win.Write32(td.WinDBLength, n)
	t.win.Write32(td.WinDBDoorbell, seq)
	deadline := time.Now().Add(10 * time.Second)
	for t.win.Read32(td.WinDBAck) != seq {
		if time.Now().After(deadline) {
			return fmt.Errorf("WIN_DB_ACK still %#x 10 s after ringing %#x", t.win.Read32(td.WinDBAck), seq)
		}
		time.Sleep(100 * time.Microsecond)
	}
	var errs []error
	if got, want := t.win.Read32(td.WinDBResult), crc(data); got != want {
		errs = append(errs, fmt.Errorf("WIN_DB_RESULT %#08x, want %#08x", got, want))
	}
	if got := t.win.Read32(td.WinDBStatus); got != uint32(td.CauseNone) {
		errs = append(errs, fmt.Errorf("WIN_DB_STATUS %v", td.Cause(got)))
	}
	if got := t.regs.Read32(td.RegWinSeq); got != seq {
		errs = append(errs, fmt.Errorf("WIN_SEQ %#x, want %#x", got, seq))
	}
	if got := t.regs.Read32(td.RegCntWinDoorbells); got < 1 {
		errs = append(errs, fmt.Errorf("CNT_WIN_DOORBELLS %d", got))
	}
	return errors.Join(errs...)
}

func (t *tester) trappedPage() error {
	for i := uint64(0); i < 64; i += 4 {
		t.win.Write32(td.WinTrapped+i, 0xa5a50000|uint32(i))
	}
	for i := uint64(0); i < 64; i += 4 {
		if got, want := t.win.Read32(td.WinTrapped+i), 0xa5a50000|uint32(i); got != want {
			return fmt.Errorf("window %#x reads %#x, want %#x", td.WinTrapped+i, got, want)
		}
	}
	return nil
}

// dmaFault runs an op that must fail with cause want.
func (t *tester) dmaFault(name string, want td.Cause, fn func() (uint32, error)) {
	st, err := fn()
	if err != nil {
		t.p.Failf(name, "%v", err)
		return
	}
	t.wantErrors++
	cause := td.Cause((st & td.StatusCauseMask) >> td.StatusCauseShift)
	if st&td.StatusError == 0 || cause != want {
		t.p.Failf(name, "DMA_STATUS %#x (cause %v), want ERROR with cause %v", st, cause, want)
		return
	}
	t.p.Passf(name, "the device refused the op with cause %v", cause)
}

func (t *tester) expectFault(iova uint64, write bool) error {
	st := t.regs.Read32(td.RegDMAStatus)
	if got := t.failAddr(); got != iova {
		return fmt.Errorf("DMA_FAIL %#x, want %#x", got, iova)
	}
	if (st&td.StatusFaultWrite != 0) != write {
		return fmt.Errorf("DMA_STATUS %#x: FAULT_WRITE should be %v", st, write)
	}
	return nil
}

func (t *tester) checkCounters() error {
	var errs []error
	if got := t.regs.Read32(td.RegCntDMAOps); got != t.wantOps {
		errs = append(errs, fmt.Errorf("CNT_DMA_OPS %d, want %d", got, t.wantOps))
	}
	if got := t.regs.Read32(td.RegCntDMAErrors); got != t.wantErrors {
		errs = append(errs, fmt.Errorf("CNT_DMA_ERRORS %d, want %d", got, t.wantErrors))
	}
	return errors.Join(errs...)
}

func (t *tester) softIRQ() error {
	before := t.regs.Read32(td.RegCntIRQs)
	t.regs.Write32(td.RegIRQRaise, 0)
	var errs []error
	if st := t.regs.Read32(td.RegIRQStatus); st&td.IRQStatusSoft == 0 {
		errs = append(errs, fmt.Errorf("IRQ_STATUS %#x after IRQ_RAISE, want SOFT set", st))
	}
	if got := t.regs.Read32(td.RegCntIRQs); got != before+1 {
		errs = append(errs, fmt.Errorf("CNT_IRQS %d -> %d, want +1", before, got))
	}
	t.regs.Write32(td.RegIRQStatus, td.IRQStatusAll)
	if st := t.regs.Read32(td.RegIRQStatus); st != 0 {
		errs = append(errs, fmt.Errorf("IRQ_STATUS %#x after writing ones, want 0", st))
	}
	return errors.Join(errs...)
}
