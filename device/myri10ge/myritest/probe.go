package myritest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"strings"
	"time"
)

// errno values the driver's messages print.
var errnos = map[string]int{"ENOSYS": 38, "E2BIG": 7, "ERANGE": 34, "ENXIO": 6, "EAGAIN": 11, "EINVAL": 22, "EIO": 5, "ENOMEM": 12}

// errnoOf returns the negative errno the driver would hold for err.
func errnoOf(err error) int {
	var ce *CmdError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		return -errnos[ce.Errno]
	case errors.Is(err, ErrTimeout):
		return -errnos["EAGAIN"]
	}
	return -errnos["ENXIO"]
}

// fwError is a firmware-load failure with the driver's errno, which
// decides whether adopting the running firmware is tried (-EIO: no).
type fwError struct {
	errno string
	msg   string
}

func (e *fwError) Error() string { return fmt.Sprintf("myritest: %s (-%s)", e.msg, e.errno) }

// Probe runs myri10ge_probe: PCI set-up, the firmware header and EEPROM
// strings, firmware selection, hotplug load or adoption, dummy RDMA,
// capabilities, slice probing, slice allocation, the reset sequence and
// the interrupt test (§3, §4.4 "Probe").
func (d *Driver) Probe(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.probed {
		return fmt.Errorf("%w: probe of a probed device", ErrState)
	}
	if err := d.pciSetup(); err != nil {
		return err
	}
	if err := d.ensureCmdBuffer(); err != nil {
		return err
	}
	hdr, err := d.readBE32(OffHeaderPtr)
	if err != nil {
		return err
	}
	hdr &= 0xffffc
	d.sramSize, err = d.readBE32(uint64(hdr) + hdrOffStringSpecs)
	if err != nil {
		return err
	}
	if d.sramSize > uint32(d.opts.BoardSpan) || d.sramSize <= OffFWStaging {
		d.logf(Err, "invalid sram_size %dB or board span %dB", int32(d.sramSize), d.opts.BoardSpan)
		return fmt.Errorf("%w: header string_specs (sram_size) %#x: need (%#x, %#x]", ErrProtocol, d.sramSize, OffFWStaging, d.opts.BoardSpan)
	}
	var strs [eepromSize]byte
	if err := d.memcpyFromIO(strs[:], uint64(d.sramSize)); err != nil {
		return err
	}
	d.eeprom, err = ParseEEPROM(strs[:])
	if err != nil {
		d.logf(Err, "failed to parse eeprom_strings")
		return err
	}
	d.mac = d.eeprom.MAC
	if err := d.selectFirmware(ctx); err != nil {
		return err
	}
	if err := d.loadFirmware(ctx, true); err != nil {
		d.logf(Err, "failed to load firmware")
		return err
	}
	if err := d.probeSlices(ctx); err != nil {
		return err
	}
	if err := d.allocSlices(); err != nil {
		d.logf(Err, "failed to alloc slice state")
		d.dummyRDMA(ctx, false)
		return err
	}
	d.numTxQueues = d.numSlices
	if err := d.reset(ctx); err != nil {
		d.logf(Err, "failed reset")
		d.freeSlices()
		d.dummyRDMA(ctx, false)
		return err
	}
	// Make sure an interrupt can be had, then give it back.
	if err := d.requestIRQ(); err != nil {
		d.freeSlices()
		d.dummyRDMA(ctx, false)
		return err
	}
	mode := d.mode
	d.freeIRQ()
	// pci_save_state, for the watchdog's restore.
	var err2 error
	if d.savedCommand, err2 = d.cfgRead16(pciCommand); err2 != nil {
		return err2
	}
	d.probed = true
	if mode == ModeMSIX {
		d.logf(Info, "%d MSI-X IRQs, tx bndry %d, fw %s, MTRR Disabled, WC Enabled", d.numSlices, d.txBoundary, d.fwName)
	} else {
		name := "MSI"
		if mode == ModeINTx {
			name = "xPIC"
		}
		d.logf(Info, "%s IRQ, tx bndry %d, fw %s, MTRR Disabled, WC Enabled", name, d.txBoundary, d.fwName)
	}
	return nil
}

