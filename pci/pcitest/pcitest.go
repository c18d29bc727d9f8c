// Package pcitest implements support for testing implementations of PCI functions built on package pci.
package pcitest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/myriemu/myriemu/pci"
	"golang.org/x/sys/unix"
)

// Check drives f through the methods a vfio-user server calls and
// reports every way it differs from what a client (QEMU's vfio-user-pci,
// then the guest's PCI core) expects, all in one error:
//
//   - device info, region info (sizes, flags, sparse areas) and IRQ info
//     per the function's Spec;
//   - read-only registers (IDs, class, header type, capability headers,
//     capability registers) that stay put when written;
//   - BAR sizing: all-ones reads back the size mask with the type bits,
//     for both halves of 64-bit BARs, and the original value restores;
//   - the ROM BAR reads 0 after QEMU's 0xfffff800 sizing write;
//   - a well-formed capability chain (aligned, inside the header's 256
//     bytes, no loops or overlaps, the IDs the Spec asks for) and the
//     contents of each capability;
//   - the MSI-X table (masked at power-on, stored) and PBA in their BAR;
//   - COMMAND bits writable, STATUS RW1C (writing ones never sets a bit);
//   - reads of every size at sampled offsets agreeing with one read of
//     the whole config space (QEMU's first read is 4096 bytes at 0);
//   - accesses outside a region failing with EINVAL.
//
// Check is meant for a freshly created function with no client attached.
// It writes registers and restores them, and reports it if config space
// differs afterwards. It never accesses the device's own BAR ranges, only
// the MSI-X table and PBA, but a vendor capability's handler sees reads.
func Check(f *pci.Function) error {
	return check(f)
}

// function is what Check needs of a *pci.Function; tests substitute a
// broken one to show Check notices.
type function interface {
	Spec() pci.Spec
	DeviceInfo() (numRegions, numIRQs uint32)
	RegionInfo(index uint32) (pci.RegionInfo, error)
	IRQInfo(index uint32) (pci.IRQInfo, error)
	ReadRegion(index uint32, off uint64, p []byte) error
	WriteRegion(index uint32, off uint64, p []byte) error
}

func check(f function) error {
	c := &checker{f: f, spec: f.Spec()}
	c.run()
	if len(c.problems) == 0 {
		return nil
	}
	return fmt.Errorf("pcitest: %d problem(s) found:\n\t%s", len(c.problems), strings.Join(c.problems, "\n\t"))
}

type checker struct {
	f        function
	spec     pci.Spec
	problems []string

	size int    // config space size the function reports
	cfg  []byte // the whole config space, read once at the start
	caps map[byte]int
}

func (c *checker) errorf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// Register offsets and bits, from the PCI and PCIe specifications. They
// are spelled out here rather than taken from package pci so the checker
// is an independent reading of the specs.

// Type 0 configuration header offsets (PCI 3.0, 6.1).
const (
	regCommand = 0x04
	regStatus  = 0x06
	regBAR0    = 0x10
	regROM     = 0x30
	regCapPtr  = 0x34
	regIntLine = 0x3c
	capStart   = 0x40
	extStart   = 0x100
)

// COMMAND bits (PCI 3.0, 6.2.2), typed as the values writeN writes.
const (
	cmdIO      uint32 = 1 << 0
	cmdMemory  uint32 = 1 << 1
	cmdMaster  uint32 = 1 << 2
	cmdINTxDis uint32 = 1 << 10
)

// STATUS bits (PCI 3.0, 6.2.3).
const (
	statusIntr = 1 << 3
	statusCaps = 1 << 4
)

// Capability IDs (PCI Code and ID Assignment, section 2).
const (
	capPM     = 0x01
	capMSI    = 0x05
	capVendor = 0x09
	capPCIe   = 0x10
	capMSIX   = 0x11
)

// Sizes and limits.
const (
	pcieLen      = 0x3c
	msixLen      = 12
	pmLen        = 8
	msixEntry    = 16
	pageSize     = 4096
	maxMismatch  = 8 // read mismatches listed before summarising
	romSizeProbe = 0xfffff800
)

func (c *checker) run() {
	c.checkInfo()
	if !c.readAll() {
		return
	}
	c.checkHeader()
	c.checkReads()
	c.checkCaps()
	c.checkReadOnly()
	c.checkBARs()
	c.checkROM()
	c.checkCommandStatus()
	c.checkMSIXTable()
	c.checkBounds()
	c.checkRestored()
}

