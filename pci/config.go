package pci

import (
	"encoding/binary"
)

// config is a function's configuration space: the stored bytes, their
// power-on values, and per-byte masks of the bits a write may set (wmask)
// and the bits a written 1 clears (w1c), as QEMU's hw/pci/pci.c keeps
// them. Side effects and live bits are added by Function around it.
type config struct {
	lay   layout
	data  []byte
	reset []byte
	wmask []byte
	w1c   []byte
}

// newConfig builds the power-on config space of a validated spec.
func newConfig(s *Spec, lay layout) *config {
	c := &config{
		lay:   lay,
		data:  make([]byte, lay.size),
		reset: make([]byte, lay.size),
		wmask: make([]byte, lay.size),
		w1c:   make([]byte, lay.size),
	}
	v, m := c.reset, c.wmask

	le16(v, regVendorID, s.VendorID)
	le16(v, regDeviceID, s.DeviceID)
	v[regRevision] = s.Revision
	v[regClass] = byte(s.Class)
	v[regClass+1] = byte(s.Class >> 8)
	v[regClass+2] = byte(s.Class >> 16)
	le16(v, regSubsystemVenID, s.SubsystemVendorID)
	le16(v, regSubsystemID, s.SubsystemID)
	v[regInterruptPin] = s.InterruptPin

	// Command: only the decoders the function has are writable (PCI 3.0,
	// 6.2.2: bits of unimplemented features are hardwired to 0).
	cmd := uint16(cmdMaster | cmdParity | cmdSERR | cmdINTxDisable)
	for _, b := range s.BARs {
		switch {
		case b.Size == 0:
		case b.Flags&BARIO != 0:
			cmd |= cmdIO
		default:
			cmd |= cmdMemory
		}
	}
	le16(m, regCommand, cmd)
	le16(c.w1c, regStatus, statusRW1C)
	m[regCacheLineSize] = 0xff
	m[regLatencyTimer] = 0xff
	m[regInterruptLine] = 0xff

	// BARs: the type bits are read-only and the address bits below the
	// size read 0, so a sizing write of all-ones reads back the size mask
	// (PCI 3.0, 6.2.5.1). The ROM BAR (0x30) stays all-zero and
	// read-only: there is no ROM (vfio-user-notes 4.1).
	for i := 0; i < len(s.BARs); i++ {
		b := s.BARs[i]
		reg := regBAR0 + 4*i
		if b.Size == 0 {
			continue
		}
		if b.Flags&BARIO != 0 {
			le32(v, reg, barIO)
			le32(m, reg, uint32(^(b.Size-1))&^3)
			continue
		}
		var typ uint32
		if b.Flags&BARPrefetch != 0 {
			typ |= barPrefetch
		}
		mask := ^(b.Size - 1)
		if b.Flags&BARMem64 != 0 {
			typ |= barMem64
			le32(m, reg+4, uint32(mask>>32))
		}
		le32(v, reg, typ)
		le32(m, reg, uint32(mask)&^0xf)
		if b.Flags&BARMem64 != 0 {
			i++
		}
	}

	if lay.hasCaps() {
		le16(v, regStatus, statusCapList)
	}
	next := regCapPtr // where the pointer to the next capability goes
	link := func(at int, id byte) {
		v[next] = byte(at)
		v[at] = id
		next = at + 1
	}

	if at := lay.pm; at != 0 {
		link(at, capIDPM)
		le16(v, at+pmPMC, pmVersion12)
		le16(v, at+pmPMCSR, pmNoSoftReset)
		m[at+pmPMCSR] = pmStateMask
	}
	if at := lay.msi; at != 0 {
		link(at, capIDMSI)
		ctl := uint16(log2(uint64(s.MSI.Vectors))) << msiMMCShift
		if s.MSI.Addr64 {
			ctl |= msi64Bit
		}
		if s.MSI.PerVectorMask {
			ctl |= msiPerVecMask
		}
		le16(v, at+msiControl, ctl)
		le16(m, at+msiControl, msiEnable|msiMMEMask)
		le32(m, at+msiAddrLo, 0xfffffffc) // DWORD-aligned address
		if s.MSI.Addr64 {
			le32(m, at+msiAddrLo+4, 0xffffffff)
		}
		le16(m, lay.msiData, 0xffff)
		if lay.msiMask != 0 {
			le32(m, lay.msiMask, uint32(uint64(1)<<s.MSI.Vectors-1))
		}
	}
	if at := lay.vendor; at != 0 {
		link(at, capIDVendor)
		v[at+vendorLength] = s.Vendor.Length
		for o := at + vendorBody; o < at+int(s.Vendor.Length); o++ {
			m[o] = 0xff
		}
	}
	if at := lay.pcie; at != 0 {
		link(at, capIDPCIe)
		p := s.PCIe
		le16(v, at+pcieFlags, pcieVersion2)
		le32(v, at+pcieDevCap, uint32(log2(uint64(p.MaxPayload/128)))|pcieDevCapRBER)
		le16(v, at+pcieDevCtl, pcieDevCtlDefault)
		le16(m, at+pcieDevCtl, pcieDevCtlWritable)
		le16(c.w1c, at+pcieDevSta, pcieDevStaRW1C)
		link := uint32(p.LinkSpeed) | uint32(p.LinkWidth)<<4
		le32(v, at+pcieLnkCap, link)
		le16(m, at+pcieLnkCtl, pcieLnkCtlWritable)
		le16(v, at+pcieLnkSta, uint16(link))
		le32(v, at+pcieLnkCap2, (uint32(1)<<p.LinkSpeed-1)<<1) // supported speeds vector
		le16(v, at+pcieLnkCtl2, uint16(p.LinkSpeed))           // target link speed
		// Extended space (0x100..0xfff) stays zero: a zero header at 0x100
		// means "no extended capabilities" (PCIe 2.0, 7.9.1).
	}
	if at := lay.msix; at != 0 {
		link(at, capIDMSIX)
		x := s.MSIX
		le16(v, at+msixControl, uint16(x.Vectors-1))
		le16(m, at+msixControl, msixEnable|msixFuncMask)
		le32(v, at+msixTableReg, x.TableOffset|uint32(x.TableBAR))
		le32(v, at+msixPBAReg, x.PBAOffset|uint32(x.PBABAR))
	}

	copy(c.data, c.reset)
	return c
}

// write stores p at off through the masks: read-only bits keep their
// value, RW1C bits clear where p has a 1. The caller bounds-checks.
func (c *config) write(off int, p []byte) {
	d := c.data[off : off+len(p)]
	wm := c.wmask[off : off+len(p)]
	w1 := c.w1c[off : off+len(p)]
	for i, b := range p {
		d[i] = d[i]&^wm[i] | b&wm[i]
		d[i] &^= b & w1[i]
	}
}

// restore returns every register to its power-on value.
func (c *config) restore() { copy(c.data, c.reset) }

func (c *config) u16(off int) uint16 { return binary.LittleEndian.Uint16(c.data[off:]) }

// overlaps reports whether [off, off+n) and [at, at+size) intersect.
func overlaps(off, n, at, size int) bool { return off < at+size && at < off+n }

func le16(b []byte, off int, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }
func le32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