// pciSetup is what probe does to config space before touching BAR0:
// pci_enable_device (Command.MEM), the vendor-specific capability,
// pcie_set_readrq(4096) and pci_set_master (Command.MASTER), and the
// capabilities the PCI core finds for MSI and MSI-X.
func (d *Driver) pciSetup() error {
	if err := d.commandSet(pciCommandMemory); err != nil {
		return err
	}
	var err error
	if d.vsOffset, err = d.findCap(capIDVendor); err != nil {
		return err
	}
	if d.pcieCap, err = d.findCap(capIDPCIe); err != nil {
		return err
	}
	if d.pcieCap != 0 {
		ctl, err := d.cfgRead16(d.pcieCap + pcieDevCtl)
		if err != nil {
			return err
		}
		const mrrs4096 = 5 << 12
		if err := d.cfgWrite16(d.pcieCap+pcieDevCtl, ctl&^pcieDevCtlMRRS|mrrs4096); err != nil {
			return err
		}
	}
	if err := d.commandSet(pciCommandMaster); err != nil {
		return err
	}
	if d.msiCap, err = d.findCap(capIDMSI); err != nil {
		return err
	}
	d.msixCap, err = d.findCap(capIDMSIX)
	return err
}

// commandSet sets bit in the Command register unless it is set already,
// as pci_enable_device and pci_set_master do.
func (d *Driver) commandSet(bit uint16) error {
	cmd, err := d.cfgRead16(pciCommand)
	if err != nil || cmd&bit != 0 {
		return err
	}
	return d.cfgWrite16(pciCommand, cmd|bit)
}

// selectFirmware is myri10ge_select_firmware (§3.4).
func (d *Driver) selectFirmware(ctx context.Context) error {
	switch d.opts.ForceFirmware {
	case 0:
		var lnk uint16
		if d.pcieCap != 0 {
			var err error
			if lnk, err = d.cfgRead16(d.pcieCap + pcieLnkSta); err != nil {
				return err
			}
		}
		width := int(lnk>>4) & 0x3f
		if width < 8 {
			d.logf(Info, "PCIE x%d Link", width)
			d.txBoundary, d.fwName = 4096, FWAligned
		} else if err := d.firmwareProbe(ctx); err != nil {
			return err
		}
	case 1:
		d.logf(Info, "Assuming aligned completions (forced)")
		d.txBoundary, d.fwName = 4096, FWAligned
	default:
		d.logf(Info, "Assuming unaligned completions (forced)")
		d.txBoundary, d.fwName = 2048, FWUnaligned
	}
	if d.opts.FWName != "" {
		d.fwName = d.opts.FWName
		d.logf(Info, "overriding firmware to %s", d.fwName)
	}
	return nil
}

// firmwareProbe is myri10ge_firmware_probe: for links of 8 lanes or more,
// try the aligned firmware with UNALIGNED_TEST.
func (d *Driver) firmwareProbe(ctx context.Context) error {
	d.txBoundary = 4096
	var ctl uint16
	if d.pcieCap != 0 {
		var err error
		if ctl, err = d.cfgRead16(d.pcieCap + pcieDevCtl); err != nil {
			return err
		}
	}
	if rq := 128 << ((ctl & pcieDevCtlMRRS) >> 12); rq != 4096 {
		d.logf(Warn, "Max Read Request size != 4096 (%d)", rq)
		d.txBoundary = 2048
	}
	d.fwName = FWAligned
	err := d.loadFirmware(ctx, true)
	if err == nil {
		err = d.dmaTest(ctx, CmdUnalignedTest)
		if err == nil {
			return nil // keep the aligned firmware
		}
		if isCrash(err) {
			return err
		}
		var ce *CmdError
		if !errors.As(err, &ce) || ce.Errno != "E2BIG" {
			d.logf(Warn, "DMA test failed: %d", errnoOf(err))
		}
		if IsUnknown(err) {
			d.logf(Warn, "Falling back to ethp! Please install up to date fw")
		}
	} else if isFatal(err) {
		return err
	}
	d.txBoundary, d.fwName = 2048, FWUnaligned
	return nil
}

