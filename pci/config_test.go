package pci

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// validateCase breaks one thing in a full Spec; want is a substring of
// NewFunction's error, "" for a Spec that must stay valid.
type validateCase struct {
	name string
	edit func(*Spec)
	want string
}

// TestValidate's cases are grouped by the part of the Spec they break, as
// the subtests are named (MSI-X/overlap).
func TestValidate(t *testing.T) {
	groups := []struct {
		part  string
		cases []validateCase
	}{
		{"spec", []validateCase{
			{"full", func(*Spec) {}, ""},
			{"no caps", func(s *Spec) { *s = minimalSpec() }, ""},
			{"class too wide", func(s *Spec) { s.Class = 1 << 24 }, "wider than 24 bits"},
			{"pin 5", func(s *Spec) { s.InterruptPin = 5 }, "interrupt pin 5"},
		}},
		{"BAR", []validateCase{
			{"not power of two", func(s *Spec) { s.BARs[4].Size = 12288 }, "BAR4 size 0x3000 is not a power of two"},
			{"below 4 KiB", func(s *Spec) { s.BARs[4].Size = 2048 }, "below 4 KiB"},
			{"64-bit BAR5", func(s *Spec) { s.BARs[5] = BAR{Size: 4096, Flags: BARMem64} }, "64-bit BAR5 has no upper half"},
			{"upper half used", func(s *Spec) { s.BARs[1] = BAR{Size: 4096} }, "BAR1 is the upper half of 64-bit BAR0"},
			{"absent BAR with flags", func(s *Spec) { s.BARs[4] = BAR{Flags: BARPrefetch} }, "BAR4 has size 0"},
			{"I/O BAR too big", func(s *Spec) { s.BARs[5].Size = 512 }, "I/O BAR5 size 0x200"},
			{"I/O BAR 64-bit", func(s *Spec) { s.BARs[5].Flags |= BARMem64 }, "I/O BAR with memory flags"},
			{"unknown BAR flag", func(s *Spec) { s.BARs[4].Flags = 0x80 }, "unknown flags"},
			{"32-bit BAR 4 GiB", func(s *Spec) { s.BARs[4].Size = 1 << 32 }, "does not fit a 32-bit address space"},
		}},
		{"MSI", []validateCase{
			{"3 vectors", func(s *Spec) { s.MSI.Vectors = 3 }, "MSI vectors 3"},
			{"64 vectors", func(s *Spec) { s.MSI.Vectors = 64 }, "MSI vectors 64"},
		}},
		{"MSI-X", []validateCase{
			{"0 vectors", func(s *Spec) { s.MSIX.Vectors = 0 }, "MSI-X vectors 0"},
			{"2049 vectors", func(s *Spec) { s.MSIX.Vectors = 2049 }, "MSI-X vectors 2049"},
			{"2048 vectors", func(s *Spec) {
				s.BARs[2].Size = 64 << 10
				s.MSIX.PBAOffset = 0x8000
				s.MSIX.Vectors = 2048
			}, ""},
			{"table past BAR", func(s *Spec) { s.MSIX.TableOffset = 0x1ff8 }, "MSI-X table [0x1ff8, 0x2028) does not fit in BAR2"},
			{"PBA past BAR", func(s *Spec) { s.MSIX.PBAOffset = 0x2000 }, "MSI-X PBA [0x2000, 0x2008) does not fit"},
			{"overlap", func(s *Spec) { s.MSIX.PBAOffset = 0x20 }, "overlap"},
			{"misaligned", func(s *Spec) { s.MSIX.PBAOffset = 0x1004 }, "not 8-byte aligned"},
			{"in absent BAR", func(s *Spec) { s.MSIX.TableBAR = 3 }, "not a memory BAR"},
			{"in I/O BAR", func(s *Spec) { s.MSIX.PBABAR = 5 }, "not a memory BAR"},
			{"BAR 6", func(s *Spec) { s.MSIX.TableBAR = 6 }, "BAR 6 does not exist"},
		}},
		{"PCIe", []validateCase{
			{"payload", func(s *Spec) { s.PCIe.MaxPayload = 100 }, "max payload 100"},
			{"width", func(s *Spec) { s.PCIe.LinkWidth = 3 }, "link width x3"},
			{"speed", func(s *Spec) { s.PCIe.LinkSpeed = 0 }, "link speed 0"},
		}},
		{"vendor", []validateCase{
			{"too short", func(s *Spec) { s.Vendor.Length = 2 }, "shorter than its 3-byte header"},
			{"too long", func(s *Spec) { s.Vendor.Length = 0xa0 }, "capabilities need"},
		}},
	}
	for _, g := range groups {
		for _, tt := range g.cases {
			t.Run(g.part+"/"+tt.name, func(t *testing.T) {
				s := fullSpec()
				tt.edit(&s)
				_, err := NewFunction(newFakeDevice(s), testLog())
				switch {
				case tt.want == "" && err != nil:
					t.Fatalf("NewFunction: %v", err)
				case tt.want != "" && err == nil:
					t.Fatalf("NewFunction succeeded, want error containing %q", tt.want)
				case tt.want != "" && !strings.Contains(err.Error(), tt.want):
					t.Fatalf("NewFunction error %q, want it to contain %q", err, tt.want)
				}
			})
		}
	}
}