// read reads config space; a failure is a problem and returns nil.
func (c *checker) read(off, n int) []byte {
	p := make([]byte, n)
	if err := c.f.ReadRegion(pci.RegionConfig, uint64(off), p); err != nil {
		c.errorf("config read %d@%#x: %v", n, off, err)
		return nil
	}
	return p
}

func (c *checker) write(off int, p []byte) bool {
	if err := c.f.WriteRegion(pci.RegionConfig, uint64(off), p); err != nil {
		c.errorf("config write %d@%#x: %v", len(p), off, err)
		return false
	}
	return true
}

// readN reads a 1-, 2- or 4-byte register.
func (c *checker) readN(off, n int) (uint32, bool) {
	p := c.read(off, n)
	if p == nil {
		return 0, false
	}
	return leN(p), true
}

func (c *checker) writeN(off, n int, v uint32) bool {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return c.write(off, b[:n])
}

func leN(p []byte) uint32 {
	var v uint32
	for i := len(p) - 1; i >= 0; i-- {
		v = v<<8 | uint32(p[i])
	}
	return v
}

func (c *checker) hasCaps() bool {
	s := &c.spec
	return s.PM != nil || s.MSI != nil || s.Vendor != nil || s.PCIe != nil || s.MSIX != nil
}

func (c *checker) checkInfo() {
	if r, i := c.f.DeviceInfo(); r != pci.NumRegions || i != pci.NumIRQIndexes {
		c.errorf("device info: %d regions, %d irq indexes; want %d, %d", r, i, pci.NumRegions, pci.NumIRQIndexes)
	}
	for i, b := range c.spec.BARs {
		ri, err := c.f.RegionInfo(uint32(i))
		if err != nil {
			c.errorf("region info BAR%d: %v", i, err)
			continue
		}
		if ri.Size != b.Size {
			c.errorf("region info BAR%d: size %#x, want %#x", i, ri.Size, b.Size)
		}
		if b.Size != 0 && bits.OnesCount64(b.Size) != 1 {
			c.errorf("region info BAR%d: size %#x is not a power of two (QEMU aborts)", i, b.Size)
		}
		if b.Size == 0 {
			continue
		}
		if ri.Flags&(pci.RegionRead|pci.RegionWrite) != pci.RegionRead|pci.RegionWrite {
			c.errorf("region info BAR%d: flags %#x lack read|write", i, ri.Flags)
		}
		mmap := ri.Flags&pci.RegionMmap != 0
		if mmap && b.Window == nil {
			c.errorf("region info BAR%d: mmap flag without a window", i)
		}
		if mmap && ri.Fd < 0 {
			c.errorf("region info BAR%d: mmap flag without an fd", i)
		}
		if !mmap && ri.Fd >= 0 {
			c.errorf("region info BAR%d: fd %d without the mmap flag", i, ri.Fd)
		}
		c.checkSparse(i, ri)
	}
	for _, r := range []struct {
		index uint32
		name  string
		size  uint64
	}{
		{pci.RegionROM, "ROM", 0},
		{pci.RegionConfig, "config", c.wantConfigSize()},
		{pci.RegionVGA, "VGA", 0},
	} {
		ri, err := c.f.RegionInfo(r.index)
		if err != nil {
			c.errorf("region info %s: %v", r.name, err)
			continue
		}
		if ri.Size != r.size {
			c.errorf("region info %s: size %d, want %d", r.name, ri.Size, r.size)
		}
		if r.index == pci.RegionConfig {
			c.size = int(ri.Size)
		}
	}
	if _, err := c.f.RegionInfo(pci.NumRegions); !errors.Is(err, unix.EINVAL) {
		c.errorf("region info %d: %v, want EINVAL", pci.NumRegions, err)
	}

	want := [pci.NumIRQIndexes]uint32{}
	if c.spec.InterruptPin != 0 {
		want[0] = 1
	}
	if c.spec.MSI != nil {
		want[1] = uint32(c.spec.MSI.Vectors)
	}
	if c.spec.MSIX != nil {
		want[2] = uint32(c.spec.MSIX.Vectors)
	}
	want[3] = 1
	for i := range uint32(pci.NumIRQIndexes - 1) {
		ii, err := c.f.IRQInfo(i)
		if err != nil {
			c.errorf("irq info %d: %v", i, err)
			continue
		}
		if ii.Count != want[i] {
			c.errorf("irq info %d: count %d, want %d", i, ii.Count, want[i])
		}
		if ii.Count > 0 && ii.Flags&pci.IRQEventfd == 0 {
			c.errorf("irq info %d: flags %#x lack eventfd", i, ii.Flags)
		}
		// QEMU reads only NORESIZE of the MSI-X info (vfio-user-notes 3.1).
		if i == 2 && ii.Count > 0 && ii.Flags&pci.IRQNoResize == 0 {
			c.errorf("irq info MSI-X: flags %#x lack noresize", ii.Flags)
		}
	}
	if _, err := c.f.IRQInfo(pci.NumIRQIndexes - 1); !errors.Is(err, unix.EINVAL) {
		c.errorf("irq info REQ: %v, want EINVAL (QEMU never asks)", err)
	}
}