// isFatal tells errors that stop the fake driver (bus failures, protocol
// violations, cancelled contexts) from the statuses the real driver
// handles.
func isFatal(err error) bool {
	var ce *CmdError
	var fe *fwError
	return err != nil && !errors.As(err, &ce) && !errors.As(err, &fe) && !errors.Is(err, ErrTimeout)
}

// errCrash marks a device answer that crashes the guest kernel.
var errCrash = errors.New("the guest kernel would crash")

func isCrash(err error) bool { return errors.Is(err, errCrash) }

// loadFirmware is myri10ge_load_firmware: the hotplug file if
// request_firmware finds it, else (adopt) the running firmware; then the
// dummy RDMA and the capability commands (§3.5, §3.6).
func (d *Driver) loadFirmware(ctx context.Context, adopt bool) error {
	size, err := d.loadHotplugFirmware(ctx)
	if err != nil {
		if isFatal(err) || !adopt {
			return err
		}
		d.benign(Warn, "hotplug firmware loading failed")
		var fe *fwError
		if errors.As(err, &fe) && fe.errno == "EIO" {
			return err // a bad CRC is never adopted
		}
		if err := d.adoptRunningFirmware(); err != nil {
			d.logf(Err, "failed to adopt running firmware")
			return err
		}
		d.logf(Info, "Successfully adopted running firmware")
		if d.txBoundary == 4096 {
			d.benign(Warn, "Using firmware currently running on NIC.  For optimal")
			d.benign(Warn, "performance consider loading optimized firmware")
			d.benign(Warn, "via hotplug")
		}
		d.fwName, d.txBoundary = fwAdopted, 2048
		if err := d.dummyRDMA(ctx, true); err != nil {
			return err
		}
		return d.firmwareCapabilities(ctx)
	}

	// Hand off to the loaded image and wait for its confirmation: msleep(1),
	// then up to 9 sleeps of 1<<i ms.
	ok, err := d.confirmedBlock(ctx, OffBootHandoff, 512*time.Millisecond,
		OffFWStaging+8, // where the code starts
		size-8,         // its length
		8,              // where to copy it
		0)              // where to jump
	if err != nil {
		return err
	}
	if !ok {
		d.logf(Err, "handoff failed")
		return fmt.Errorf("%w: no handoff confirmation (0xffffffff at the response address) within 512 ms", ErrTimeout)
	}
	if err := d.dummyRDMA(ctx, true); err != nil {
		return err
	}
	return d.firmwareCapabilities(ctx)
}

// confirmedBlock writes a boot block that the device confirms by DMA (the
// handoff and the dummy RDMA, §3.7) and waits up to budget for the
// confirmation. The block holds the confirmation address and word, then
// args from offset 0x0C; the words after them are the stack garbage the
// driver leaves there.
func (d *Driver) confirmedBlock(ctx context.Context, off uint64, budget time.Duration, args ...uint32) (bool, error) {
	d.mem.storeBE32(d.cmdBus+respOffData, 0)
	var blk [cmdBlockSize]byte
	be := binary.BigEndian
	be.PutUint32(blk[0x00:], uint32(d.cmdBus>>32))
	be.PutUint32(blk[0x04:], uint32(d.cmdBus))
	be.PutUint32(blk[0x08:], confirmData)
	o := 0x0C
	for _, a := range args {
		be.PutUint32(blk[o:], a)
		o += 4
	}
	for ; o < cmdBlockSize; o += 4 {
		be.PutUint32(blk[o:], d.uninit())
	}
	if err := d.pioCopy(off, blk[:]); err != nil {
		return false, err
	}
	return d.poll(ctx, budget, d.confirmed)
}

// confirmed reports whether the device wrote the confirmation word.
func (d *Driver) confirmed() bool { return d.mem.loadBE32(d.cmdBus+respOffData) == confirmData }