func TestValidateReportsAll(t *testing.T) {
	s := fullSpec()
	s.BARs[4].Size = 3 << 12
	s.MSI.Vectors = 5
	_, err := NewFunction(newFakeDevice(s), testLog())
	if err == nil || !strings.Contains(err.Error(), "BAR4") || !strings.Contains(err.Error(), "MSI vectors 5") {
		t.Fatalf("NewFunction error %v, want both problems", err)
	}
}

func TestHeader(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	c := cfgRead(t, f, 0, 0x40)
	got := map[string]uint32{
		"vendor":     uint32(le16get(c, 0x00)),
		"device":     uint32(le16get(c, 0x02)),
		"command":    uint32(le16get(c, 0x04)),
		"status":     uint32(le16get(c, 0x06)),
		"revision":   uint32(c[0x08]),
		"class":      le32get(c, 0x08) >> 8,
		"headertype": uint32(c[0x0e]),
		"subvendor":  uint32(le16get(c, 0x2c)),
		"subsystem":  uint32(le16get(c, 0x2e)),
		"rom":        le32get(c, 0x30),
		"capptr":     uint32(c[0x34]),
		"pin":        uint32(c[0x3d]),
		"bar0":       le32get(c, 0x10),
		"bar1":       le32get(c, 0x14),
		"bar2":       le32get(c, 0x18),
		"bar4":       le32get(c, 0x20),
		"bar5":       le32get(c, 0x24),
	}
	want := map[string]uint32{
		"vendor": 0x14c1, "device": 0x0008, "command": 0, "status": statusCapList,
		"revision": 1, "class": 0x020000, "headertype": 0, "subvendor": 0x14c1,
		"subsystem": 0x0008, "rom": 0, "capptr": 0x40, "pin": 1,
		"bar0": 0xc, "bar1": 0, "bar2": 0x4, "bar4": 0, "bar5": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
}

func TestCapabilityLayout(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		size uint64
		want [][2]int // {id, offset} in chain order
	}{
		{"full", fullSpec(), 4096, [][2]int{{capIDPM, 0x40}, {capIDMSI, 0x48}, {capIDVendor, 0x60}, {capIDPCIe, 0x80}, {capIDMSIX, 0xbc}}},
		{"none", minimalSpec(), 256, nil},
		{"msix only", func() Spec {
			s := minimalSpec()
			s.MSIX = &MSIXCap{Vectors: 1, PBAOffset: 0x800}
			return s
		}(), 256, [][2]int{{capIDMSIX, 0x40}}},
		{"msi 32-bit + vendor odd length", func() Spec {
			s := minimalSpec()
			s.MSI = &MSICap{Vectors: 1}
			s.Vendor = &VendorCap{Length: 5}
			s.PM = &PMCap{}
			return s
		}(), 256, [][2]int{{capIDPM, 0x40}, {capIDMSI, 0x48}, {capIDVendor, 0x54}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newTestFunction(t, tt.spec)
			ri, err := f.RegionInfo(RegionConfig)
			if err != nil || ri.Size != tt.size {
				t.Fatalf("config region size %d (%v), want %d", ri.Size, err, tt.size)
			}
			c := cfgRead(t, f, 0, int(tt.size))
			var got [][2]int
			for p := int(c[regCapPtr]); p != 0 && len(got) < 10; p = int(c[p+1]) {
				got = append(got, [2]int{int(c[p]), p})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("capability chain (-want +got):\n%s", diff)
			}
			if gotCL, wantCL := le16get(c, regStatus)&statusCapList != 0, tt.want != nil; gotCL != wantCL {
				t.Errorf("status CAP_LIST %v, want %v", gotCL, wantCL)
			}
			if tt.size == 4096 && le32get(c, extStart) != 0 {
				t.Errorf("extended header at 0x100 = %#x, want 0 (no extended caps)", le32get(c, extStart))
			}
		})
	}
}

