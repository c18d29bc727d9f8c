package vfiouser_test

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/msi/msitest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/myriemu/myriemu/wcbar"
	"golang.org/x/sys/unix"
)

// miniDevice is the smallest pci.Device with every kind of BAR: BAR0
// trapped registers, BAR2 the MSI-X table and PBA, BAR4 a 64-bit
// prefetchable window whose last page is trapped.
type miniDevice struct {
	win  *wcbar.Window // BAR4
	regs miniRegs      // BAR0 and BAR2 (they share it)

	mu       sync.Mutex
	host     pci.Host
	attached bool
	resets   int
}

// miniRegs is register storage with the ReadAt/WriteAt of a wcbar.Window.
type miniRegs struct {
	mu sync.Mutex
	b  [4096]byte
}

func (r *miniRegs) ReadAt(p []byte, off uint64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return copy(p, r.b[off:]), nil
}

func (r *miniRegs) WriteAt(p []byte, off uint64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return copy(r.b[off:], p), nil
}

func (d *miniDevice) Spec() pci.Spec {
	return pci.Spec{
		VendorID: 0x1234, DeviceID: 0x7e57, SubsystemVendorID: 0x1234, SubsystemID: 0x7e57,
		Revision: 1, Class: 0x00ff00,
		BARs: [6]pci.BAR{
			0: {Size: 4096},
			2: {Size: 4096},
			4: {Size: 64 << 10, Flags: pci.BARMem64 | pci.BARPrefetch, Window: d.win},
		},
		InterruptPin: 1,
		PCIe:         &pci.PCIeCap{MaxPayload: 256, LinkWidth: 1, LinkSpeed: 1},
		MSIX:         &pci.MSIXCap{Vectors: 4, TableBAR: 2, TableOffset: 0, PBABAR: 2, PBAOffset: 0x800},
	}
}

// bar is what backs a BAR's trapped accesses.
func (d *miniDevice) bar(i int) interface {
	ReadAt(p []byte, off uint64) (int, error)
	WriteAt(p []byte, off uint64) (int, error)
} {
	if i == 4 {
		return d.win
	}
	return &d.regs
}

func (d *miniDevice) ReadBAR(bar int, off uint64, p []byte) error {
	_, err := d.bar(bar).ReadAt(p, off)
	return err
}

func (d *miniDevice) WriteBAR(bar int, off uint64, p []byte) error {
	_, err := d.bar(bar).WriteAt(p, off)
	return err
}

func (d *miniDevice) Attach(h pci.Host) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.host, d.attached = h, true
	return nil
}

func (d *miniDevice) Detach() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.host, d.attached = pci.Host{}, false
}

func (d *miniDevice) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resets++
	d.regs.mu.Lock()
	d.regs.b = [4096]byte{}
	d.regs.mu.Unlock()
}

func (d *miniDevice) Host() (pci.Host, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.host, d.attached
}

// findCap walks the config capability list for id.
func findCap(t *testing.T, cfg []byte, id byte) uint64 {
	t.Helper()
	for p, n := cfg[0x34], 0; p != 0 && n < 48; p, n = cfg[p+1], n+1 {
		if cfg[p] == id {
			return uint64(p)
		}
	}
	t.Fatalf("capability %#x not found", id)
	return 0
}