// loadHotplugFirmware is myri10ge_load_hotplug_firmware: checks, PIO copy
// in 256-byte chunks each followed by a readb, read back and CRC compare.
func (d *Driver) loadHotplugFirmware(_ context.Context) (uint32, error) {
	fw, ok := d.opts.Firmware[d.fwName]
	if !ok {
		d.benign(Warn, "Direct firmware load for %s failed with error -2", d.fwName)
		d.benign(Err, "Unable to load %s firmware image via hotplug", d.fwName)
		return 0, &fwError{"EINVAL", "no firmware file " + d.fwName}
	}
	size := len(fw)
	if size >= int(d.sramSize)-OffFWStaging || size < OffHeaderPtr+4 {
		d.logf(Err, "Firmware size invalid:%d", size)
		return 0, &fwError{"EINVAL", fmt.Sprintf("firmware size %d", size)}
	}
	hdrOff := int(binary.BigEndian.Uint32(fw[OffHeaderPtr:]))
	if hdrOff&3 != 0 || hdrOff+hdrSize > size || hdrOff < 0 {
		d.logf(Err, "Bad firmware file")
		return 0, &fwError{"EINVAL", fmt.Sprintf("firmware header offset %#x", hdrOff)}
	}
	if err := d.validateFirmware(fw[hdrOff : hdrOff+hdrSize]); err != nil {
		return 0, err
	}
	crc := ^crc32.ChecksumIEEE(fw) // crc32(~0, ...) without the final inversion
	for i := 0; i < size; i += 256 {
		if err := d.pioCopy(OffFWStaging+uint64(i), fw[i:min(i+256, size)]); err != nil {
			return 0, err
		}
		if _, err := d.readB(0); err != nil {
			return 0, err
		}
	}
	back := make([]byte, size)
	if err := d.memcpyFromIO(back, OffFWStaging); err != nil {
		return 0, err
	}
	if reread := ^crc32.ChecksumIEEE(back); reread != crc {
		d.logf(Err, "CRC failed(fw-len=%d), got 0x%x (expect 0x%x)", size, reread, crc)
		return 0, &fwError{"EIO", fmt.Sprintf("firmware read back from BAR0 %#x differs from what was written", OffFWStaging)}
	}
	return uint32(size), nil
}

// adoptRunningFirmware is myri10ge_adopt_running_firmware (§3.5).
func (d *Driver) adoptRunningFirmware() error {
	hdr, err := d.readBE32(OffHeaderPtr)
	if err != nil {
		return err
	}
	if hdr&3 != 0 || uint64(hdr)+hdrSize > uint64(d.sramSize) {
		d.logf(Err, "Running firmware has bad header offset (%d)", int32(hdr))
		return &fwError{"EIO", fmt.Sprintf("running firmware header offset %#x", hdr)}
	}
	var h [hdrSize]byte
	if err := d.memcpyFromIO(h[:], uint64(hdr)); err != nil {
		return err
	}
	err = d.validateFirmware(h[:])
	if d.fwVer[0] == 1 && d.fwVer[1] == 4 && d.fwVer[2] >= 4 && d.fwVer[2] <= 11 {
		d.rxFilterBug = true
		d.logf(Warn, "Adopting fw %d.%d.%d: working around rx filter bug", d.fwVer[0], d.fwVer[1], d.fwVer[2])
	}
	return err
}

// validateFirmware is myri10ge_validate_firmware: type "ETH " and version
// 1.4.x.
func (d *Driver) validateFirmware(h []byte) error {
	if t := binary.BigEndian.Uint32(h[hdrOffType:]); t != mcpTypeETH {
		d.logf(Err, "Bad firmware type: 0x%x", t)
		return &fwError{"EINVAL", fmt.Sprintf("firmware type %#x, want \"ETH \"", t)}
	}
	v := h[hdrOffVersion : hdrOffVersion+hdrVersionLen-1] // strncpy to 128, NUL at 127
	if i := strings.IndexByte(string(v), 0); i >= 0 {
		v = v[:i]
	}
	d.fwVersion = string(v)
	parseVersion(d.fwVersion, &d.fwVer)
	if d.fwVer[0] != 1 || d.fwVer[1] != 4 {
		d.logf(Err, "Found firmware version %s", d.fwVersion)
		d.logf(Err, "Driver needs 1.4")
		return &fwError{"EINVAL", fmt.Sprintf("firmware version %q, want 1.4.x", d.fwVersion)}
	}
	return nil
}