func TestBARSizing(t *testing.T) {
	tests := []struct {
		reg       int
		orig, all uint32 // after reset, after writing all-ones
	}{
		{0x10, 0xc, 0xff00000c}, // 16 MiB 64-bit prefetchable, low
		{0x14, 0, 0xffffffff},   // its upper half
		{0x18, 0x4, 0xffffe004}, // 8 KiB 64-bit
		{0x1c, 0, 0xffffffff},   // its upper half
		{0x20, 0, 0xfffff000},   // 4 KiB 32-bit
		{0x24, 0x1, 0xffffff01}, // 256-byte I/O
		{regROM, 0, 0},          // no ROM
		{0x28, 0, 0},            // CardBus CIS
		{regCapPtr, 0x40, 0x40}, // read-only
		{regVendorID, 0x000814c1, 0x000814c1},
	}
	f, _ := newTestFunction(t, fullSpec())
	for _, tt := range tests {
		if got := cfg32(t, f, tt.reg); got != tt.orig {
			t.Errorf("reg %#x = %#x before sizing, want %#x", tt.reg, got, tt.orig)
		}
		cfgWrite32(t, f, tt.reg, 0xffffffff)
		if got := cfg32(t, f, tt.reg); got != tt.all {
			t.Errorf("reg %#x = %#x after writing all-ones, want %#x", tt.reg, got, tt.all)
		}
	}
	// QEMU's ROM sizing write (vfio-user-notes 3.1 step 7).
	cfgWrite32(t, f, regROM, 0xfffff800)
	if got := cfg32(t, f, regROM); got != 0 {
		t.Errorf("ROM BAR = %#x after 0xfffff800, want 0", got)
	}
	// An address write keeps the type bits and drops bits below the size.
	cfgWrite32(t, f, 0x18, 0xfebf1234)
	if got := cfg32(t, f, 0x18); got != 0xfebf0004 {
		t.Errorf("BAR2 = %#x after writing 0xfebf1234, want 0xfebf0004", got)
	}
	// Byte writes work too.
	cfgWrite(t, f, 0x23, []byte{0xab})
	if got := cfg32(t, f, 0x20); got != 0xabfff000 {
		t.Errorf("BAR4 = %#x after byte write, want 0xabfff000", got)
	}
}

func TestCommandRegister(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want uint16 // after writing 0xffff
	}{
		{"mem and io", fullSpec(), cmdIO | cmdMemory | cmdMaster | cmdParity | cmdSERR | cmdINTxDisable},
		{"mem only", minimalSpec(), cmdMemory | cmdMaster | cmdParity | cmdSERR | cmdINTxDisable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newTestFunction(t, tt.spec)
			cfgWrite16(t, f, regCommand, 0xffff)
			if got := cfg16(t, f, regCommand); got != tt.want {
				t.Errorf("command = %#x, want %#x", got, tt.want)
			}
			cfgWrite16(t, f, regCommand, 0)
			if got := cfg16(t, f, regCommand); got != 0 {
				t.Errorf("command = %#x after writing 0, want 0", got)
			}
		})
	}
}

