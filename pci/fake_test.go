package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

// fakeDevice is a Device whose BARs are sparse plain memory and which
// records what the Function asks of it.
type fakeDevice struct {
	spec Spec

	mu        sync.Mutex
	mem       [6]map[uint64]byte
	accesses  []string // "R2 0x10+4" / "W2 0x10+4"
	attaches  int
	detaches  int
	resets    int
	host      Host
	attachErr error
	barErr    error
}

func newFakeDevice(spec Spec) *fakeDevice {
	d := &fakeDevice{spec: spec}
	for i := range d.mem {
		d.mem[i] = map[uint64]byte{}
	}
	return d
}

func (d *fakeDevice) Spec() Spec { return d.spec }

func (d *fakeDevice) ReadBAR(bar int, off uint64, p []byte) error  { return d.access('R', bar, off, p) }
func (d *fakeDevice) WriteBAR(bar int, off uint64, p []byte) error { return d.access('W', bar, off, p) }

// access records a BAR access ("R0 0x10+4") and then fails it with barErr
// or does it on the fake's memory.
func (d *fakeDevice) access(dir byte, bar int, off uint64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.accesses = append(d.accesses, fmt.Sprintf("%c%d %#x+%d", dir, bar, off, len(p)))
	if d.barErr != nil {
		return d.barErr
	}
	mem := d.mem[bar]
	for i := range p {
		if dir == 'W' {
			mem[off+uint64(i)] = p[i]
		} else {
			p[i] = mem[off+uint64(i)]
		}
	}
	return nil
}

func (d *fakeDevice) Attach(h Host) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attaches++
	d.host = h
	return d.attachErr
}

func (d *fakeDevice) Detach() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.detaches++
	d.host = Host{}
}

func (d *fakeDevice) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resets++
}

func (d *fakeDevice) takeAccesses() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.accesses
	d.accesses = nil
	return a
}

// fakeHandler is a vendor capability handler in the manner of the
// Myri-10G read32 window (myri10ge-device-interface.md 7.5): reads of
// +0x14..+0x17 return a data register, writes are recorded.
type fakeHandler struct {
	data   [4]byte
	writes []string
}

func (h *fakeHandler) ReadConfig(off int, p []byte) {
	for i := range p {
		if o := off + i; o >= 0x14 && o < 0x18 {
			p[i] = h.data[o-0x14]
		}
	}
}

func (h *fakeHandler) WriteConfig(off int, p []byte) {
	h.writes = append(h.writes, fmt.Sprintf("%#x=%x", off, p))
}

// fullSpec uses every feature: a 64-bit prefetchable BAR, MSI-X in its
// own 64-bit BAR, a 32-bit BAR, an I/O BAR and every capability.
func fullSpec() Spec {
	return Spec{
		VendorID: 0x14c1, DeviceID: 0x0008,
		SubsystemVendorID: 0x14c1, SubsystemID: 0x0008,
		Revision: 1, Class: 0x020000,
		BARs: [6]BAR{
			0: {Size: 16 << 20, Flags: BARMem64 | BARPrefetch},
			2: {Size: 8192, Flags: BARMem64},
			4: {Size: 4096},
			5: {Size: 256, Flags: BARIO},
		},
		InterruptPin: 1,
		PM:           &PMCap{},
		MSI:          &MSICap{Vectors: 4, Addr64: true, PerVectorMask: true},
		Vendor:       &VendorCap{Length: 0x20, Handler: &fakeHandler{}},
		PCIe:         &PCIeCap{MaxPayload: 256, LinkWidth: 4, LinkSpeed: 2},
		MSIX:         &MSIXCap{Vectors: 3, TableBAR: 2, TableOffset: 0, PBABAR: 2, PBAOffset: 0x1000},
	}
}

// minimalSpec is a conventional PCI function without capabilities.
func minimalSpec() Spec {
	return Spec{
		VendorID: 0x1234, DeviceID: 0x7e57, Class: 0x00ff00,
		BARs: [6]BAR{0: {Size: 4096}},
	}
}

func testLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func newTestFunction(t testing.TB, spec Spec) (*Function, *fakeDevice) {
	t.Helper()
	d := newFakeDevice(spec)
	f, err := NewFunction(d, testLog())
	if err != nil {
		t.Fatalf("NewFunction: %v", err)
	}
	return f, d
}

func cfgRead(t testing.TB, f *Function, off, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := f.ReadRegion(RegionConfig, uint64(off), p); err != nil {
		t.Fatalf("config read %d@%#x: %v", n, off, err)
	}
	return p
}

func cfgWrite(t testing.TB, f *Function, off int, p []byte) {
	t.Helper()
	if err := f.WriteRegion(RegionConfig, uint64(off), p); err != nil {
		t.Fatalf("config write %d@%#x: %v", len(p), off, err)
	}
}

func cfg8(t testing.TB, f *Function, off int) uint8 { t.Helper(); return cfgRead(t, f, off, 1)[0] }
func cfg16(t testing.TB, f *Function, off int) uint16 {
	t.Helper()
	return binary.LittleEndian.Uint16(cfgRead(t, f, off, 2))
}
func cfg32(t testing.TB, f *Function, off int) uint32 {
	t.Helper()
	return binary.LittleEndian.Uint32(cfgRead(t, f, off, 4))
}

func cfgWrite16(t testing.TB, f *Function, off int, v uint16) {
	t.Helper()
	cfgWrite(t, f, off, binary.LittleEndian.AppendUint16(nil, v))
}

func cfgWrite32(t testing.TB, f *Function, off int, v uint32) {
	t.Helper()
	cfgWrite(t, f, off, binary.LittleEndian.AppendUint32(nil, v))
}

// capOffset walks the capability list for id; 0 if absent.
func capOffset(t testing.TB, f *Function, id byte) int {
	t.Helper()
	c := cfgRead(t, f, 0, 256)
	seen := map[int]bool{}
	for p := int(c[regCapPtr]); p != 0; p = int(c[p+1]) {
		if p < capStart || p > 0xfc || p&3 != 0 || seen[p] {
			t.Fatalf("bad capability pointer %#x", p)
		}
		seen[p] = true
		if c[p] == id {
			return p
		}
	}
	return 0
}

var errFake = errors.New("fake device error")