// dummyRDMA is myri10ge_dummy_rdma (§3.7). A missing confirmation is only
// logged, as in the driver.
func (d *Driver) dummyRDMA(ctx context.Context, enable bool) error {
	var on uint32
	if enable {
		on = 1
	}
	ok, err := d.confirmedBlock(ctx, OffDummyRDMA, 20*time.Millisecond,
		uint32(d.cmdBus>>32), uint32(d.cmdBus), on)
	if err != nil {
		return err
	}
	if !ok {
		what := "disable"
		if enable {
			what = "enable"
		}
		d.logf(Err, "dummy rdma %s failed", what)
	}
	return nil
}

// firmwareCapabilities is myri10ge_get_firmware_capabilities.
func (d *Driver) firmwareCapabilities(ctx context.Context) error {
	c := d.freshCmd()
	d.tso6 = false
	if err := d.sendCmd(ctx, CmdGetMaxTSO6HdrSize, &c, false); err == nil {
		d.maxTSO6, d.tso6 = c.d0, true
	} else if isFatal(err) {
		return err
	}
	if err := d.sendCmd(ctx, CmdGetRxRingSize, &c, false); err != nil {
		d.logf(Err, "failed MXGEFW_CMD_GET_RX_RING_SIZE")
		return err
	}
	if err := d.checkRingSize(CmdGetRxRingSize, c.d0, recvDescSize); err != nil {
		return err
	}
	d.maxIntr = 2 * int(c.d0/recvDescSize)
	return nil
}

// checkRingSize rejects ring sizes the driver would turn into a broken
// mask (entries - 1) or that its 8-entry groups cannot fill.
func (d *Driver) checkRingSize(cmd Cmd, bytes uint32, entry int) error {
	n := bytes / uint32(entry)
	if bytes%uint32(entry) != 0 || n < recvGroup || bits.OnesCount32(n) != 1 || bytes > uint32(d.opts.BoardSpan) {
		return d.violation("%s returned %d bytes: not a power-of-two number (>= 8) of %d-byte entries; "+
			"the driver uses entries-1 as its index mask", cmd, bytes, entry)
	}
	return nil
}

// dmaTest is myri10ge_dma_test: three transfers of tx_boundary bytes to a
// page, read, write and read+write (or the unaligned test). The driver
// divides by the low 16 bits of each answer.
func (d *Driver) dmaTest(ctx context.Context, test Cmd) error {
	page, err := d.mem.Alloc(pageSize, pageSize)
	if err != nil {
		return err
	}
	defer d.mem.Free(page)
	n := uint32(d.txBoundary)
	var which string
	steps := []struct {
		name string
		mul  uint32
		bw   *uint32
		x    uint32
	}{
		{"read", 0x10000, &d.dmaBW[0], 2},
		{"write", 0x1, &d.dmaBW[1], 2},
		{"read/write", 0x10001, &d.dmaBW[2], 4},
	}
	for _, s := range steps {
		c := cmdWords{uint32(page), uint32(page >> 32), n * s.mul}
		if err = d.sendCmd(ctx, test, &c, false); err != nil {
			which = s.name
			break
		}
		if c.d0&0xffff == 0 {
			d.logf(Err, "divide error in myri10ge_dma_test")
			return fmt.Errorf("%w: %w: %s %s test answered %#x: the driver divides by its low 16 bits (ticks)", ErrProtocol, errCrash, test, s.name, c.d0)
		}
		*s.bw = (c.d0 >> 16) * n * s.x / (c.d0 & 0xffff)
	}
	if err != nil && test != CmdUnalignedTest && !isFatal(err) {
		d.logf(Warn, "DMA %s benchmark failed: %d", which, errnoOf(err))
	}
	return err
}