func TestStatusRW1C(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	// The device would set these on errors; plant them directly.
	f.mu.Lock()
	f.cfg.data[regStatus+1] = 0x29 // bits 8, 11, 13: data parity, signaled target abort, received master abort
	f.mu.Unlock()
	before := cfg16(t, f, regStatus)
	if before != statusCapList|0x2900 {
		t.Fatalf("status = %#x, want %#x", before, statusCapList|0x2900)
	}
	cfgWrite16(t, f, regStatus, 0x0800|0x00ff) // clear signalled target abort; low byte is RO
	if got := cfg16(t, f, regStatus); got != statusCapList|0x2100 {
		t.Errorf("status = %#x after W1C of bit 11, want %#x", got, statusCapList|0x2100)
	}
	cfgWrite16(t, f, regStatus, 0)
	if got := cfg16(t, f, regStatus); got != statusCapList|0x2100 {
		t.Errorf("status = %#x after writing 0, want unchanged %#x", got, statusCapList|0x2100)
	}
	cfgWrite16(t, f, regStatus, 0xffff)
	if got := cfg16(t, f, regStatus); got != statusCapList {
		t.Errorf("status = %#x after writing all-ones, want %#x", got, statusCapList)
	}
}

func TestStoredBytes(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	for _, reg := range []int{regCacheLineSize, regLatencyTimer, regInterruptLine} {
		cfgWrite(t, f, reg, []byte{0x5a})
		if got := cfg8(t, f, reg); got != 0x5a {
			t.Errorf("reg %#x = %#x, want 0x5a", reg, got)
		}
	}
	for _, reg := range []int{regRevision, regHeaderType, regInterruptPin, regCapPtr, 0x0f, 0x3e, 0x3f} {
		before := cfg8(t, f, reg)
		cfgWrite(t, f, reg, []byte{^before})
		if got := cfg8(t, f, reg); got != before {
			t.Errorf("read-only reg %#x = %#x after write, want %#x", reg, got, before)
		}
	}
}

func TestPCIeCap(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	at := capOffset(t, f, capIDPCIe)
	if got := cfg16(t, f, at+pcieFlags); got != 0x0002 {
		t.Errorf("PCIe capabilities = %#x, want v2 endpoint 0x0002", got)
	}
	if got := cfg32(t, f, at+pcieDevCap) & 7; got != 1 {
		t.Errorf("DEVCAP max payload = %d, want 1 (256 bytes)", got)
	}
	if got := cfg16(t, f, at+pcieDevCtl); got != 0x2810 {
		t.Errorf("DEVCTL = %#x, want reset value 0x2810", got)
	}
	// pcie_set_readrq(4096) writes MRRS = 5 (myri10ge-device-interface.md 1.3).
	ctl := cfg16(t, f, at+pcieDevCtl)
	cfgWrite16(t, f, at+pcieDevCtl, ctl&^0x7000|5<<12)
	if got := cfg16(t, f, at+pcieDevCtl) >> 12 & 7; got != 5 {
		t.Errorf("DEVCTL MRRS = %d after writing 5, want 5", got)
	}
	cfgWrite16(t, f, at+pcieDevCtl, 0xffff)
	if got := cfg16(t, f, at+pcieDevCtl); got != 0x78ff {
		t.Errorf("DEVCTL = %#x after all-ones, want 0x78ff (no FLR, ext tag, phantom, aux)", got)
	}
	sta := cfg16(t, f, at+pcieLnkSta)
	if speed, width := sta&0xf, sta>>4&0x3f; speed != 2 || width != 4 {
		t.Errorf("LNKSTA speed %d width x%d, want 2 x4", speed, width)
	}
	cfgWrite16(t, f, at+pcieLnkSta, 0xffff)
	if got := cfg16(t, f, at+pcieLnkSta); got != sta {
		t.Errorf("LNKSTA = %#x after write, want read-only %#x", got, sta)
	}
	if got := cfg32(t, f, at+pcieLnkCap2); got != 0x6 {
		t.Errorf("LNKCAP2 = %#x, want speeds vector 0x6", got)
	}
}

