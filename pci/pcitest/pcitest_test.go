package pcitest

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/wcbar"
	"github.com/myriemu/myriemu/wcbar/wcbartest"
	"github.com/sirupsen/logrus"
)

// memDevice is a minimal pci.Device: BARs of plain sparse memory.
type memDevice struct {
	spec pci.Spec
	mu   sync.Mutex
	mem  map[[2]uint64]byte
	bars int // BAR accesses seen
}

func (d *memDevice) Spec() pci.Spec { return d.spec }
func (d *memDevice) ReadBAR(bar int, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bars++
	for i := range p {
		p[i] = d.mem[[2]uint64{uint64(bar), off + uint64(i)}]
	}
	return nil
}
func (d *memDevice) WriteBAR(bar int, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bars++
	for i, b := range p {
		d.mem[[2]uint64{uint64(bar), off + uint64(i)}] = b
	}
	return nil
}
func (d *memDevice) Attach(pci.Host) error { return nil }
func (d *memDevice) Detach()               {}
func (d *memDevice) Reset()                {}

// windowHandler is a vendor capability handler with a read-only data
// register at +0x14, like the Myri-10G read32 window.
type windowHandler struct{}

func (windowHandler) ReadConfig(off int, p []byte) {
	for i := range p {
		if o := off + i; o >= 0x14 && o < 0x18 {
			p[i] = byte(0x10 + o)
		}
	}
}
func (windowHandler) WriteConfig(int, []byte) {}

func discardLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func newFunction(t *testing.T, spec pci.Spec) *pci.Function {
	t.Helper()
	d := &memDevice{spec: spec, mem: map[[2]uint64]byte{}}
	f, err := pci.NewFunction(d, discardLog())
	if err != nil {
		t.Fatalf("NewFunction: %v", err)
	}
	return f
}

// myri10geSpec is the Myri-10G function of myri10ge-device-interface.md 1.
func myri10geSpec(w *wcbar.Window) pci.Spec {
	return pci.Spec{
		VendorID: 0x14c1, DeviceID: 0x0008, SubsystemVendorID: 0x14c1, SubsystemID: 0x0008,
		Revision: 1, Class: 0x020000,
		BARs: [6]pci.BAR{
			0: {Size: 16 << 20, Flags: pci.BARMem64 | pci.BARPrefetch, Window: w},
			2: {Size: 8192, Flags: pci.BARMem64},
		},
		InterruptPin: 1,
		PM:           &pci.PMCap{},
		MSI:          &pci.MSICap{Vectors: 1, Addr64: true},
		Vendor:       &pci.VendorCap{Length: 0x20, Handler: windowHandler{}},
		PCIe:         &pci.PCIeCap{MaxPayload: 256, LinkWidth: 4, LinkSpeed: 2},
		MSIX:         &pci.MSIXCap{Vectors: 8, TableBAR: 2, PBABAR: 2, PBAOffset: 0x1000},
	}
}