func (c *checker) wantConfigSize() uint64 {
	if c.spec.PCIe != nil {
		return 4096
	}
	return 256
}

// checkSparse checks a BAR's sparse areas are what QEMU accepts
// (vfio-user-notes 4.3) and leave the MSI-X table and PBA trapped (4.4).
func (c *checker) checkSparse(bar int, ri pci.RegionInfo) {
	if ri.Flags&pci.RegionMmap == 0 {
		if len(ri.Sparse) != 0 {
			c.errorf("region info BAR%d: sparse areas without the mmap flag", bar)
		}
		return
	}
	areas := ri.Sparse
	if len(areas) == 0 {
		areas = []pci.Area{{Offset: 0, Size: ri.Size}}
	}
	var end uint64
	for i, a := range areas {
		switch {
		case a.Size == 0 || a.Offset%pageSize != 0 || a.Size%pageSize != 0:
			c.errorf("region info BAR%d: sparse area %d [%#x+%#x] is empty or not page-aligned", bar, i, a.Offset, a.Size)
		case a.Offset < end:
			c.errorf("region info BAR%d: sparse area %d [%#x+%#x] is unsorted or overlaps", bar, i, a.Offset, a.Size)
		case a.Offset > ri.Size || a.Size > ri.Size-a.Offset:
			c.errorf("region info BAR%d: sparse area %d [%#x+%#x] is outside the BAR", bar, i, a.Offset, a.Size)
		}
		end = a.Offset + a.Size
		if x := c.spec.MSIX; x != nil {
			for _, r := range msixRanges(x) {
				if r.bar == bar && r.off < a.Offset+a.Size && a.Offset < r.off+r.len {
					c.errorf("region info BAR%d: mmappable area [%#x+%#x] covers the MSI-X %s", bar, a.Offset, a.Size, r.name)
				}
			}
		}
	}
}

type barRange struct {
	name     string
	bar      int
	off, len uint64
}

func msixRanges(x *pci.MSIXCap) []barRange {
	return []barRange{
		{"table", x.TableBAR, uint64(x.TableOffset), uint64(x.Vectors) * msixEntry},
		{"PBA", x.PBABAR, uint64(x.PBAOffset), uint64((x.Vectors+63)/64) * 8},
	}
}

// readAll does QEMU's first read: the whole config space in one access.
func (c *checker) readAll() bool {
	if c.size != 256 && c.size != 4096 {
		c.errorf("config size %d, want 256 or 4096: skipping config checks", c.size)
		return false
	}
	c.cfg = c.read(0, c.size)
	return c.cfg != nil
}

func (c *checker) cfg8(off int) uint8   { return c.cfg[off] }
func (c *checker) cfg16(off int) uint16 { return binary.LittleEndian.Uint16(c.cfg[off:]) }
func (c *checker) cfg32(off int) uint32 { return binary.LittleEndian.Uint32(c.cfg[off:]) }

func (c *checker) checkHeader() {
	s := &c.spec
	for _, h := range []struct {
		name      string
		got, want uint32
	}{
		{"vendor ID", uint32(c.cfg16(0x00)), uint32(s.VendorID)},
		{"device ID", uint32(c.cfg16(0x02)), uint32(s.DeviceID)},
		{"command at power-on", uint32(c.cfg16(regCommand)), 0},
		{"revision", uint32(c.cfg8(0x08)), uint32(s.Revision)},
		{"class", c.cfg32(0x08) >> 8, s.Class},
		{"header type", uint32(c.cfg8(0x0e)), 0},
		{"subsystem vendor ID", uint32(c.cfg16(0x2c)), uint32(s.SubsystemVendorID)},
		{"subsystem ID", uint32(c.cfg16(0x2e)), uint32(s.SubsystemID)},
		{"ROM BAR", c.cfg32(regROM), 0},
		{"interrupt pin", uint32(c.cfg8(0x3d)), uint32(s.InterruptPin)},
	} {
		if h.got != h.want {
			c.errorf("config: %s = %#x, want %#x", h.name, h.got, h.want)
		}
	}
	st := c.cfg16(regStatus)
	if st&statusCaps != 0 != c.hasCaps() {
		c.errorf("config: status %#x: capabilities-list bit %v, want %v", st, st&statusCaps != 0, c.hasCaps())
	}
	if st&^(statusCaps|statusIntr) != 0 {
		c.errorf("config: status %#x at power-on has bits other than capabilities list and interrupt", st)
	}
	if !c.hasCaps() && c.cfg8(regCapPtr) != 0 {
		c.errorf("config: capability pointer %#x without capabilities", c.cfg8(regCapPtr))
	}
}