func TestPMCap(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	at := capOffset(t, f, capIDPM)
	if got := cfg16(t, f, at+pmPMC); got != 3 {
		t.Errorf("PMC = %#x, want 3 (version 1.2, no D1/D2, no PME)", got)
	}
	tests := []struct{ write, want uint16 }{
		{3, pmNoSoftReset | 3}, // D3hot
		{1, pmNoSoftReset | 3}, // D1 unsupported: ignored
		{0, pmNoSoftReset},     // D0
		{2, pmNoSoftReset},     // D2 unsupported: ignored
		{0xffff, pmNoSoftReset | 3},
	}
	for _, tt := range tests {
		cfgWrite16(t, f, at+pmPMCSR, tt.write)
		if got := cfg16(t, f, at+pmPMCSR); got != tt.want {
			t.Errorf("PMCSR = %#x after writing %#x, want %#x", got, tt.write, tt.want)
		}
	}
}

func TestMSICap(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	at := capOffset(t, f, capIDMSI)
	if got := cfg16(t, f, at+msiControl); got != 0x0184 {
		t.Errorf("MSI control = %#x, want 0x0184 (MMC 4 vectors, 64-bit, per-vector mask)", got)
	}
	cfgWrite16(t, f, at+msiControl, 0xffff)
	if got := cfg16(t, f, at+msiControl); got != 0x01f5 {
		t.Errorf("MSI control = %#x after all-ones, want 0x01f5", got)
	}
	cfgWrite32(t, f, at+4, 0xfee01237)
	cfgWrite32(t, f, at+8, 0x1)
	cfgWrite16(t, f, at+12, 0x4041)
	cfgWrite32(t, f, at+16, 0xffffffff) // mask bits: 4 implemented
	want := []byte{0x34, 0x12, 0xe0, 0xfe, 1, 0, 0, 0, 0x41, 0x40, 0, 0, 0x0f, 0, 0, 0, 0, 0, 0, 0}
	if diff := cmp.Diff(want, cfgRead(t, f, at+4, 20)); diff != "" {
		t.Errorf("MSI registers (-want +got):\n%s", diff)
	}
	cfgWrite32(t, f, at+20, 0xffffffff) // pending bits are read-only
	if got := cfg32(t, f, at+20); got != 0 {
		t.Errorf("MSI pending = %#x after write, want 0", got)
	}
}

func TestMSIXCap(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	at := capOffset(t, f, capIDMSIX)
	want := []byte{capIDMSIX, 0, 2, 0, 2, 0, 0, 0, 2, 0x10, 0, 0}
	if diff := cmp.Diff(want, cfgRead(t, f, at, msixLen)); diff != "" {
		t.Errorf("MSI-X capability (-want +got):\n%s", diff)
	}
	// The guest's enable write as QEMU forwards it (vfio-user-notes 3.3).
	cfgWrite16(t, f, at+msixControl, 0x8003)
	if got := cfg16(t, f, at+msixControl); got != 0x8002 {
		t.Errorf("MSI-X control = %#x after 0x8003, want 0x8002", got)
	}
	// A 1-byte write at control+1 (libvfio-user issue #640).
	cfgWrite(t, f, at+msixControl+1, []byte{0xff})
	if got := cfg16(t, f, at+msixControl); got != 0xc002 {
		t.Errorf("MSI-X control = %#x after byte write, want 0xc002", got)
	}
	cfgWrite32(t, f, at+msixTableReg, 0xffffffff)
	cfgWrite32(t, f, at+msixPBAReg, 0)
	if diff := cmp.Diff(want[4:], cfgRead(t, f, at+4, 8)); diff != "" {
		t.Errorf("MSI-X table/PBA registers changed (-want +got):\n%s", diff)
	}
}

