package pci

import (
	"errors"
	"fmt"
	"math/bits"
)

// layout is where a Spec's capabilities sit in config space. Offsets are
// absolute; 0 means the capability is absent.
type layout struct {
	size int // config space size: 4096 with a PCIe capability, else 256

	pm, msi, vendor, pcie, msix int

	msiLen     int
	msiData    int // absolute offset of MSI Message Data
	msiMask    int // absolute offset of MSI Mask Bits, 0 without per-vector masking
	msiPending int // absolute offset of MSI Pending Bits, 0 without per-vector masking
}

// msiCapLen is the MSI capability's length (PCI 3.0, figure 6-9).
func msiCapLen(c *MSICap) int {
	n := 4 + 4 + msiDataLen + msiReservedLen // header, control, address, data, reserved
	if c.Addr64 {
		n += 4
	}
	if c.PerVectorMask {
		n += 8
	}
	return n
}

// newLayout places the capabilities in the order documented on Spec,
// each DWORD-aligned (PCI 3.0, 6.7: the bottom two bits of a pointer are
// reserved), starting right after the header.
func newLayout(s *Spec) (layout, error) {
	l := layout{size: configSizePCI}
	off := capStart
	place := func(n int) int {
		off = (off + 3) &^ 3
		at := off
		off += n
		return at
	}
	if s.PM != nil {
		l.pm = place(pmLen)
	}
	if s.MSI != nil {
		l.msiLen = msiCapLen(s.MSI)
		l.msi = place(l.msiLen)
		l.msiData = l.msi + 8
		if s.MSI.Addr64 {
			l.msiData += 4
		}
		if s.MSI.PerVectorMask {
			l.msiMask = l.msiData + 4
			l.msiPending = l.msiMask + 4
		}
	}
	if s.Vendor != nil {
		l.vendor = place(int(s.Vendor.Length))
	}
	if s.PCIe != nil {
		l.pcie = place(pcieLen)
		l.size = configSizePCIe
	}
	if s.MSIX != nil {
		l.msix = place(msixLen)
	}
	if off > configSizePCI {
		return layout{}, fmt.Errorf("pci: spec: capabilities need %d bytes of config space, only %d fit below 0x100",
			off-capStart, configSizePCI-capStart)
	}
	return l, nil
}