// checkReads compares reads of every size at sampled offsets with the
// whole-space read.
func (c *checker) checkReads() {
	type sample struct{ off, n int }
	var samples []sample
	for off := range min(c.size, 256) {
		for _, n := range []int{1, 2, 4} {
			samples = append(samples, sample{off, n})
		}
	}
	for _, off := range []int{0, 0x3d, 0x40, 0x7f, 0xc0, 0xfd} {
		for _, n := range []int{3, 8, 16, 64, 256} {
			samples = append(samples, sample{off, n})
		}
	}
	if c.size > 256 {
		for _, off := range []int{0x100, 0x101, 0x104, 0x7fe, 0xff0, 0xffc, 0xfff} {
			for _, n := range []int{1, 2, 4, 16} {
				samples = append(samples, sample{off, n})
			}
		}
		samples = append(samples, sample{0x80, 4096 - 0x80}, sample{0, 4096})
	}
	var bad []string
	for _, s := range samples {
		if s.off+s.n > c.size {
			continue
		}
		p := make([]byte, s.n)
		if err := c.f.ReadRegion(pci.RegionConfig, uint64(s.off), p); err != nil {
			bad = append(bad, fmt.Sprintf("%d@%#x failed: %v", s.n, s.off, err))
			continue
		}
		if want := c.cfg[s.off : s.off+s.n]; string(p) != string(want) {
			bad = append(bad, fmt.Sprintf("%d@%#x = % x, want % x", s.n, s.off, p, want))
		}
	}
	for i, b := range bad {
		if i == maxMismatch {
			c.errorf("config read: ... and %d more reads disagree", len(bad)-i)
			break
		}
		c.errorf("config read %s (as in the %d-byte read)", b, c.size)
	}
}

// checkCaps walks the capability list (PCI 3.0, 6.7) and checks each
// capability against the Spec.
func (c *checker) checkCaps() {
	type extent struct {
		id       byte
		off, end int
	}
	c.caps = map[byte]int{}
	var got []byte
	var exts []extent
	seen := map[int]bool{}
	p := int(c.cfg8(regCapPtr))
	for p != 0 {
		if p&3 != 0 || p < capStart || p > 0xfc {
			c.errorf("capabilities: pointer %#x is not DWORD-aligned inside 0x40..0xfc", p)
			break
		}
		if seen[p] {
			c.errorf("capabilities: loop back to %#x", p)
			break
		}
		seen[p] = true
		id := c.cfg8(p)
		got = append(got, id)
		if _, dup := c.caps[id]; dup {
			c.errorf("capabilities: ID %#x appears twice", id)
		} else {
			c.caps[id] = p
		}
		n := c.capLen(id, p)
		if p+n > 256 {
			c.errorf("capabilities: ID %#x at %#x (%d bytes) runs past 0x100", id, p, n)
		}
		for _, e := range exts {
			if p < e.end && e.off < p+n {
				c.errorf("capabilities: ID %#x at %#x overlaps ID %#x at %#x", id, p, e.id, e.off)
			}
		}
		exts = append(exts, extent{id, p, p + n})
		p = int(c.cfg8(p + 1))
	}
	// The capabilities package pci lays out, in chain order, each with
	// the check of its contents, run when the chain has it.
	kinds := []struct {
		id    byte
		want  bool // the Spec asks for it
		check func(at int)
	}{
		{capPM, c.spec.PM != nil, c.checkPM},
		{capMSI, c.spec.MSI != nil, c.checkMSI},
		{capVendor, c.spec.Vendor != nil, c.checkVendor},
		{capPCIe, c.spec.PCIe != nil, c.checkPCIe},
		{capMSIX, c.spec.MSIX != nil, c.checkMSIX},
	}
	var want []byte
	for _, k := range kinds {
		if k.want {
			want = append(want, k.id)
		}
	}
	if !slices.Equal(got, want) {
		c.errorf("capabilities: IDs [% x] in the chain, want [% x]", got, want)
	}
	for _, k := range kinds {
		if at, ok := c.caps[k.id]; ok {
			k.check(at)
		}
	}
}