func TestVendorCap(t *testing.T) {
	s := fullSpec()
	h := s.Vendor.Handler.(*fakeHandler)
	h.data = [4]byte{0xde, 0xad, 0xbe, 0xef}
	f, _ := newTestFunction(t, s)
	at := capOffset(t, f, capIDVendor)
	if got := cfgRead(t, f, at, 3); !bytes.Equal(got, []byte{capIDVendor, byte(capOffset(t, f, capIDPCIe)), 0x20}) {
		t.Errorf("vendor header = % x", got)
	}
	// The watchdog's read32 sequence (myri10ge-device-interface.md 7.5).
	cfgWrite(t, f, at+0x10, []byte{3})
	cfgWrite32(t, f, at+0x18, 0xfffffff0)
	if got := cfg32(t, f, at+0x14); got != 0xefbeadde {
		t.Errorf("vendor +0x14 = %#x, want handler's 0xefbeadde", got)
	}
	if got := cfg32(t, f, at+0x18); got != 0xfffffff0 {
		t.Errorf("vendor +0x18 = %#x, want stored 0xfffffff0", got)
	}
	// A read straddling the header and body gives the handler only the body.
	if got := cfgRead(t, f, at+0x12, 4); !bytes.Equal(got, []byte{0, 0, 0xde, 0xad}) {
		t.Errorf("vendor +0x12..0x15 = % x", got)
	}
	// A write covering the header and past the end: header RO, only the body reaches the handler.
	h.writes = nil
	p := bytes.Repeat([]byte{0x77}, 0x24)
	cfgWrite(t, f, at, p)
	if diff := cmp.Diff([]string{"0x3=" + strings.Repeat("77", 0x1d)}, h.writes); diff != "" {
		t.Errorf("handler writes (-want +got):\n%s", diff)
	}
	if got := cfgRead(t, f, at, 3); got[0] != capIDVendor || got[2] != 0x20 {
		t.Errorf("vendor header changed: % x", got)
	}
	h.writes = nil
	cfgWrite(t, f, at+0x10, []byte{3})
	if diff := cmp.Diff([]string{"0x10=03"}, h.writes); diff != "" {
		t.Errorf("handler writes (-want +got):\n%s", diff)
	}
}

// TestReadConsistency checks that reads of every size agree with QEMU's
// one 4096-byte read (vfio-user-notes 3.1 step 6).
func TestReadConsistency(t *testing.T) {
	s := fullSpec()
	s.Vendor.Handler.(*fakeHandler).data = [4]byte{1, 2, 3, 4}
	f, _ := newTestFunction(t, s)
	cfgWrite32(t, f, 0x10, 0xfe000000)
	full := cfgRead(t, f, 0, 4096)
	for _, n := range []int{1, 2, 3, 4, 8, 13, 64} {
		var got []byte
		for off := 0; off < 4096; off += n {
			got = append(got, cfgRead(t, f, off, min(n, 4096-off))...)
		}
		if !bytes.Equal(full, got) {
			t.Errorf("reads of %d bytes differ from the 4096-byte read", n)
		}
	}
}

// TestConfigOutOfRange makes every access that leaves config space fail,
// for both sizes of it (PCIe 4096 bytes, PCI 256).
func TestConfigOutOfRange(t *testing.T) {
	for name, spec := range map[string]Spec{"PCIe": fullSpec(), "PCI": minimalSpec()} {
		f, _ := newTestFunction(t, spec)
		ri, err := f.RegionInfo(RegionConfig)
		if err != nil {
			t.Fatal(err)
		}
		end := ri.Size
		for what, a := range map[string]access{
			"past the end":          {RegionConfig, end, 1},
			"straddles the end":     {RegionConfig, end - 1, 2},
			"longer than the space": {RegionConfig, 0, int(end) + 1},
			"huge offset":           {RegionConfig, 1<<64 - 1, 2},
			"empty":                 {RegionConfig, 0, 0},
		} {
			t.Run(name+"/"+what, func(t *testing.T) { wantRefused(t, f, a) })
		}
	}
}

func le16get(b []byte, off int) uint16 { return uint16(b[off]) | uint16(b[off+1])<<8 }
func le32get(b []byte, off int) uint32 {
	return uint32(le16get(b, off)) | uint32(le16get(b, off+2))<<16
}
