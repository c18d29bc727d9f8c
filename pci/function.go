package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/msi"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Function is one PCI function as a vfio-user client sees it: it wraps a
// Device with config space, capabilities and the MSI-X table, and answers
// the region, IRQ and reset calls of the protocol server.
//
// Its methods are safe for concurrent use, but the server calls them from
// one goroutine, in the client's order. Device methods are called without
// the Function's lock held; a vendor capability's ConfigHandler is called
// with it held and must not call back into the Function.
type Function struct {
	dev     Device
	spec    Spec
	lay     layout
	log     *logrus.Entry // component=pci
	hostLog *logrus.Entry // handed to the device as given to NewFunction
	irq     *msi.Table
	traps   [6][]trap // per BAR: MSI-X table and PBA ranges served here

	warnings *ratelog.Limiter // client mistakes, per function: reconnecting does not reset it

	mu   sync.Mutex
	cfg  *config
	msix []byte   // MSI-X table, msixEntrySize bytes per vector
	mem  *dma.Map // non-nil while a client is attached
}

// trap is a range of a BAR that the Function serves itself.
type trap struct {
	off, end uint64
	pba      bool // else the MSI-X table
}

// NewFunction builds the config space of dev.Spec() and the function's
// interrupt table. The spec is validated first (power-of-two BARs of at
// least 4 KiB, a free upper slot for 64-bit BARs, MSI-X table and PBA
// inside memory BARs and outside mmappable areas, capability sizes); all
// problems are reported in one error. log should carry the device field;
// the function logs with component=pci and hands log to the device as is.
func NewFunction(dev Device, log *logrus.Entry) (*Function, error) {
	if dev == nil {
		return nil, errors.New("pci: new function: nil device")
	}
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	spec := copySpec(dev.Spec())
	if err := validate(&spec); err != nil {
		return nil, err
	}
	lay, err := newLayout(&spec)
	if err != nil {
		return nil, err
	}

	var counts [msi.NumIndexes]int
	if spec.InterruptPin != 0 {
		counts[msi.INTx] = 1
	}
	if spec.MSI != nil {
		counts[msi.MSI] = spec.MSI.Vectors
	}
	if spec.MSIX != nil {
		// Sized from the table size in config space, which is what QEMU
		// uses (vfio-user-notes 5.2).
		counts[msi.MSIX] = spec.MSIX.Vectors
	}
	counts[msi.ERR] = 1

	f := &Function{
		dev:     dev,
		spec:    spec,
		lay:     lay,
		log:     log.WithField("component", "pci"),
		hostLog: log,
		irq:     msi.NewTable(counts, log.WithField("component", "msi")),
		cfg:     newConfig(&spec, lay),

		warnings: ratelog.New(),
	}
	if x := spec.MSIX; x != nil {
		f.msix = make([]byte, x.Vectors*msixEntrySize)
		f.resetMSIXTable()
		tbl := trap{off: uint64(x.TableOffset), end: uint64(x.TableOffset) + uint64(len(f.msix))}
		pba := trap{off: uint64(x.PBAOffset), end: uint64(x.PBAOffset) + msixPBALen(x.Vectors), pba: true}
		f.traps[x.TableBAR] = append(f.traps[x.TableBAR], tbl)
		f.traps[x.PBABAR] = append(f.traps[x.PBABAR], pba)
		if x.TableBAR == x.PBABAR && pba.off < tbl.off {
			f.traps[x.TableBAR][0], f.traps[x.TableBAR][1] = pba, tbl
		}
	}
	return f, nil
}

// copySpec copies s deeply enough that the device cannot change the
// function's view of its capabilities later.
func copySpec(s Spec) Spec {
	s.PM, s.MSI, s.Vendor, s.PCIe, s.MSIX = clone(s.PM), clone(s.MSI), clone(s.Vendor), clone(s.PCIe), clone(s.MSIX)
	return s
}