// capLen is the length of a capability, from its contents.
func (c *checker) capLen(id byte, at int) int {
	switch id {
	case capPM:
		return pmLen
	case capMSI:
		// Header, control, address (+4 if 64-bit), data; mask and
		// pending follow the data's DWORD (PCI 3.0, figure 6-9).
		data := 8
		if c.cfg16(at+2)&(1<<7) != 0 {
			data = 12
		}
		if c.cfg16(at+2)&(1<<8) != 0 {
			return data + 12
		}
		return data + 2
	case capVendor:
		return max(int(c.cfg8(at+2)), 3)
	case capPCIe:
		return pcieLen
	case capMSIX:
		return msixLen
	}
	return 2
}

func (c *checker) checkPM(at int) {
	if v := c.cfg16(at+2) & 7; v < 2 {
		c.errorf("PM: version %d, want 2 or 3 (PCI PM 1.1/1.2)", v)
	}
	if st := c.cfg16(at+4) & 3; st != 0 {
		c.errorf("PM: power state D%d at power-on, want D0", st)
	}
}

func (c *checker) checkMSI(at int) {
	m := c.spec.MSI
	if m == nil {
		return
	}
	ctl := c.cfg16(at + 2)
	if mmc := int(ctl>>1) & 7; 1<<mmc != m.Vectors {
		c.errorf("MSI: multiple message capable %d (%d vectors), want %d vectors", mmc, 1<<mmc, m.Vectors)
	}
	if got := ctl&(1<<7) != 0; got != m.Addr64 {
		c.errorf("MSI: 64-bit address capable %v, want %v", got, m.Addr64)
	}
	if got := ctl&(1<<8) != 0; got != m.PerVectorMask {
		c.errorf("MSI: per-vector masking %v, want %v", got, m.PerVectorMask)
	}
	if ctl&1 != 0 {
		c.errorf("MSI: enabled at power-on")
	}
	// Enable must be writable: the guest's PCI core sets it.
	if c.writeN(at+2, 2, uint32(ctl|1)) {
		if v, ok := c.readN(at+2, 2); ok && v&1 == 0 {
			c.errorf("MSI: enable bit does not stick")
		}
		c.writeN(at+2, 2, uint32(ctl))
	}
}

func (c *checker) checkVendor(at int) {
	v := c.spec.Vendor
	if v == nil {
		return
	}
	if got := c.cfg8(at + 2); got != v.Length {
		c.errorf("vendor capability: length %d, want %d", got, v.Length)
	}
}

func (c *checker) checkPCIe(at int) {
	p := c.spec.PCIe
	if p == nil {
		return
	}
	if c.size != 4096 {
		c.errorf("PCIe: config space of %d bytes; QEMU drops the PCIe flag below 4096", c.size)
	}
	flags := c.cfg16(at + 2)
	if v := flags & 0xf; v != 2 {
		c.errorf("PCIe: capability version %d, want 2", v)
	}
	if typ := flags >> 4 & 0xf; typ != 0 {
		c.errorf("PCIe: device/port type %d, want 0 (Endpoint)", typ)
	}
	if mps := c.cfg32(at+4) & 7; 128<<mps != p.MaxPayload {
		c.errorf("PCIe: DEVCAP max payload %d bytes, want %d", 128<<mps, p.MaxPayload)
	}
	for _, r := range []struct {
		name string
		v    uint32
	}{{"LNKCAP", c.cfg32(at + 0xc)}, {"LNKSTA", uint32(c.cfg16(at + 0x12))}} {
		if speed, width := int(r.v&0xf), int(r.v>>4&0x3f); speed != p.LinkSpeed || width != p.LinkWidth {
			c.errorf("PCIe: %s speed %d width x%d, want %d x%d", r.name, speed, width, p.LinkSpeed, p.LinkWidth)
		}
	}
	// pcie_set_readrq: DEVCTL bits 14:12 must be writable and read back
	// (myri10ge-device-interface.md 1.3).
	ctl := uint32(c.cfg16(at + 8))
	if c.writeN(at+8, 2, ctl&^0x7000|5<<12) {
		if v, ok := c.readN(at+8, 2); ok && v>>12&7 != 5 {
			c.errorf("PCIe: DEVCTL max read request reads %d after writing 5", v>>12&7)
		}
		c.writeN(at+8, 2, ctl)
	}
	if c.size > extStart {
		c.checkExtCaps()
	}
}

