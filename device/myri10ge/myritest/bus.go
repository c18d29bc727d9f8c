package myritest

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/myriemu/myriemu/msi"
)

// Bus is how the fake driver reaches the card: BAR0 stores and loads of
// exactly the sizes the driver makes, and config space. Offsets are
// relative to the start of BAR0 or of config space.
//
// The driver's BAR0 accesses on an x86-64 guest are (§2.3):
//   - 8-byte stores in ascending order for every PIO copy
//     (myri10ge_pio_copy: commands, handoff, dummy RDMA, firmware, rings);
//   - 4-byte stores of already big-endian values (put_be32: doorbells,
//     claim words, the coalescing delay);
//   - 1-byte stores (the RSS indirection table);
//   - 4-byte loads (readl), memcpy_fromio loads (1 and 2 bytes to align,
//     then 4), and a 1-byte load (readb) after each firmware chunk.
//
// Config accesses are little-endian, 1, 2 or 4 bytes.
type Bus interface {
	WriteBAR0(off uint64, p []byte) error
	ReadBAR0(off uint64, p []byte) error
	ReadConfig(off uint64, p []byte) error
	WriteConfig(off uint64, p []byte) error
}

// Flusher is implemented by a Bus whose BAR0 stores are posted (vfio-user
// NO_REPLY writes, as QEMU sends them). Flush returns once the device has
// handled every earlier store. The driver uses it only to tell a device
// that answers a command late from a slow transport (see Driver.Cmd).
type Flusher interface {
	Flush() error
}

// IRQMode is an interrupt mechanism the driver enables. It is msi's Mode:
// INTx, MSI and MSI-X are PCI's, not the Myri ABI's, and the device side
// names them the same way.
type IRQMode = msi.Mode

const (
	ModeINTx = msi.ModeINTx
	ModeMSI  = msi.ModeMSI
	ModeMSIX = msi.ModeMSIX
)

// Interrupts delivers the card's interrupts to the driver.
//
// Enable is what pci_enable_msi / pci_enable_msix_range and request_irq do
// for the driver (QEMU turns them into SET_IRQS with eventfds): vectors is
// 1 for INTx and MSI, the slice count for MSI-X. An error from Enable(MSI)
// makes the driver fall back to INTx, as "falling back to xPIC".
// Disable undoes it (free_irq and pci_disable_msi/msix).
//
// Wait blocks until the vector signals (an eventfd read) or ctx ends. A
// signal that arrived before Wait counts.
type Interrupts interface {
	Enable(mode IRQMode, vectors int) error
	Disable() error
	Wait(ctx context.Context, vector int) error
}

// EOIer is implemented by Interrupts whose INTx line is automasked after
// each assertion (VFIO semantics): EOI unmasks it after the handler ran.
type EOIer interface {
	EOI() error
}

// pioCopy is myri10ge_pio_copy: __iowrite64_copy of n/8 quadwords, each
// an 8-byte store in ascending order. A tail that is not a multiple of 8
// is not written, exactly as in the driver.
func (d *Driver) pioCopy(off uint64, src []byte) error {
	for i := 0; i+8 <= len(src); i += 8 {
		if err := d.bus.WriteBAR0(off+uint64(i), src[i:i+8]); err != nil {
			return fmt.Errorf("myritest: PIO store at BAR0 %#x: %w", off+uint64(i), err)
		}
	}
	return nil
}

// putBE32 is put_be32: one 4-byte store of v in big-endian order.
func (d *Driver) putBE32(off uint64, v uint32) error {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	if err := d.bus.WriteBAR0(off, b[:]); err != nil {
		return fmt.Errorf("myritest: 4-byte store at BAR0 %#x: %w", off, err)
	}
	return nil
}

// writeB is __raw_writeb.
func (d *Driver) writeB(off uint64, v byte) error {
	if err := d.bus.WriteBAR0(off, []byte{v}); err != nil {
		return fmt.Errorf("myritest: 1-byte store at BAR0 %#x: %w", off, err)
	}
	return nil
}