// hasCaps reports whether the function has a capability list.
func (l *layout) hasCaps() bool {
	return l.pm != 0 || l.msi != 0 || l.vendor != 0 || l.pcie != 0 || l.msix != 0
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

// msixPBALen is the PBA's size in bytes: one bit per vector, in QWORDs
// (PCI 3.0, 6.8.2.10).
func msixPBALen(vectors int) uint64 { return uint64((vectors+63)/64) * 8 }

// validate checks a Spec against what the PCI spec and QEMU accept and
// returns every problem found, joined.
func validate(s *Spec) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("pci: spec: "+format, args...))
	}

	if s.Class > 0xffffff {
		bad("class %#x is wider than 24 bits", s.Class)
	}
	if s.InterruptPin > 4 {
		bad("interrupt pin %d, want 0 (none) or 1..4 (INTA..INTD)", s.InterruptPin)
	}

	for i := range s.BARs {
		b := &s.BARs[i]
		win := b.Window != nil
		if i > 0 && s.BARs[i-1].Size != 0 && s.BARs[i-1].Flags&BARMem64 != 0 && s.BARs[i-1].Flags&BARIO == 0 {
			if b.Size != 0 || b.Flags != 0 || win {
				bad("BAR%d is the upper half of 64-bit BAR%d and must be empty", i, i-1)
			}
			continue
		}
		if b.Size == 0 {
			if b.Flags != 0 || win {
				bad("BAR%d has size 0 (absent) but flags %#x or a window", i, b.Flags)
			}
			continue
		}
		if b.Flags&^(BARMem64|BARPrefetch|BARIO) != 0 {
			bad("BAR%d has unknown flags %#x", i, b.Flags)
		}
		// QEMU asserts is_power_of_2 on region sizes (vfio-user-notes 4.2).
		if !isPow2(b.Size) {
			bad("BAR%d size %#x is not a power of two", i, b.Size)
			continue
		}
		if b.Flags&BARIO != 0 {
			if b.Flags&(BARMem64|BARPrefetch) != 0 {
				bad("BAR%d is an I/O BAR with memory flags %#x", i, b.Flags)
			}
			// PCI 3.0, 6.2.5.1: I/O BARs claim at most 256 bytes.
			if b.Size < 4 || b.Size > 256 {
				bad("I/O BAR%d size %#x, want 4..256 bytes", i, b.Size)
			}
			if win {
				bad("I/O BAR%d cannot have a mappable window", i)
			}
			continue
		}
		// Sub-page BARs get special handling in QEMU (vfio-user-notes 4.3).
		if b.Size < 4096 {
			bad("memory BAR%d size %#x is below 4 KiB", i, b.Size)
		}
		if b.Flags&BARMem64 != 0 {
			if i == len(s.BARs)-1 {
				bad("64-bit BAR%d has no upper half (it is the last BAR)", i)
			}
		} else if b.Size > 1<<31 {
			bad("32-bit BAR%d size %#x does not fit a 32-bit address space", i, b.Size)
		}
		if win {
			if ws := b.Window.Size(); ws != b.Size {
				bad("BAR%d size %#x but its window has size %#x", i, b.Size, ws)
			}
		}
	}

	if m := s.MSI; m != nil {
		if m.Vectors < 1 || m.Vectors > 32 || !isPow2(uint64(m.Vectors)) {
			bad("MSI vectors %d, want 1, 2, 4, 8, 16 or 32", m.Vectors)
		}
	}
	if x := s.MSIX; x != nil {
		validateMSIX(s, x, bad)
	}
	if p := s.PCIe; p != nil {
		if p.MaxPayload < 128 || p.MaxPayload > 4096 || !isPow2(uint64(p.MaxPayload)) {
			bad("PCIe max payload %d, want 128..4096, a power of two", p.MaxPayload)
		}
		switch p.LinkWidth {
		case 1, 2, 4, 8, 12, 16, 32: // PCIe 2.0, 7.8.6
		default:
			bad("PCIe link width x%d, want 1, 2, 4, 8, 12, 16 or 32", p.LinkWidth)
		}
		if p.LinkSpeed < 1 || p.LinkSpeed > 3 {
			bad("PCIe link speed %d, want 1 (2.5 GT/s), 2 (5 GT/s) or 3 (8 GT/s)", p.LinkSpeed)
		}
	}
	if v := s.Vendor; v != nil && v.Length < vendorBody {
		bad("vendor capability length %d is shorter than its 3-byte header", v.Length)
	}
	if _, err := newLayout(s); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validateMSIX(s *Spec, x *MSIXCap, bad func(string, ...any)) {
	if x.Vectors < 1 || x.Vectors > msixMaxVectors {
		bad("MSI-X vectors %d, want 1..%d", x.Vectors, msixMaxVectors)
		return
	}
	type part struct {
		name     string
		bar      int
		off, len uint64
	}
	parts := []part{
		{"table", x.TableBAR, uint64(x.TableOffset), uint64(x.Vectors) * msixEntrySize},
		{"PBA", x.PBABAR, uint64(x.PBAOffset), msixPBALen(x.Vectors)},
	}
	ok := true
	for _, p := range parts {
		if p.bar < 0 || p.bar >= len(s.BARs) {
			bad("MSI-X %s BAR %d does not exist", p.name, p.bar)
			ok = false
			continue
		}
		b := &s.BARs[p.bar]
		if b.Size == 0 || b.Flags&BARIO != 0 {
			bad("MSI-X %s is in BAR%d, which is not a memory BAR", p.name, p.bar)
			ok = false
			continue
		}
		// The low 3 bits of the offset registers hold the BIR (PCI 3.0, 6.8.2.4).
		if p.off&7 != 0 {
			bad("MSI-X %s offset %#x is not 8-byte aligned", p.name, p.off)
			ok = false
		}
		if p.off+p.len > b.Size {
			bad("MSI-X %s [%#x, %#x) does not fit in BAR%d of size %#x", p.name, p.off, p.off+p.len, p.bar, b.Size)
			ok = false
			continue
		}
		// QEMU emulates the table and the server must serve the PBA, so
		// neither may be mmapped (vfio-user-notes 4.4).
		if b.Window != nil {
			for _, a := range b.Window.Areas() {
				if p.off < a.Offset+a.Size && a.Offset < p.off+p.len {
					bad("MSI-X %s [%#x, %#x) overlaps mmappable area [%#x, %#x) of BAR%d",
						p.name, p.off, p.off+p.len, a.Offset, a.Offset+a.Size, p.bar)
					ok = false
				}
			}
		}
	}
	if ok && x.TableBAR == x.PBABAR {
		t, p := parts[0], parts[1]
		if t.off < p.off+p.len && p.off < t.off+t.len {
			bad("MSI-X table [%#x, %#x) and PBA [%#x, %#x) overlap", t.off, t.off+t.len, p.off, p.off+p.len)
		}
	}
}

// log2 of a power of two.
func log2(v uint64) int { return bits.TrailingZeros64(v) }