// TestPCIFunctionLikeQEMU serves a real pci.Function and drives it through
// QEMU 11.1.3's realize and reset sequences (notes 3.1), then MSI-X and
// DMA, as the e2e tests will with real QEMU.
func TestPCIFunctionLikeQEMU(t *testing.T) {
	leaktest.Check(t)
	log, hook := testLogger()
	win, err := wcbar.New("mini", 64<<10, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { win.Close() })
	win.Trap(60<<10, 4096)
	dev := &miniDevice{win: win}
	fn, err := pci.NewFunction(dev, log)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(socketDir(t), "pci.sock")
	s, err := vfiouser.Listen(vfiouser.Config{Path: path, Function: fn, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	vfiousertest.Serve(t, s)

	c := dial(t, path)
	if err := c.Negotiate(); err != nil {
		t.Fatal(err)
	}
	// Realize: maps first (guest RAM with fd, BIOS without), then info.
	ram := newMappedRAM(t, c.MapRAM, 1<<20, 0)
	bios := dmatest.NewRAM(t, 0x40000)
	if err := c.MapRAMNoFD(bios, 0xfffc0000); err != nil {
		t.Fatal(err)
	}
	di, err := c.DeviceInfo()
	if err != nil {
		t.Fatal(err)
	}
	if di.NumRegions != 9 || di.NumIRQs != 5 || di.Flags != 3 {
		t.Errorf("device info %+v", di)
	}
	sizes := map[uint32]uint64{0: 4096, 1: 0, 2: 4096, 3: 0, 4: 64 << 10, 5: 0, 7: 4096}
	for _, i := range []uint32{0, 1, 2, 3, 4, 5, 7} {
		ri, err := c.RegionInfo(i)
		if err != nil {
			t.Fatalf("region %d: %v", i, err)
		}
		if ri.Size != sizes[i] {
			t.Errorf("region %d size %#x, want %#x", i, ri.Size, sizes[i])
		}
		if i == 4 {
			want := []vfiousertest.Area{{Offset: 0, Size: 60 << 10}}
			if ri.Fd < 0 || ri.Flags&vfiousertest.RegionFlagMmap == 0 || !cmp.Equal(ri.Sparse, want) {
				t.Errorf("BAR4 %+v, want MMAP, one fd and sparse %v", ri, want)
			}
		}
		ri.Close()
	}
	if _, err := c.IRQInfo(3); err != nil {
		t.Errorf("ERR irq info: %v", err)
	}
	cfg, err := c.ReadConfig(0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg[:4], []byte{0x34, 0x12, 0x57, 0x7e}) {
		t.Errorf("ids %x", cfg[:4])
	}
	// ROM sizing must read back 0 (notes 4.1).
	if err := c.WriteConfig32(0x30, 0xfffff800); err != nil {
		t.Fatal(err)
	}
	if v, err := c.ReadConfig32(0x30); err != nil || v != 0 {
		t.Errorf("ROM BAR after sizing: %#x, %v", v, err)
	}
	msix := findCap(t, cfg, 0x11)
	if ii, err := c.IRQInfo(2); err != nil || ii.Count != 4 {
		t.Errorf("MSI-X irq info %+v, %v", ii, err)
	}
	intx := msitest.NewEventFD(t).Fd()
	t.Cleanup(func() { unix.Close(intx) })
	if err := c.SetIRQs(0, vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger, 0, 1, []int{intx}, nil); err != nil {
		t.Fatalf("INTx enable: %v", err)
	}
	// Reset sequence.
	if err := c.DisableIRQs(0); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteConfig(4, []byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	for bar := uint64(0x10); bar <= 0x24; bar += 4 {
		if err := c.WriteConfig32(bar, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Driver bind: MEM|MASTER, MSI-X enable, vectors unmasked.
	if err := c.WriteConfig(4, []byte{0x06, 0x04}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteConfig(msix+2, []byte{0x03, 0x80}); err != nil {
		t.Fatal(err)
	}
	evs, err := c.EnableMSIX(t, 4)
	if err != nil {
		t.Fatal(err)
	}
	host, ok := dev.Host()
	if !ok {
		t.Fatal("device not attached")
	}
	host.IRQ.Raise(2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := evs[2].Wait(ctx); err != nil {
		t.Fatalf("vector 2: %v", err)
	}
	// Device DMA: shared RAM directly, BIOS by message (from a worker).
	if _, err := host.Mem.WriteAt([]byte("dma!"), 0x1000); err != nil {
		t.Fatal(err)
	}
	if got := string(ram.Bytes()[0x1000:0x1004]); got != "dma!" {
		t.Errorf("guest RAM %q", got)
	}
	copy(bios.Bytes()[0x10:], "bios")
	got := make([]byte, 4)
	if _, err := host.Mem.ReadAt(got, 0xfffc0010); err != nil || string(got) != "bios" {
		t.Errorf("message DMA read %q, %v", got, err)
	}
	// Posted writes to the window's trapped page reach the same memory.
	if err := c.WriteRegionPosted(4, 60<<10, []byte{0xaa, 0xbb, 0xcc, 0xdd}); err != nil {
		t.Fatal(err)
	}
	if v := win.Load32(60 << 10); v != 0xddccbbaa {
		t.Errorf("window word %#x", v)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "device detach", func() bool { _, ok := dev.Host(); return !ok })
	// The connection closes its DMA map just after detaching the device,
	// so the refusal may lag the detach by a moment.
	waitFor(t, "DMA refused after the client left", func() bool {
		_, err := host.Mem.ReadAt(got, 0x1000)
		return err != nil
	})
	for _, e := range hook.AllEntries() {
		if e.Level <= 2 { // Error or worse
			t.Errorf("logged at %v: %s %v", e.Level, e.Message, e.Data)
		}
	}
}