// readBE32 is swab32(readl()): one 4-byte load read big-endian.
func (d *Driver) readBE32(off uint64) (uint32, error) {
	var b [4]byte
	if err := d.bus.ReadBAR0(off, b[:]); err != nil {
		return 0, fmt.Errorf("myritest: 4-byte load at BAR0 %#x: %w", off, err)
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// readB is readb.
func (d *Driver) readB(off uint64) (byte, error) {
	var b [1]byte
	if err := d.bus.ReadBAR0(off, b[:]); err != nil {
		return 0, fmt.Errorf("myritest: 1-byte load at BAR0 %#x: %w", off, err)
	}
	return b[0], nil
}

// memcpyFromIO is x86's memcpy_fromio: a 1-byte and a 2-byte load to
// align the source, 4-byte loads, then a 2-byte and a 1-byte tail.
func (d *Driver) memcpyFromIO(dst []byte, off uint64) error {
	n := len(dst)
	pos := 0
	load := func(size int) error {
		if err := d.bus.ReadBAR0(off+uint64(pos), dst[pos:pos+size]); err != nil {
			return fmt.Errorf("myritest: %d-byte load at BAR0 %#x: %w", size, off+uint64(pos), err)
		}
		pos += size
		return nil
	}
	if n > 0 && off&1 != 0 {
		if err := load(1); err != nil {
			return err
		}
	}
	if n-pos > 1 && (off+uint64(pos))&2 != 0 {
		if err := load(2); err != nil {
			return err
		}
	}
	for n-pos >= 4 {
		if err := load(4); err != nil {
			return err
		}
	}
	if n-pos >= 2 {
		if err := load(2); err != nil {
			return err
		}
	}
	if n-pos == 1 {
		return load(1)
	}
	return nil
}

// Config space helpers (little-endian, as the PCI core reads it).

func (d *Driver) cfgRead16(off int) (uint16, error) {
	var b [2]byte
	if err := d.bus.ReadConfig(uint64(off), b[:]); err != nil {
		return 0, fmt.Errorf("myritest: config read 2@%#x: %w", off, err)
	}
	return binary.LittleEndian.Uint16(b[:]), nil
}

func (d *Driver) cfgWrite16(off int, v uint16) error {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	if err := d.bus.WriteConfig(uint64(off), b[:]); err != nil {
		return fmt.Errorf("myritest: config write 2@%#x: %w", off, err)
	}
	return nil
}

func (d *Driver) cfgRead8(off int) (uint8, error) {
	var b [1]byte
	if err := d.bus.ReadConfig(uint64(off), b[:]); err != nil {
		return 0, fmt.Errorf("myritest: config read 1@%#x: %w", off, err)
	}
	return b[0], nil
}

// findCap is pci_find_capability: walk the list from 0x34 (at most 48
// hops, as the PCI core does). It returns 0 when the capability is absent.
func (d *Driver) findCap(id uint8) (int, error) {
	status, err := d.cfgRead16(0x06)
	if err != nil {
		return 0, err
	}
	if status&0x10 == 0 {
		return 0, nil
	}
	p, err := d.cfgRead8(0x34)
	if err != nil {
		return 0, err
	}
	for ttl := 48; ttl > 0 && p >= 0x40; ttl-- {
		p &^= 3
		hdr, err := d.cfgRead16(int(p))
		if err != nil {
			return 0, err
		}
		if uint8(hdr) == 0xFF {
			break
		}
		if uint8(hdr) == id {
			return int(p), nil
		}
		p = uint8(hdr >> 8)
	}
	return 0, nil
}

// PCI capability IDs and registers the driver (or the PCI core on its
// behalf) touches.
const (
	capIDMSI    = 0x05
	capIDVendor = 0x09
	capIDPCIe   = 0x10
	capIDMSIX   = 0x11

	pciCommand       = 0x04
	pciCommandMemory = 0x0002
	pciCommandMaster = 0x0004

	pcieDevCtl     = 0x08
	pcieDevCtlMRRS = 0x7000
	pcieLnkSta     = 0x12
	msixFlags      = 0x02
)