// checkExtCaps walks the extended capabilities (PCIe 2.0, 7.9.1): a zero
// header at 0x100 means none.
func (c *checker) checkExtCaps() {
	seen := map[int]bool{}
	for p := extStart; p != 0; {
		h := c.cfg32(p)
		if h == 0 && p == extStart {
			return
		}
		if seen[p] {
			c.errorf("extended capabilities: loop back to %#x", p)
			return
		}
		seen[p] = true
		next := int(h >> 20)
		if next != 0 && (next&3 != 0 || next < extStart || next > c.size-4) {
			c.errorf("extended capabilities: pointer %#x at %#x is invalid", next, p)
			return
		}
		p = next
	}
}

func (c *checker) checkMSIX(at int) {
	x := c.spec.MSIX
	if x == nil {
		return
	}
	ctl := c.cfg16(at + 2)
	if n := int(ctl&0x7ff) + 1; n != x.Vectors {
		c.errorf("MSI-X: table size %d, want %d", n, x.Vectors)
	}
	if ctl&0xc000 != 0 {
		c.errorf("MSI-X: control %#x has enable or function mask set at power-on", ctl)
	}
	for _, r := range []struct {
		name string
		bir  int
		off  uint32
		got  uint32
	}{
		{"table", x.TableBAR, x.TableOffset, c.cfg32(at + 4)},
		{"PBA", x.PBABAR, x.PBAOffset, c.cfg32(at + 8)},
	} {
		if bir, off := int(r.got&7), r.got&^7; bir != r.bir || off != r.off {
			c.errorf("MSI-X: %s in BAR%d at %#x, want BAR%d at %#x", r.name, bir, off, r.bir, r.off)
		}
	}
	// Enable and function mask must be writable (the guest sets them).
	if c.writeN(at+2, 2, uint32(ctl|0xc000)) {
		if v, ok := c.readN(at+2, 2); ok && v&0xc000 != 0xc000 {
			c.errorf("MSI-X: control reads %#x after setting enable and function mask", v)
		}
		c.writeN(at+2, 2, uint32(ctl))
	}
}

// checkReadOnly writes the complement of read-only registers and checks
// they stay put (PCI 3.0, 6.1: read-only bits ignore writes).
func (c *checker) checkReadOnly() {
	type field struct {
		name    string
		off, n  int
		roMask  uint32
		written uint32
	}
	all := func(n int) uint32 { return uint32(1)<<(8*n) - 1 }
	fields := []field{
		{name: "vendor/device ID", off: 0x00, n: 4},
		{name: "revision/class", off: 0x08, n: 4},
		{name: "header type/BIST", off: 0x0e, n: 2},
		{name: "subsystem IDs", off: 0x2c, n: 4},
		{name: "capability pointer", off: regCapPtr, n: 1},
		{name: "interrupt pin/min gnt/max lat", off: 0x3d, n: 3},
	}
	for id, at := range c.caps {
		name := fmt.Sprintf("capability %#x", id)
		fields = append(fields, field{name: name + " header", off: at, n: 2})
		switch id {
		case capPM:
			fields = append(fields, field{name: "PM capabilities", off: at + 2, n: 2})
		case capMSI:
			fields = append(fields, field{name: "MSI control capable bits", off: at + 2, n: 2, roMask: 0x018e})
		case capVendor:
			fields = append(fields, field{name: "vendor capability length", off: at + 2, n: 1})
		case capPCIe:
			fields = append(fields,
				field{name: "PCIe capabilities", off: at + 2, n: 2},
				field{name: "PCIe DEVCAP", off: at + 4, n: 4},
				field{name: "PCIe LNKCAP", off: at + 0xc, n: 4},
				field{name: "PCIe LNKSTA", off: at + 0x12, n: 2, roMask: 0x3fff},
				field{name: "PCIe LNKCAP2", off: at + 0x2c, n: 4})
		case capMSIX:
			fields = append(fields,
				field{name: "MSI-X table size", off: at + 2, n: 2, roMask: 0x07ff},
				field{name: "MSI-X table offset/BIR", off: at + 4, n: 4},
				field{name: "MSI-X PBA offset/BIR", off: at + 8, n: 4})
		}
	}
	if c.size > extStart {
		fields = append(fields, field{name: "extended capability header", off: extStart, n: 4})
	}
	slices.SortFunc(fields, func(a, b field) int { return a.off - b.off })
	for _, fl := range fields {
		mask := fl.roMask
		if mask == 0 {
			mask = all(fl.n)
		}
		orig := leN(c.cfg[fl.off : fl.off+fl.n])
		if !c.writeN(fl.off, fl.n, ^orig&all(fl.n)) {
			continue
		}
		got, ok := c.readN(fl.off, fl.n)
		if ok && got&mask != orig&mask {
			c.errorf("read-only %s at %#x: reads %#x after writing %#x, want %#x", fl.name, fl.off, got, ^orig&all(fl.n), orig)
		}
		c.writeN(fl.off, fl.n, orig)
	}
}