// clone returns a copy of *p, or nil.
func clone[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// Spec returns the function's description, as read from the device.
func (f *Function) Spec() Spec { return copySpec(f.spec) }

// DeviceInfo answers DEVICE_GET_INFO; the server adds the PCI and RESET
// flags.
func (f *Function) DeviceInfo() (numRegions, numIRQs uint32) {
	return NumRegions, NumIRQIndexes
}

// RegionInfo answers GET_REGION_INFO. Absent BARs, the upper halves of
// 64-bit BARs, the ROM and VGA have size 0.
func (f *Function) RegionInfo(index uint32) (RegionInfo, error) {
	ri := RegionInfo{Fd: -1}
	switch {
	case index < RegionROM:
		b := &f.spec.BARs[index]
		if b.Size == 0 {
			return ri, nil
		}
		ri.Size = b.Size
		ri.Flags = RegionRead | RegionWrite
		if b.Window == nil {
			return ri, nil
		}
		areas, fd := b.Window.Areas(), b.Window.Fd()
		if len(areas) == 0 || fd < 0 {
			// Everything trapped (an MMAP flag without areas would mean
			// "map the whole BAR" to the client), or the window closed.
			return ri, nil
		}
		ri.Flags |= RegionMmap
		ri.Fd = fd
		if len(areas) == 1 && areas[0].Offset == 0 && areas[0].Size == b.Size {
			return ri, nil
		}
		ri.Sparse = make([]Area, len(areas))
		for i, a := range areas {
			ri.Sparse[i] = Area{Offset: a.Offset, Size: a.Size}
		}
		return ri, nil
	case index == RegionROM, index == RegionVGA:
		return ri, nil
	case index == RegionConfig:
		ri.Size = uint64(f.lay.size)
		ri.Flags = RegionRead | RegionWrite
		return ri, nil
	}
	return RegionInfo{}, fmt.Errorf("pci: region info %d: no such region: %w", index, unix.EINVAL)
}

// IRQInfo answers GET_IRQ_INFO with the flags Linux vfio-pci reports.
func (f *Function) IRQInfo(index uint32) (IRQInfo, error) {
	switch msi.Index(index) {
	case msi.INTx:
		if f.spec.InterruptPin == 0 {
			return IRQInfo{}, nil
		}
		return IRQInfo{Count: 1, Flags: IRQEventfd | IRQMaskable | IRQAutomasked}, nil
	case msi.MSI:
		if f.spec.MSI == nil {
			return IRQInfo{}, nil
		}
		return IRQInfo{Count: uint32(f.spec.MSI.Vectors), Flags: IRQEventfd | IRQNoResize}, nil
	case msi.MSIX:
		if f.spec.MSIX == nil {
			return IRQInfo{}, nil
		}
		return IRQInfo{Count: uint32(f.spec.MSIX.Vectors), Flags: IRQEventfd | IRQNoResize}, nil
	case msi.ERR:
		// Firing it would stop the VM (vfio-user-notes 5.4); the eventfd
		// is accepted and never signalled.
		return IRQInfo{Count: 1, Flags: IRQEventfd}, nil
	}
	// REQ: vfio-user-pci never asks (vfio-user-notes 5.4).
	return IRQInfo{}, fmt.Errorf("pci: irq info %s: not supported: %w", msi.Index(index), unix.EINVAL)
}

// SetIRQs forwards SET_IRQS to the function's interrupt table. It takes
// ownership of fds.
func (f *Function) SetIRQs(index, flags, start, count uint32, fds []int, data []byte) error {
	if err := f.irq.SetIRQs(msi.Index(index), flags, start, count, fds, data); err != nil {
		return fmt.Errorf("pci: set irqs %s: %w", msi.Index(index), err)
	}
	return nil
}

// ReadRegion serves REGION_READ: config space of any length at any
// offset inside it, or a BAR (the MSI-X table and PBA here, the rest from
// the device). An access outside the region fails with EINVAL.
func (f *Function) ReadRegion(index uint32, off uint64, p []byte) error {
	return f.access(index, off, p, false)
}

// WriteRegion serves REGION_WRITE; see ReadRegion. Config writes go
// through the registers' write masks and side effects.
func (f *Function) WriteRegion(index uint32, off uint64, p []byte) error {
	return f.access(index, off, p, true)
}

func (f *Function) access(index uint32, off uint64, p []byte, write bool) error {
	var size uint64
	switch {
	case index < RegionROM:
		size = f.spec.BARs[index].Size
	case index == RegionConfig:
		size = uint64(f.lay.size)
	}
	if len(p) == 0 || off >= size || uint64(len(p)) > size-off {
		f.warn("region access out of range", logrus.Fields{"region": index, "off": off, "len": len(p), "size": size})
		return fmt.Errorf("pci: region %d %s %d@%#x: outside the region (size %#x): %w",
			index, rw(write), len(p), off, size, unix.EINVAL)
	}
	if index == RegionConfig {
		f.mu.Lock()
		defer f.mu.Unlock()
		if write {
			f.writeConfig(int(off), p)
		} else {
			f.readConfig(int(off), p)
		}
		return nil
	}
	return f.accessBAR(int(index), off, p, write)
}

func rw(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// readConfig copies the stored registers and overlays the live ones.
func (f *Function) readConfig(off int, p []byte) {
	copy(p, f.cfg.data[off:])
	n := len(p)
	// STATUS.INTERRUPT reflects the INTx line whatever INTX_DISABLE says
	// (PCI 3.0, 6.2.3; vfio-user-notes 5.3).
	if f.spec.InterruptPin != 0 && overlaps(off, n, regStatus, 1) && f.irq.INTxAsserted() {
		p[regStatus-off] |= statusInterrupt
	}
	if at := f.lay.msiPending; at != 0 && overlaps(off, n, at, 4) {
		var w [4]byte
		var bits uint32
		for v := 0; v < f.spec.MSI.Vectors; v++ {
			if f.irq.Pending(msi.MSI, v) {
				bits |= 1 << v
			}
		}
		binary.LittleEndian.PutUint32(w[:], bits)
		copyOverlap(p, off, w[:], at)
	}
	if lo, hi, ok := f.vendorBody(off, n); ok && f.spec.Vendor.Handler != nil {
		f.spec.Vendor.Handler.ReadConfig(lo-f.lay.vendor, p[lo-off:hi-off])
	}
}

// writeConfig stores p through the masks, then applies side effects.
func (f *Function) writeConfig(off int, p []byte) {
	c := f.cfg
	n := len(p)
	oldCmd := c.u16(regCommand)
	var oldPM byte
	if f.lay.pm != 0 {
		oldPM = c.data[f.lay.pm+pmPMCSR]
	}
	c.write(off, p)

	if overlaps(off, n, regCommand, 2) {
		f.commandWritten(oldCmd, c.u16(regCommand))
	}
	if at := f.lay.pm; at != 0 && overlaps(off, n, at+pmPMCSR, 1) {
		// Only D0 and D3hot exist; a write of an unsupported state
		// completes but changes nothing (PCI PM 1.2, 3.2.4).
		if s := c.data[at+pmPMCSR] & pmStateMask; s == 1 || s == 2 {
			c.data[at+pmPMCSR] = oldPM
			f.warn("unsupported power state written", logrus.Fields{"state": s})
		}
	}
	if at := f.lay.msi; at != 0 && overlaps(off, n, at+msiControl, 1) {
		ctl := c.u16(at + msiControl)
		if mme, mmc := ctl&msiMMEMask>>msiMMEShift, ctl>>msiMMCShift&7; mme > mmc {
			f.warn("MSI multiple message enable above capable", logrus.Fields{"mme": mme, "mmc": mmc})
		}
	}
	if lo, hi, ok := f.vendorBody(off, n); ok && f.spec.Vendor.Handler != nil {
		stored := append([]byte(nil), c.data[lo:hi]...)
		f.spec.Vendor.Handler.WriteConfig(lo-f.lay.vendor, stored)
	}
}

// commandWritten applies COMMAND side effects: MASTER gates DMA,
// INTX_DISABLE gates INTx (PCI 3.0, 6.2.2).
func (f *Function) commandWritten(old, cmd uint16) {
	if (old^cmd)&cmdMaster != 0 {
		on := cmd&cmdMaster != 0
		if f.mem != nil {
			f.mem.SetBusMaster(on)
		}
		f.log.WithField("on", on).Debug("bus master")
	}
	if (old^cmd)&cmdINTxDisable != 0 {
		f.irq.SetINTxDisabled(cmd&cmdINTxDisable != 0)
	}
}

// vendorBody returns the part of [off, off+n) that lies in the vendor
// capability's body, in absolute offsets.
func (f *Function) vendorBody(off, n int) (lo, hi int, ok bool) {
	at := f.lay.vendor
	if at == 0 {
		return 0, 0, false
	}
	lo, hi = max(off, at+vendorBody), min(off+n, at+int(f.spec.Vendor.Length))
	return lo, hi, lo < hi
}

// copyOverlap copies the part of src (placed at srcOff) that overlaps dst
// (placed at dstOff).
func copyOverlap(dst []byte, dstOff int, src []byte, srcOff int) {
	lo, hi := max(dstOff, srcOff), min(dstOff+len(dst), srcOff+len(src))
	if lo < hi {
		copy(dst[lo-dstOff:hi-dstOff], src[lo-srcOff:])
	}
}

// accessBAR splits an access into the parts the function serves (MSI-X
// table and PBA) and the parts the device serves.
func (f *Function) accessBAR(bar int, off uint64, p []byte, write bool) error {
	for len(p) > 0 {
		n := uint64(len(p))
		var in *trap
		for i := range f.traps[bar] {
			t := &f.traps[bar][i]
			if off >= t.off && off < t.end {
				in, n = t, min(n, t.end-off)
				break
			}
			if off < t.off {
				n = min(n, t.off-off)
			}
		}
		q := p[:n]
		switch {
		case in == nil:
			var err error
			if write {
				err = f.dev.WriteBAR(bar, off, q)
			} else {
				err = f.dev.ReadBAR(bar, off, q)
			}
			if err != nil {
				return fmt.Errorf("pci: BAR%d %s %d@%#x: %w", bar, rw(write), len(q), off, err)
			}
		case in.pba:
			if write {
				// Writes to the PBA are undefined (PCI 3.0, 6.8.2.10);
				// QEMU drops the guest's (vfio-user-notes 4.4).
				f.warn("write to MSI-X PBA ignored", logrus.Fields{"bar": bar, "off": off, "len": n})
			} else {
				f.readPBA(off-in.off, q)
			}
		default:
			f.mu.Lock()
			if write {
				f.writeMSIXTable(int(off-in.off), q)
			} else {
				copy(q, f.msix[off-in.off:])
			}
			f.mu.Unlock()
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readPBA fills p with the pending bits from byte off of the PBA.
func (f *Function) readPBA(off uint64, p []byte) {
	vectors := f.spec.MSIX.Vectors
	for i := range p {
		var b byte
		for bit := range 8 {
			v := int(off+uint64(i))*8 + bit
			if v < vectors && f.irq.Pending(msi.MSIX, v) {
				b |= 1 << bit
			}
		}
		p[i] = b
	}
}

// writeMSIXTable stores into the table; in Vector Control only the mask
// bit is writable, the rest is reserved (PCI 3.0, 6.8.2.9).
func (f *Function) writeMSIXTable(off int, p []byte) {
	for i, b := range p {
		o := off + i
		switch o % msixEntrySize {
		case msixVectorCtrl:
			f.msix[o] = b & msixEntryMasked
		case msixVectorCtrl + 1, msixVectorCtrl + 2, msixVectorCtrl + 3:
		default:
			f.msix[o] = b
		}
	}
}

// resetMSIXTable puts the table in its power-on state: every entry zero
// and masked (PCI 3.0, 6.8.2.9).
func (f *Function) resetMSIXTable() {
	clear(f.msix)
	for o := msixVectorCtrl; o < len(f.msix); o += msixEntrySize {
		f.msix[o] = msixEntryMasked
	}
}

// Reset serves DEVICE_RESET: config space and the MSI-X table return to
// their power-on values (bus mastering off), pending interrupts are
// cleared and the device is reset. Eventfds and DMA maps survive.
func (f *Function) Reset() {
	f.mu.Lock()
	f.resetLocked()
	f.mu.Unlock()
	f.dev.Reset()
	f.log.Debug("reset")
}

func (f *Function) resetLocked() {
	f.cfg.restore()
	f.resetMSIXTable()
	f.irq.ClearPending()
	f.irq.SetINTxDisabled(false)
	if f.mem != nil {
		f.mem.SetBusMaster(false)
	}
}

// Attach is called when a client connects: the function DMAs through mem
// (bus mastering follows COMMAND.MASTER) and the device is attached. If
// the device fails to attach it is detached again and the error returned.
func (f *Function) Attach(mem *dma.Map) error {
	if mem == nil {
		return fmt.Errorf("pci: attach: nil memory map: %w", unix.EINVAL)
	}
	f.mu.Lock()
	if f.mem != nil {
		f.mu.Unlock()
		return fmt.Errorf("pci: attach: a client is already attached: %w", unix.EBUSY)
	}
	f.mem = mem
	mem.SetBusMaster(f.cfg.u16(regCommand)&cmdMaster != 0)
	f.mu.Unlock()

	if err := f.dev.Attach(Host{Mem: mem, IRQ: f.irq, Log: f.hostLog}); err != nil {
		f.dev.Detach()
		f.mu.Lock()
		mem.SetBusMaster(false)
		f.mem = nil
		f.mu.Unlock()
		return fmt.Errorf("pci: attach: %w", err)
	}
	f.log.Debug("attached")
	return nil
}

// Detach is called when the client has gone: the device is detached,
// every interrupt eventfd closed, and the function reset. Calling it
// without a client attached only resets.
func (f *Function) Detach() {
	f.mu.Lock()
	attached := f.mem != nil
	f.mu.Unlock()
	if attached {
		f.dev.Detach()
	}
	f.irq.Reset()
	f.mu.Lock()
	f.resetLocked()
	f.mem = nil
	f.mu.Unlock()
	f.dev.Reset()
	if attached {
		f.log.Debug("detached")
	}
}

// warn logs a client mistake, rate-limited per message.
func (f *Function) warn(msg string, fields logrus.Fields) {
	f.warnings.Warn(f.log.WithFields(fields), msg, msg)
}