func TestCheckGood(t *testing.T) {
	tests := []struct {
		name string
		spec func(t *testing.T) pci.Spec
	}{
		{"myri10ge", func(t *testing.T) pci.Spec {
			return myri10geSpec(wcbartest.NewWindow(t, 16<<20, [2]uint64{0xf80000, 0x1000}))
		}},
		{"myri10ge whole-BAR mmap", func(t *testing.T) pci.Spec { return myri10geSpec(wcbartest.NewWindow(t, 16<<20)) }},
		{"testdev-like", func(t *testing.T) pci.Spec {
			w := wcbartest.NewWindow(t, 1<<20, [2]uint64{1<<20 - 4096, 4096})
			return pci.Spec{
				VendorID: 0x1234, DeviceID: 0x7e57, Class: 0x00ff00, Revision: 1,
				BARs: [6]pci.BAR{
					0: {Size: 4096},
					2: {Size: 4096},
					4: {Size: 1 << 20, Flags: pci.BARMem64 | pci.BARPrefetch, Window: w},
				},
				InterruptPin: 1,
				PM:           &pci.PMCap{},
				MSI:          &pci.MSICap{Vectors: 1, Addr64: true},
				PCIe:         &pci.PCIeCap{MaxPayload: 128, LinkWidth: 1, LinkSpeed: 1},
				MSIX:         &pci.MSIXCap{Vectors: 4, TableBAR: 2, PBABAR: 2, PBAOffset: 0x800},
			}
		}},
		{"MSI-X table in a window's trapped page", func(t *testing.T) pci.Spec {
			w := wcbartest.NewWindow(t, 64<<10, [2]uint64{0x8000, 0x1000})
			return pci.Spec{
				VendorID: 0x1234, DeviceID: 1,
				BARs: [6]pci.BAR{0: {Size: 64 << 10, Window: w}},
				MSIX: &pci.MSIXCap{Vectors: 64, TableOffset: 0x8000, PBAOffset: 0x8400},
			}
		}},
		{"conventional, no caps", func(*testing.T) pci.Spec {
			return pci.Spec{VendorID: 0x1234, DeviceID: 2, BARs: [6]pci.BAR{0: {Size: 4096}}}
		}},
		{"no BARs at all", func(*testing.T) pci.Spec { return pci.Spec{VendorID: 0x1234, DeviceID: 3} }},
		{"I/O BAR and 32-bit MSI with masking", func(*testing.T) pci.Spec {
			return pci.Spec{
				VendorID: 0x1234, DeviceID: 4, InterruptPin: 2,
				BARs: [6]pci.BAR{1: {Size: 32, Flags: pci.BARIO}, 3: {Size: 1 << 31, Flags: pci.BARPrefetch}},
				MSI:  &pci.MSICap{Vectors: 32, PerVectorMask: true},
			}
		}},
		{"big MSI-X, all caps, odd vendor length", func(*testing.T) pci.Spec {
			return pci.Spec{
				VendorID: 0x1234, DeviceID: 5,
				BARs: [6]pci.BAR{
					0: {Size: 1 << 40, Flags: pci.BARMem64},
					4: {Size: 64 << 10, Flags: pci.BARMem64},
				},
				PM:     &pci.PMCap{},
				MSI:    &pci.MSICap{Vectors: 16, Addr64: true, PerVectorMask: true},
				Vendor: &pci.VendorCap{Length: 0x1b},
				PCIe:   &pci.PCIeCap{MaxPayload: 4096, LinkWidth: 32, LinkSpeed: 3},
				MSIX:   &pci.MSIXCap{Vectors: 2048, TableBAR: 4, PBABAR: 0, PBAOffset: 0x100000},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFunction(t, tt.spec(t))
			if err := Check(f); err != nil {
				t.Errorf("Check: %v", err)
			}
			// Check leaves the function as it found it: a second run agrees.
			if err := Check(f); err != nil {
				t.Errorf("second Check: %v", err)
			}
		})
	}
}

// broken wraps a real function and breaks one behaviour, to show Check
// notices it.
type broken struct {
	*pci.Function
	// config bytes that read as these values whatever is stored
	fixed map[int]byte
	// config writes to these offsets are stored here (and read back) instead
	stored map[int]byte
	// read post-processing, after fixed/stored
	read       func(index uint32, off uint64, p []byte) error
	regionInfo func(index uint32, ri pci.RegionInfo) pci.RegionInfo
	irqInfo    func(index uint32, ii pci.IRQInfo, err error) (pci.IRQInfo, error)
	drop       func(index uint32, off uint64, p []byte) bool  // swallow the write
	override   func(index uint32, off uint64, p []byte) error // replaces ReadRegion
}

func (b *broken) ReadRegion(index uint32, off uint64, p []byte) error {
	if b.override != nil {
		return b.override(index, off, p)
	}
	if err := b.Function.ReadRegion(index, off, p); err != nil {
		return err
	}
	if index == pci.RegionConfig {
		for i := range p {
			o := int(off) + i
			if v, ok := b.stored[o]; ok {
				p[i] = v
			}
			if v, ok := b.fixed[o]; ok {
				p[i] = v
			}
		}
	}
	if b.read != nil {
		return b.read(index, off, p)
	}
	return nil
}

func (b *broken) WriteRegion(index uint32, off uint64, p []byte) error {
	if b.drop != nil && b.drop(index, off, p) {
		return nil
	}
	if err := b.Function.WriteRegion(index, off, p); err != nil {
		return err
	}
	if index == pci.RegionConfig {
		for i, v := range p {
			if _, ok := b.stored[int(off)+i]; ok {
				b.stored[int(off)+i] = v
			}
		}
	}
	return nil
}

func (b *broken) RegionInfo(index uint32) (pci.RegionInfo, error) {
	ri, err := b.Function.RegionInfo(index)
	if err == nil && b.regionInfo != nil {
		ri = b.regionInfo(index, ri)
	}
	return ri, err
}

func (b *broken) IRQInfo(index uint32) (pci.IRQInfo, error) {
	ii, err := b.Function.IRQInfo(index)
	if b.irqInfo != nil {
		return b.irqInfo(index, ii, err)
	}
	return ii, err
}

// The myri10ge spec without a window: caps at PM 0x40, MSI 0x48, vendor
// 0x58, PCIe 0x78, MSI-X 0xb4.
const (
	vendorAt = 0x58
	pcieAt   = 0x78
	msixAt   = 0xb4
)

func TestCheckCatches(t *testing.T) {
	tests := []struct {
		name          string
		fixed, stored map[int]byte    // as in broken
		breakIt       func(b *broken) // other faults, or nil
		want          []string        // substrings of the problems, one per expected problem
	}{
		{name: "ROM stores sizing writes", stored: map[int]byte{0x30: 0, 0x31: 0, 0x32: 0, 0x33: 0}, want: []string{"ROM BAR: reads 0xfffff800 after writing 0xfffff800"}},
		{name: "vendor ID writable", stored: map[int]byte{0: 0xc1, 1: 0x14}, want: []string{"read-only vendor/device ID at 0x0"}},
		{name: "BAR0 loses its prefetch bit", breakIt: func(b *broken) {
			b.read = func(index uint32, off uint64, p []byte) error {
				if index == pci.RegionConfig && off <= 0x10 && off+uint64(len(p)) > 0x10 {
					p[0x10-off] &^= 8
				}
				return nil
			}
		}, want: []string{"BAR0: power-on value 0x4, want type bits 0xc", "BAR0: reads 0xff000004 after writing all-ones, want 0xff00000c"}},
		{name: "upper half of BAR0 not writable", fixed: map[int]byte{0x14: 0, 0x15: 0, 0x16: 0, 0x17: 0}, want: []string{"BAR1 (upper half of BAR0): reads 0x0 after writing all-ones, want 0xffffffff"}},
		{name: "capability loop", fixed: map[int]byte{msixAt + 1: 0x48}, want: []string{"capabilities: loop back to 0x48"}},
		{name: "misaligned capability pointer", fixed: map[int]byte{0x34: 0x41}, want: []string{"pointer 0x41 is not DWORD-aligned"}},
		{name: "capability IDs differ from spec", fixed: map[int]byte{vendorAt: 0x0a}, want: []string{"capabilities: IDs [01 05 0a 10 11] in the chain, want [01 05 09 10 11]"}},
		{name: "status write sets bits", stored: map[int]byte{0x06: 0x10, 0x07: 0}, want: []string{"status: writing ones set bits 0xffe7"}},
		{name: "1-byte reads disagree", breakIt: func(b *broken) {
			b.read = func(index uint32, off uint64, p []byte) error {
				if index == pci.RegionConfig && off == 2 && len(p) == 1 {
					p[0]++
				}
				return nil
			}
		}, want: []string{"config read 1@0x2 = 09, want 08"}},
		{name: "vendor handler reads depend on size", breakIt: func(b *broken) {
			b.read = func(index uint32, off uint64, p []byte) error {
				if index == pci.RegionConfig && len(p) == 1 && off <= vendorAt+0x14 && off+uint64(len(p)) > vendorAt+0x14 {
					p[vendorAt+0x14-off] = 0
				}
				return nil
			}
		}, want: []string{"config read 1@0x6c = 00, want 24"}},
		{name: "config region 256 with PCIe", breakIt: func(b *broken) {
			b.regionInfo = func(index uint32, ri pci.RegionInfo) pci.RegionInfo {
				if index == pci.RegionConfig {
					ri.Size = 256
				}
				return ri
			}
		}, want: []string{"region info config: size 256, want 4096", "QEMU drops the PCIe flag"}},
		{name: "BAR size not a power of two", breakIt: func(b *broken) {
			b.regionInfo = func(index uint32, ri pci.RegionInfo) pci.RegionInfo {
				if index == 2 {
					ri.Size = 12288
				}
				return ri
			}
		}, want: []string{"region info BAR2: size 0x3000, want 0x2000"}},
		{name: "sparse area covers the MSI-X table", breakIt: func(b *broken) {
			b.regionInfo = func(index uint32, ri pci.RegionInfo) pci.RegionInfo {
				if index == 2 {
					ri.Flags |= pci.RegionMmap
					ri.Fd = 3
					ri.Sparse = []pci.Area{{Offset: 0, Size: 4096}}
				}
				return ri
			}
		}, want: []string{"mmap flag without a window", "mmappable area [0x0+0x1000] covers the MSI-X table"}},
		{name: "REQ irq info answered", breakIt: func(b *broken) {
			b.irqInfo = func(index uint32, ii pci.IRQInfo, err error) (pci.IRQInfo, error) {
				if index == 4 {
					return pci.IRQInfo{}, nil
				}
				return ii, err
			}
		}, want: []string{"irq info REQ: <nil>, want EINVAL"}},
		{name: "MSI-X irq info without NORESIZE, wrong count", breakIt: func(b *broken) {
			b.irqInfo = func(index uint32, ii pci.IRQInfo, err error) (pci.IRQInfo, error) {
				if index == 2 {
					return pci.IRQInfo{Count: 9, Flags: pci.IRQEventfd}, nil
				}
				return ii, err
			}
		}, want: []string{"irq info 2: count 9, want 8", "irq info MSI-X: flags 0x1 lack noresize"}},
		{name: "out-of-range config read succeeds", breakIt: func(b *broken) {
			b.override = func(index uint32, off uint64, p []byte) error {
				if index == pci.RegionConfig && off >= 4096 {
					return nil
				}
				return b.Function.ReadRegion(index, off, p)
			}
		}, want: []string{"region 7: read 1@0x1000: <nil>, want EINVAL"}},
		{name: "MRRS not writable", breakIt: func(b *broken) {
			b.drop = func(index uint32, off uint64, p []byte) bool {
				return index == pci.RegionConfig && off == pcieAt+8
			}
		}, want: []string{"DEVCTL max read request reads 2 after writing 5"}},
		{name: "MSI-X table unmasked at power-on", breakIt: func(b *broken) {
			b.read = func(index uint32, off uint64, p []byte) error {
				if index == 2 && off == 0 {
					clear(p)
				}
				return nil
			}
		}, want: []string{"MSI-X table: vector 0 control 0x0 at power-on, want 1 (masked)"}},
		{name: "MSI-X table size wrong", fixed: map[int]byte{msixAt + 2: 3}, want: []string{"MSI-X: table size 4, want 8"}},
		{name: "PCIe link width wrong", fixed: map[int]byte{pcieAt + 0x12: 0x82}, want: []string{"LNKSTA speed 2 width x8, want 2 x4"}},
		{name: "two problems at once", stored: map[int]byte{0: 0xc1, 0x30: 0, 0x31: 0, 0x32: 0, 0x33: 0}, want: []string{"read-only vendor/device ID", "ROM BAR: reads"}},
		{name: "interrupt line not stored", fixed: map[int]byte{0x3c: 0}, want: []string{"interrupt line: reads 0x0 after writing 0xa5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &broken{Function: newFunction(t, myri10geSpec(nil))}
			// The layout constants above describe this spec; make sure.
			if err := check(b); err != nil {
				t.Fatalf("unbroken function fails Check: %v", err)
			}
			b.fixed, b.stored = tt.fixed, tt.stored
			if tt.breakIt != nil {
				tt.breakIt(b)
			}
			err := check(b)
			if err == nil {
				t.Fatalf("Check passed a function with %s", tt.name)
			}
			// The error is a header line and one tab-indented line per problem.
			problems := strings.Split(err.Error(), "\n\t")[1:]
			for _, w := range tt.want {
				if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("Check found no problem with %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestCheckErrorFormat(t *testing.T) {
	b := &broken{Function: newFunction(t, myri10geSpec(nil)), stored: map[int]byte{0: 0xc1, 0x30: 0, 0x31: 0, 0x32: 0, 0x33: 0}}
	err := check(b)
	if err == nil {
		t.Fatal("Check passed a broken function")
	}
	lines := strings.Split(err.Error(), "\n")
	if want := fmt.Sprintf("pcitest: %d problem(s) found:", len(lines)-1); lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
}