// DMABandwidth returns the read, write and read+write figures the last
// DMA test computed (MB/s, as ethtool -S shows them).
func (d *Driver) DMABandwidth() [3]uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dmaBW
}

// probeSlices is myri10ge_probe_slices (§1.4): more than one slice needs
// MSI-X, the parameter and an RSS firmware file.
func (d *Driver) probeSlices(ctx context.Context) error {
	d.numSlices = 1
	ncpus := d.opts.NumCPUs
	maxSl := d.opts.MaxSlices
	if maxSl == 0 {
		maxSl = 1
	}
	if maxSl == 1 || d.msixCap == 0 || (maxSl == -1 && ncpus < 2) {
		return nil
	}
	oldFW := d.fwName
	switch {
	case d.opts.FWName != "":
		d.logf(Info, "overriding rss firmware to %s", d.opts.FWName)
		d.fwName = d.opts.FWName
	case oldFW == FWAligned:
		d.fwName = FWRSSAligned
	default:
		d.fwName = FWRSSUnaligned
	}
	if err := d.loadFirmware(ctx, false); err != nil {
		if isFatal(err) {
			return err
		}
		d.logf(Info, "Rss firmware not found")
		return nil
	}
	abort := func() error {
		d.numSlices = 1
		d.fwName = oldFW
		if err := d.loadFirmware(ctx, false); isFatal(err) {
			return err
		}
		return nil
	}
	c := cmdWords{}
	if err := d.sendCmd(ctx, CmdReset, &c, false); err != nil {
		if isFatal(err) {
			return err
		}
		d.logf(Err, "failed reset")
		return abort()
	}
	d.maxIntr = int(c.d0 / slotSize)
	c.d0 = uint32(d.maxIntr * slotSize)
	if err := d.sendCmd(ctx, CmdSetIntrqSize, &c, false); err != nil {
		if isFatal(err) {
			return err
		}
		d.logf(Err, "failed MXGEFW_CMD_SET_INTRQ_SIZE")
		return abort()
	}
	if err := d.sendCmd(ctx, CmdGetMaxRSSQueues, &c, false); err != nil {
		if isFatal(err) {
			return err
		}
		return abort()
	}
	n := int(c.d0)
	if d.opts.NoMSI {
		return abort()
	}
	if maxSl == -1 {
		maxSl = ncpus
	}
	n = min(n, maxSl)
	table := 0
	if d.msixCap != 0 {
		flags, err := d.cfgRead16(d.msixCap + msixFlags)
		if err != nil {
			return err
		}
		table = int(flags&0x7ff) + 1
	}
	if n > 1 {
		n = 1 << (bits.Len(uint(n)) - 1) // rounddown_pow_of_two
		if n > 1 && table >= n {
			// pci_enable_msix_range(n, n) succeeds (and is undone at once).
			if d.maxIntr <= 0 || bits.OnesCount(uint(d.maxIntr)) != 1 {
				return d.violation("RESET answered %d interrupt-queue bytes: the driver needs a power of two of 4-byte slots", d.maxIntr*slotSize)
			}
			d.numSlices = n
			return nil
		}
	}
	return abort()
}

// allocSlices is myri10ge_alloc_slices: per slice a coherent rx_done ring
// of max_intr_slots slots and an interrupt block.
func (d *Driver) allocSlices() error {
	if d.maxIntr <= 0 {
		return d.violation("GET_RX_RING_SIZE left max_intr_slots at %d", d.maxIntr)
	}
	d.ss = make([]*sliceState, d.numSlices)
	for i := range d.ss {
		s := &sliceState{idx: i}
		var err error
		if s.rxDone, err = d.mem.Alloc(d.maxIntr*slotSize, pageSize); err != nil {
			d.freeSlices()
			return err
		}
		if s.stats, err = d.mem.Alloc(irqDataSize, pageSize); err != nil {
			d.mem.Free(s.rxDone)
			d.freeSlices()
			return err
		}
		d.ss[i] = s
	}
	return nil
}