// checkBARs sizes every BAR the way firmware does (PCI 3.0, 6.2.5.1).
func (c *checker) checkBARs() {
	for i := 0; i < len(c.spec.BARs); i++ {
		b := c.spec.BARs[i]
		reg := regBAR0 + 4*i
		var typ, sized uint32
		upper := -1 // register of the upper half, if any
		switch {
		case b.Size == 0:
		case b.Flags&pci.BARIO != 0:
			typ = 1
			sized = uint32(^(b.Size-1))&^3 | typ
		default:
			if b.Flags&pci.BARPrefetch != 0 {
				typ |= 1 << 3
			}
			if b.Flags&pci.BARMem64 != 0 {
				typ |= 2 << 1
				upper = reg + 4
			}
			sized = uint32(^(b.Size-1))&^0xf | typ
		}
		orig := c.cfg32(reg)
		typeBits := uint32(0xf)
		if b.Flags&pci.BARIO != 0 {
			typeBits = 3
		}
		if orig&typeBits != typ {
			c.errorf("BAR%d: power-on value %#x, want type bits %#x", i, orig, typ)
		}
		c.sizeBAR(fmt.Sprintf("BAR%d", i), reg, sized)
		if upper >= 0 {
			c.sizeBAR(fmt.Sprintf("BAR%d (upper half of BAR%d)", i+1, i), upper, uint32(^(b.Size-1)>>32))
			i++
		}
		// A programmed address reads back with the type bits.
		if b.Size != 0 && upper < 0 {
			addr := uint32(0xfe000000) & sized &^ 0xf
			if b.Flags&pci.BARIO != 0 {
				addr = 0xc000 & sized &^ 3
			}
			if c.writeN(reg, 4, addr) {
				if got, ok := c.readN(reg, 4); ok && got != addr|typ {
					c.errorf("BAR%d: reads %#x after writing address %#x, want %#x", i, got, addr, addr|typ)
				}
				c.writeN(reg, 4, orig)
			}
		}
	}
}

func (c *checker) sizeBAR(name string, reg int, want uint32) {
	orig := c.cfg32(reg)
	if !c.writeN(reg, 4, 0xffffffff) {
		return
	}
	if got, ok := c.readN(reg, 4); ok && got != want {
		c.errorf("%s: reads %#x after writing all-ones, want %#x", name, got, want)
	}
	c.writeN(reg, 4, orig)
	if got, ok := c.readN(reg, 4); ok && got != orig {
		c.errorf("%s: reads %#x after restoring %#x", name, got, orig)
	}
}

// checkROM does QEMU's ROM sizing (vfio-user-notes 3.1 step 7): a
// function without a ROM must read 0, or QEMU invents a 2 KiB ROM.
func (c *checker) checkROM() {
	if !c.writeN(regROM, 4, romSizeProbe) {
		return
	}
	if got, ok := c.readN(regROM, 4); ok && got != 0 {
		c.errorf("ROM BAR: reads %#x after writing %#x, want 0 (no ROM)", got, romSizeProbe)
	}
	c.writeN(regROM, 4, c.cfg32(regROM))
}

func (c *checker) checkCommandStatus() {
	cmd := c.cfg16(regCommand)
	want := cmdMaster
	for _, b := range c.spec.BARs {
		switch {
		case b.Size == 0:
		case b.Flags&pci.BARIO != 0:
			want |= cmdIO
		default:
			want |= cmdMemory
		}
	}
	if c.spec.InterruptPin != 0 {
		want |= cmdINTxDis
	}
	if c.writeN(regCommand, 2, want) {
		if got, ok := c.readN(regCommand, 2); ok && got&want != want {
			c.errorf("command: reads %#x after writing %#x, want those bits set", got, want)
		}
		c.writeN(regCommand, 2, uint32(cmd))
	}

	st := uint32(c.cfg16(regStatus))
	if c.writeN(regStatus, 2, 0xffff) {
		if got, ok := c.readN(regStatus, 2); ok {
			got &^= statusIntr // live
			if set := got &^ st; set != 0 {
				c.errorf("status: writing ones set bits %#x (RW1C bits clear, others are read-only)", set)
			}
			if got&statusCaps != st&statusCaps {
				c.errorf("status: capabilities-list bit changed by a write")
			}
		}
	}

	line := c.cfg8(regIntLine)
	if c.writeN(regIntLine, 1, 0xa5) {
		if got, ok := c.readN(regIntLine, 1); ok && got != 0xa5 {
			c.errorf("interrupt line: reads %#x after writing 0xa5 (must be stored)", got)
		}
		c.writeN(regIntLine, 1, uint32(line))
	}
}

// checkMSIXTable reads the MSI-X table and PBA through their BAR.
func (c *checker) checkMSIXTable() {
	x := c.spec.MSIX
	if x == nil {
		return
	}
	r := msixRanges(x)
	tbl := make([]byte, r[0].len)
	if err := c.f.ReadRegion(uint32(x.TableBAR), r[0].off, tbl); err != nil {
		c.errorf("MSI-X table read: %v", err)
		return
	}
	for v := range x.Vectors {
		if ctl := binary.LittleEndian.Uint32(tbl[v*msixEntry+12:]); ctl != 1 {
			c.errorf("MSI-X table: vector %d control %#x at power-on, want 1 (masked)", v, ctl)
			break
		}
	}
	// Entries are stored: write vector 0's data, read it back, restore.
	data := []byte{0x5a, 0xa5, 0x3c, 0xc3}
	at := r[0].off + 8
	if err := c.f.WriteRegion(uint32(x.TableBAR), at, data); err != nil {
		c.errorf("MSI-X table write: %v", err)
	} else {
		got := make([]byte, 4)
		if err := c.f.ReadRegion(uint32(x.TableBAR), at, got); err != nil || string(got) != string(data) {
			c.errorf("MSI-X table: vector 0 data reads % x (%v) after writing % x", got, err, data)
		}
		if err := c.f.WriteRegion(uint32(x.TableBAR), at, tbl[8:12]); err != nil {
			c.errorf("MSI-X table restore: %v", err)
		}
	}
	pba := make([]byte, r[1].len)
	if err := c.f.ReadRegion(uint32(x.PBABAR), r[1].off, pba); err != nil {
		c.errorf("MSI-X PBA read: %v", err)
	} else if slices.ContainsFunc(pba, func(b byte) bool { return b != 0 }) {
		c.errorf("MSI-X PBA reads % x with nothing raised, want zeros", pba)
	}
}

// checkBounds checks accesses outside each region fail with EINVAL
// without touching anything.
func (c *checker) checkBounds() {
	type access struct {
		index uint32
		off   uint64
		n     int
	}
	size := uint64(c.size)
	accs := []access{
		{pci.RegionConfig, size, 1},
		{pci.RegionConfig, size - 1, 2},
		{pci.RegionConfig, 0, c.size + 1},
		{pci.RegionConfig, 1<<64 - 1, 2},
		{pci.RegionROM, 0, 4},
		{pci.RegionVGA, 0, 4},
		{pci.NumRegions, 0, 4},
	}
	for i, b := range c.spec.BARs {
		if b.Size == 0 {
			accs = append(accs, access{uint32(i), 0, 4})
		} else {
			accs = append(accs, access{uint32(i), b.Size, 1}, access{uint32(i), b.Size - 2, 4})
		}
	}
	for _, a := range accs {
		p := make([]byte, a.n)
		if err := c.f.ReadRegion(a.index, a.off, p); !errors.Is(err, unix.EINVAL) {
			c.errorf("region %d: read %d@%#x: %v, want EINVAL", a.index, a.n, a.off, err)
		}
		if err := c.f.WriteRegion(a.index, a.off, p); !errors.Is(err, unix.EINVAL) {
			c.errorf("region %d: write %d@%#x: %v, want EINVAL", a.index, a.n, a.off, err)
		}
	}
}

// checkRestored compares config space with its state before the checks,
// all of whose writes were undone.
func (c *checker) checkRestored() {
	now := c.read(0, c.size)
	if now == nil {
		return
	}
	var diff []string
	for i := range now {
		a, b := c.cfg[i], now[i]
		if i == regStatus {
			a, b = a&^statusIntr, b&^statusIntr
		}
		if a != b {
			diff = append(diff, fmt.Sprintf("%#x: %#02x -> %#02x", i, a, b))
		}
	}
	if len(diff) > maxMismatch {
		diff = append(diff[:maxMismatch], fmt.Sprintf("... %d more", len(diff)-maxMismatch))
	}
	if len(diff) > 0 {
		c.errorf("config space changed by writing values back: %s", strings.Join(diff, ", "))
	}
}