// freeSlices is myri10ge_free_slices.
func (d *Driver) freeSlices() {
	for _, s := range d.ss {
		if s != nil {
			d.mem.Free(s.rxDone)
			d.mem.Free(s.stats)
		}
	}
	d.ss = nil
}

// reset is myri10ge_reset (§4.4 step 7).
func (d *Driver) reset(ctx context.Context) error {
	c := cmdWords{}
	if err := d.sendCmd(ctx, CmdReset, &c, false); err != nil {
		d.logf(Err, "failed reset")
		return err
	}
	for _, s := range d.ss {
		s.irqHeld, s.rxHeld = false, false // both tokens are home after RESET
	}
	if err := d.dmaTest(ctx, CmdDMATest); isFatal(err) {
		return err
	}
	c.d0 = 0 // MXGEFW_RSS_MCP_SLOT_TYPE_MIN: 4-byte slots
	if err := d.sendCmd(ctx, CmdSetRSSMCPSlotType, &c, false); isFatal(err) {
		return err
	}
	bytes := d.maxIntr * slotSize
	c.d0 = uint32(bytes)
	status := d.sendCmd(ctx, CmdSetIntrqSize, &c, false)
	if isFatal(status) {
		return status
	}
	if d.numSlices > 1 {
		status = d.sendCmd(ctx, CmdGetMaxRSSQueues, &c, false)
		if isFatal(status) {
			return status
		}
		if status != nil {
			d.logf(Err, "failed to get number of slices")
		}
		c.d0, c.d1 = uint32(d.numSlices), rssIntrOnePerSlice
		if d.numTxQueues > 1 {
			c.d1 |= rssMultipleTx
		}
		status = d.sendCmd(ctx, CmdEnableRSSQueues, &c, false)
		if status != nil && !isFatal(status) && d.numTxQueues > 1 {
			d.numTxQueues = 1
			c.d0, c.d1 = uint32(d.numSlices), rssIntrOnePerSlice
			status = d.sendCmd(ctx, CmdEnableRSSQueues, &c, false)
		}
		if status != nil {
			if !isFatal(status) {
				d.logf(Err, "failed to set number of slices")
			}
			return status
		}
	}
	keep := func(err error) error {
		if status == nil {
			status = err
		}
		return err
	}
	for i, s := range d.ss {
		c.d0, c.d1, c.d2 = uint32(s.rxDone), uint32(s.rxDone>>32), uint32(i)
		if err := keep(d.sendCmd(ctx, CmdSetIntrqDMA, &c, false)); isFatal(err) {
			return err
		}
	}
	if err := keep(d.sendCmd(ctx, CmdGetIRQAckOffset, &c, false)); isFatal(err) {
		return err
	}
	ack := c.d0
	if err := keep(d.sendCmd(ctx, CmdGetIRQDeassertOffset, &c, false)); isFatal(err) {
		return err
	}
	deassert := c.d0
	if err := keep(d.sendCmd(ctx, CmdGetIntrCoalDelayOffset, &c, false)); isFatal(err) {
		return err
	}
	coal := c.d0
	if status != nil {
		d.logf(Err, "failed set interrupt parameters")
		return status
	}
	if err := d.checkOffset(CmdGetIRQAckOffset, ack, 8*len(d.ss)); err != nil {
		return err
	}
	if err := d.checkOffset(CmdGetIRQDeassertOffset, deassert, 4); err != nil {
		return err
	}
	if err := d.checkOffset(CmdGetIntrCoalDelayOffset, coal, 4); err != nil {
		return err
	}
	for i, s := range d.ss {
		s.irqClaim = uint64(ack) + 8*uint64(i)
	}
	d.irqDeassert, d.coalOff = uint64(deassert), uint64(coal)
	if err := d.putBE32(d.coalOff, uint32(d.coalDelay)); err != nil {
		return err
	}
	if d.opts.DCA {
		if err := d.sendCmd(ctx, CmdGetDCAOffset, &c, false); isFatal(err) {
			return err
		}
	}
	// The driver's shared state back to 0.
	d.linkChanges = 0
	for _, s := range d.ss {
		clear(d.mem.mustBytes(s.rxDone, bytes))
		s.tx.req, s.tx.done, s.tx.pktStart, s.tx.pktDone = 0, 0, 0, 0
		s.big.cnt, s.small.cnt = 0, 0
		s.rxDoneIdx, s.rxDoneCnt = 0, 0
		s.tx.wakeQueue, s.tx.stopQueue = 0, 0
	}
	err := d.updateMACAddress(ctx, d.mac)
	if isFatal(err) {
		return err
	}
	if e := d.changePause(ctx, d.pause); isFatal(e) {
		return e
	}
	if e := d.setMulticastList(ctx); isFatal(e) {
		return e
	}
	return err
}

// checkOffset rejects a BAR0 offset from the device that the driver would
// turn into a store outside its mapping.
func (d *Driver) checkOffset(cmd Cmd, off uint32, size int) error {
	if uint64(off)+uint64(size) > uint64(d.opts.BoardSpan) {
		return d.violation("%s returned %#x: %d bytes there fall outside the %#x-byte BAR0 the driver mapped", cmd, off, size, d.opts.BoardSpan)
	}
	return nil
}

// updateMACAddress is myri10ge_update_mac_address.
func (d *Driver) updateMACAddress(ctx context.Context, a [6]byte) error {
	c := d.freshCmd()
	c.d0 = uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	c.d1 = uint32(a[4])<<8 | uint32(a[5])
	return d.sendCmd(ctx, CmdSetMACAddress, &c, false)
}

// changePause is myri10ge_change_pause.
func (d *Driver) changePause(ctx context.Context, pause bool) error {
	cmd := CmdDisableFlowControl
	if pause {
		cmd = CmdEnableFlowControl
	}
	c := d.freshCmd()
	if err := d.sendCmd(ctx, cmd, &c, false); err != nil {
		d.logf(Err, "Failed to set flow control mode")
		return err
	}
	d.pause = pause
	return nil
}

// setMulticastList is myri10ge_set_multicast_list (ndo_set_rx_mode): all
// atomic commands, 1 ms each (§4.4).
func (d *Driver) setMulticastList(ctx context.Context) error {
	cmd := CmdDisablePromisc
	if d.promisc {
		cmd = CmdEnablePromisc
	}
	c := d.freshCmd()
	if err := d.sendCmd(ctx, cmd, &c, true); err != nil {
		d.logf(Err, "Failed to set promisc mode")
		if isFatal(err) {
			return err
		}
	}
	if !d.mcastFW {
		return nil
	}
	c = d.freshCmd()
	if err := d.sendCmd(ctx, CmdEnableAllMulti, &c, true); err != nil {
		d.logf(Err, "Failed MXGEFW_ENABLE_ALLMULTI, error status: %d", errnoOf(err))
		return err
	}
	if d.allMulti || d.rxFilterBug {
		return nil
	}
	if err := d.sendCmd(ctx, CmdLeaveAllMulticast, &c, true); err != nil {
		d.logf(Err, "Failed MXGEFW_LEAVE_ALL_MULTICAST_GROUPS, error status: %d", errnoOf(err))
		return err
	}
	var data [8]byte
	for _, a := range d.multicastList() {
		copy(data[:6], a)
		c.d0 = binary.BigEndian.Uint32(data[0:4])
		c.d1 = binary.BigEndian.Uint32(data[4:8])
		if err := d.sendCmd(ctx, CmdJoinMulticastGroup, &c, true); err != nil {
			d.logf(Err, "Failed MXGEFW_JOIN_MULTICAST_GROUP, error status:%d %s", errnoOf(err), a)
			return err
		}
	}
	if err := d.sendCmd(ctx, CmdDisableAllMulti, &c, true); err != nil {
		d.logf(Err, "Failed MXGEFW_DISABLE_ALLMULTI, error status: %d", errnoOf(err))
		return err
	}
	return nil
}
