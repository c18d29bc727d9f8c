package pci

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/msi/msitest"
	"github.com/myriemu/myriemu/wcbar"
	"github.com/myriemu/myriemu/wcbar/wcbartest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

func TestDeviceInfo(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	if r, i := f.DeviceInfo(); r != 9 || i != 5 {
		t.Errorf("DeviceInfo = %d, %d; want 9, 5", r, i)
	}
}

func TestRegionInfo(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	rw := RegionRead | RegionWrite
	want := []RegionInfo{
		{Size: 16 << 20, Flags: rw, Fd: -1},
		{Fd: -1},
		{Size: 8192, Flags: rw, Fd: -1},
		{Fd: -1},
		{Size: 4096, Flags: rw, Fd: -1},
		{Size: 256, Flags: rw, Fd: -1},
		{Fd: -1}, // ROM
		{Size: 4096, Flags: rw, Fd: -1},
		{Fd: -1}, // VGA
	}
	var got []RegionInfo
	for i := range uint32(NumRegions) {
		ri, err := f.RegionInfo(i)
		if err != nil {
			t.Fatalf("RegionInfo(%d): %v", i, err)
		}
		got = append(got, ri)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("region info (-want +got):\n%s", diff)
	}
	if _, err := f.RegionInfo(NumRegions); !errors.Is(err, unix.EINVAL) {
		t.Errorf("RegionInfo(%d): %v, want EINVAL", NumRegions, err)
	}
}

func TestIRQInfo(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want []IRQInfo
	}{
		{"full", fullSpec(), []IRQInfo{
			{Count: 1, Flags: IRQEventfd | IRQMaskable | IRQAutomasked},
			{Count: 4, Flags: IRQEventfd | IRQNoResize},
			{Count: 3, Flags: IRQEventfd | IRQNoResize},
			{Count: 1, Flags: IRQEventfd},
		}},
		{"minimal", minimalSpec(), []IRQInfo{{}, {}, {}, {Count: 1, Flags: IRQEventfd}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newTestFunction(t, tt.spec)
			var got []IRQInfo
			for i := range uint32(msi.REQ) {
				ii, err := f.IRQInfo(i)
				if err != nil {
					t.Fatalf("IRQInfo(%d): %v", i, err)
				}
				got = append(got, ii)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("irq info (-want +got):\n%s", diff)
			}
			for _, i := range []uint32{uint32(msi.REQ), 5, 1 << 31} {
				if _, err := f.IRQInfo(i); !errors.Is(err, unix.EINVAL) {
					t.Errorf("IRQInfo(%d): %v, want EINVAL", i, err)
				}
			}
		})
	}
}

func TestBARAccess(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	tests := []struct {
		name  string
		bar   uint32
		off   uint64
		n     int
		write bool
		want  []string // device accesses
	}{
		{"plain", 0, 0x100, 4, false, []string{"R0 0x100+4"}},
		{"last byte", 0, 16<<20 - 1, 1, true, []string{"W0 0xffffff+1"}},
		{"io", 5, 0xfc, 4, false, []string{"R5 0xfc+4"}},
		{"table only", 2, 0x10, 16, false, nil},
		{"after table", 2, 0x30, 8, false, []string{"R2 0x30+8"}},
		{"straddles table end", 2, 0x2c, 8, true, []string{"W2 0x30+4"}},
		{"around PBA", 2, 0xff8, 24, false, []string{"R2 0xff8+8", "R2 0x1008+8"}},
		{"whole BAR2", 2, 0, 8192, false, []string{"R2 0x30+4048", "R2 0x1008+4088"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d.takeAccesses()
			p := make([]byte, tt.n)
			var err error
			if tt.write {
				err = f.WriteRegion(tt.bar, tt.off, p)
			} else {
				err = f.ReadRegion(tt.bar, tt.off, p)
			}
			if err != nil {
				t.Fatalf("access: %v", err)
			}
			if diff := cmp.Diff(tt.want, d.takeAccesses()); diff != "" {
				t.Errorf("device accesses (-want +got):\n%s", diff)
			}
		})
	}
}

// access is a region access of n bytes at off.
type access struct {
	index uint32
	off   uint64
	n     int
}

// wantRefused makes sure a read and a write of a both fail with EINVAL.
func wantRefused(t *testing.T, f *Function, a access) {
	t.Helper()
	p := make([]byte, a.n)
	if err := f.ReadRegion(a.index, a.off, p); !errors.Is(err, unix.EINVAL) {
		t.Errorf("read %+v: %v, want EINVAL", a, err)
	}
	if err := f.WriteRegion(a.index, a.off, p); !errors.Is(err, unix.EINVAL) {
		t.Errorf("write %+v: %v, want EINVAL", a, err)
	}
}

func TestBAROutOfRange(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	for name, a := range map[string]access{
		"past end":             {0, 16 << 20, 1},
		"straddles end":        {2, 8190, 4},
		"upper half of 64-bit": {1, 0, 4},
		"absent":               {3, 0, 4},
		"ROM":                  {RegionROM, 0, 4},
		"VGA":                  {RegionVGA, 0, 4},
		"no such region":       {9, 0, 4},
		"wraps":                {0, 1<<64 - 2, 4},
		"empty":                {0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) { wantRefused(t, f, a) })
	}
	if a := d.takeAccesses(); a != nil {
		t.Errorf("device saw %v for out-of-range accesses", a)
	}
}

func TestBARDeviceError(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	d.barErr = errFake
	err := f.ReadRegion(0, 0, make([]byte, 4))
	if !errors.Is(err, errFake) {
		t.Errorf("read: %v, want the device's error", err)
	}
	// The MSI-X table does not involve the device.
	if err := f.ReadRegion(2, 0, make([]byte, 16)); err != nil {
		t.Errorf("table read: %v", err)
	}
}

func TestMSIXTable(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	read := func(off uint64, n int) []byte {
		t.Helper()
		p := make([]byte, n)
		if err := f.ReadRegion(2, off, p); err != nil {
			t.Fatalf("read BAR2 %d@%#x: %v", n, off, err)
		}
		return p
	}
	masked := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	if diff := cmp.Diff(bytes.Repeat(masked, 3), read(0, 48)); diff != "" {
		t.Errorf("power-on table (-want +got):\n%s", diff)
	}
	entry := []byte{0x00, 0x10, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0x40, 0, 0, 0xfe, 0xff, 0xff, 0xff}
	if err := f.WriteRegion(2, 16, entry); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), entry[:12]...), 0, 0, 0, 0) // vector control: only bit 0 stored
	if diff := cmp.Diff(want, read(16, 16)); diff != "" {
		t.Errorf("entry 1 (-want +got):\n%s", diff)
	}
	if err := f.WriteRegion(2, 16+12, []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	if got := read(16+12, 4); !bytes.Equal(got, []byte{1, 0, 0, 0}) {
		t.Errorf("vector control = % x after writing 0xff, want 01 00 00 00", got)
	}
	f.Reset()
	if diff := cmp.Diff(bytes.Repeat(masked, 3), read(0, 48)); diff != "" {
		t.Errorf("table after reset (-want +got):\n%s", diff)
	}
}

// TestPendingBits checks the PBA and MSI pending bits follow the
// interrupt table: raised while de-assigned means pending.
func TestPendingBits(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	irq := f.irq
	pba := func() []byte {
		t.Helper()
		p := make([]byte, 8)
		if err := f.ReadRegion(2, 0x1000, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// QEMU's "enable MSI-X, no vectors" (vfio-user-notes 3.3).
	if err := f.SetIRQs(uint32(msi.MSIX), msi.DataEventfd|msi.ActionTrigger, 0, 1, nil, nil); err != nil {
		t.Fatalf("SetIRQs: %v", err)
	}
	irq.Raise(2)
	irq.Raise(0)
	if got := pba(); !bytes.Equal(got, []byte{5, 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("PBA = % x, want vectors 0 and 2 pending", got)
	}
	if err := f.WriteRegion(2, 0x1000, []byte{0, 0, 0, 0}); err != nil {
		t.Errorf("PBA write: %v (want ignored, no error)", err)
	}
	if got := pba(); got[0] != 5 {
		t.Errorf("PBA = % x after a write, want unchanged", got)
	}
	f.Reset()
	if got := pba(); got[0] != 0 {
		t.Errorf("PBA = % x after reset, want 0", got)
	}

	// MSI pending bits in config space.
	if err := f.SetIRQs(uint32(msi.MSIX), msi.DataNone|msi.ActionTrigger, 0, 0, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.SetIRQs(uint32(msi.MSI), msi.DataEventfd|msi.ActionTrigger, 0, 4, nil, nil); err != nil {
		t.Fatal(err)
	}
	irq.Raise(3)
	at := capOffset(t, f, capIDMSI)
	if got := cfg32(t, f, at+20); got != 1<<3 {
		t.Errorf("MSI pending = %#x, want 0x8", got)
	}
}

func TestINTx(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	ev := msitest.NewEventFD(t)
	if err := f.SetIRQs(uint32(msi.INTx), msi.DataEventfd|msi.ActionTrigger, 0, 1, []int{ev.Fd()}, nil); err != nil {
		t.Fatalf("SetIRQs: %v", err)
	}
	status := func() uint16 { t.Helper(); return cfg16(t, f, regStatus) }

	// INTX_DISABLE set: the line asserts (STATUS.INTERRUPT) but nothing is signalled.
	cfgWrite16(t, f, regCommand, cmdINTxDisable)
	f.irq.Raise(0)
	if status()&statusInterrupt == 0 {
		t.Errorf("STATUS.INTERRUPT clear with the line asserted")
	}
	if n := ev.Count(); n != 0 {
		t.Errorf("%d INTx signals with INTX_DISABLE set, want 0", n)
	}
	// Clearing INTX_DISABLE delivers the asserted line.
	cfgWrite16(t, f, regCommand, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ev.Wait(ctx); err != nil {
		t.Fatalf("no INTx signal after clearing INTX_DISABLE: %v", err)
	}
	f.irq.Lower()
	if status()&statusInterrupt != 0 {
		t.Errorf("STATUS.INTERRUPT set after Lower")
	}
	// The signal automasked the line; the client unmasks after EOI.
	if err := f.SetIRQs(uint32(msi.INTx), msi.DataNone|msi.ActionUnmask, 0, 1, nil, nil); err != nil {
		t.Fatalf("unmask: %v", err)
	}
	// Reset deasserts and clears INTX_DISABLE (in the table too).
	cfgWrite16(t, f, regCommand, cmdINTxDisable)
	f.irq.Raise(0)
	f.Reset()
	if status()&statusInterrupt != 0 {
		t.Errorf("STATUS.INTERRUPT set after Reset")
	}
	before := ev.Count()
	f.irq.Raise(0)
	if err := ev.Wait(ctx); err != nil || ev.Count() == before {
		t.Errorf("no INTx signal after Reset cleared INTX_DISABLE (%v)", err)
	}
}

// busMaster reports whether mem lets DMA through, from the error an
// access to unmapped memory gets.
func busMaster(t *testing.T, mem *dma.Map) bool {
	t.Helper()
	_, err := mem.ReadAt(make([]byte, 4), 0x1000)
	switch {
	case errors.Is(err, dma.ErrBusMasterOff):
		return false
	case errors.Is(err, dma.ErrUnmapped):
		return true
	}
	t.Fatalf("ReadAt: %v, want ErrBusMasterOff or ErrUnmapped", err)
	return false
}

func TestBusMaster(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	mem := dma.NewMap(testLog())
	defer mem.Close()

	cfgWrite16(t, f, regCommand, cmdMaster) // before attach: stored only
	if err := f.Attach(mem); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if !busMaster(t, mem) {
		t.Errorf("bus master off after Attach with COMMAND.MASTER set")
	}
	if d.host.Mem != dma.Space(mem) || d.host.IRQ != msi.Raiser(f.irq) || d.host.Log == nil {
		t.Errorf("device attached with host %+v", d.host)
	}
	cfgWrite(t, f, regCommand, []byte{cmdMemory}) // byte write clears MASTER
	if busMaster(t, mem) {
		t.Errorf("bus master on after clearing COMMAND.MASTER")
	}
	cfgWrite16(t, f, regCommand, cmdMaster|cmdMemory)
	if !busMaster(t, mem) {
		t.Errorf("bus master off after setting COMMAND.MASTER")
	}
	f.Reset()
	if busMaster(t, mem) {
		t.Errorf("bus master on after Reset")
	}
	if got := cfg16(t, f, regCommand); got != 0 {
		t.Errorf("command = %#x after Reset, want 0", got)
	}
}

func TestAttachDetach(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	mem := dma.NewMap(testLog())
	defer mem.Close()
	ev := msitest.NewEventFD(t)

	if err := f.Attach(mem); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if err := f.Attach(mem); !errors.Is(err, unix.EBUSY) {
		t.Errorf("second Attach: %v, want EBUSY", err)
	}
	if err := f.SetIRQs(uint32(msi.MSIX), msi.DataEventfd|msi.ActionTrigger, 0, 1, []int{ev.Fd()}, nil); err != nil {
		t.Fatal(err)
	}
	cfgWrite32(t, f, 0x10, 0xfe000000)
	f.Detach()
	if d.attaches != 1 || d.detaches != 1 || d.resets != 1 {
		t.Errorf("device attaches/detaches/resets = %d/%d/%d, want 1/1/1", d.attaches, d.detaches, d.resets)
	}
	if got := cfg32(t, f, 0x10); got != 0xc {
		t.Errorf("BAR0 = %#x after Detach, want reset value 0xc", got)
	}
	if f.irq.Mode() != msi.ModeNone {
		t.Errorf("interrupt mode %v after Detach, want none", f.irq.Mode())
	}
	f.Detach() // idempotent: no second device Detach
	if d.detaches != 1 {
		t.Errorf("device detaches = %d after a second Detach, want 1", d.detaches)
	}

	// A device that fails to attach is detached again, once.
	d.attachErr = errFake
	if err := f.Attach(mem); !errors.Is(err, errFake) {
		t.Errorf("Attach: %v, want the device's error", err)
	}
	f.Detach()
	if d.attaches != 2 || d.detaches != 2 {
		t.Errorf("device attaches/detaches = %d/%d, want 2/2", d.attaches, d.detaches)
	}
	// And the function can be attached afterwards.
	d.attachErr = nil
	if err := f.Attach(mem); err != nil {
		t.Errorf("Attach after a failed one: %v", err)
	}
	f.Detach()
	if err := f.Attach(nil); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Attach(nil): %v, want EINVAL", err)
	}
}

func TestResetKeepsEventfds(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	ev := msitest.NewEventFD(t)
	if err := f.SetIRQs(uint32(msi.MSIX), msi.DataEventfd|msi.ActionTrigger, 0, 1, []int{ev.Fd()}, nil); err != nil {
		t.Fatal(err)
	}
	at := capOffset(t, f, capIDMSIX)
	cfgWrite16(t, f, at+msixControl, msixEnable)
	f.Reset()
	if d.resets != 1 {
		t.Errorf("device resets = %d, want 1", d.resets)
	}
	if got := cfg16(t, f, at+msixControl); got != 2 {
		t.Errorf("MSI-X control = %#x after Reset, want 2", got)
	}
	f.irq.Raise(0)
	if n := ev.Count(); n != 1 {
		t.Errorf("%d signals after Reset, want 1: eventfds survive a reset", n)
	}
}

func TestSetIRQsError(t *testing.T) {
	f, _ := newTestFunction(t, minimalSpec())
	err := f.SetIRQs(uint32(msi.MSIX), msi.DataEventfd|msi.ActionTrigger, 0, 1, nil, nil)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetIRQs on a function without MSI-X: %v, want EINVAL", err)
	}
}

func TestSpecIsCopied(t *testing.T) {
	s := fullSpec()
	f, _ := newTestFunction(t, s)
	s.MSIX.Vectors = 1000
	got := f.Spec()
	got.MSI.Vectors = 1
	if f.spec.MSIX.Vectors != 3 || f.spec.MSI.Vectors != 4 {
		t.Errorf("function spec changed through a caller's pointer")
	}
}

func TestWindowRegionInfo(t *testing.T) {
	const size = 64 << 10
	rwm := RegionRead | RegionWrite | RegionMmap
	tests := []struct {
		name  string
		traps [][2]uint64
		want  func(fd int) RegionInfo
	}{
		{"whole BAR mappable", nil, func(fd int) RegionInfo {
			return RegionInfo{Size: size, Flags: rwm, Fd: fd}
		}},
		{"last page trapped", [][2]uint64{{size - 4096, 4}}, func(fd int) RegionInfo {
			return RegionInfo{Size: size, Flags: rwm, Fd: fd, Sparse: []Area{{0, size - 4096}}}
		}},
		{"middle trapped", [][2]uint64{{0x2000, 0x1000}}, func(fd int) RegionInfo {
			return RegionInfo{Size: size, Flags: rwm, Fd: fd, Sparse: []Area{{0, 0x2000}, {0x3000, size - 0x3000}}}
		}},
		{"all trapped", [][2]uint64{{0, size}}, func(int) RegionInfo {
			return RegionInfo{Size: size, Flags: RegionRead | RegionWrite, Fd: -1}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := wcbartest.NewWindow(t, size, tt.traps...)
			s := minimalSpec()
			s.BARs[2] = BAR{Size: size, Flags: BARMem64 | BARPrefetch, Window: w}
			f, _ := newTestFunction(t, s)
			got, err := f.RegionInfo(2)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want(w.Fd()), got); diff != "" {
				t.Errorf("region info (-want +got):\n%s", diff)
			}
			w.Close()
			if got, _ := f.RegionInfo(2); got.Flags&RegionMmap != 0 || got.Fd != -1 {
				t.Errorf("region info of a closed window: %+v, want no mmap", got)
			}
		})
	}
}

func TestWindowValidation(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(s *Spec, w *wcbar.Window)
		traps [][2]uint64
		want  string
	}{
		{"size mismatch", func(s *Spec, w *wcbar.Window) { s.BARs[0] = BAR{Size: 128 << 10, Window: w} }, nil,
			"BAR0 size 0x20000 but its window has size 0x10000"},
		{"on an I/O BAR", func(s *Spec, w *wcbar.Window) { s.BARs[0] = BAR{Size: 256, Flags: BARIO, Window: w} }, nil,
			"cannot have a mappable window"},
		{"MSI-X table mappable", func(s *Spec, w *wcbar.Window) {
			s.BARs[0] = BAR{Size: 64 << 10, Window: w}
			s.MSIX = &MSIXCap{Vectors: 4, TableOffset: 0x1000, PBAOffset: 0x3000}
		}, [][2]uint64{{0x3000, 8}}, "MSI-X table [0x1000, 0x1040) overlaps mmappable area [0x0, 0x3000)"},
		{"MSI-X PBA mappable", func(s *Spec, w *wcbar.Window) {
			s.BARs[0] = BAR{Size: 64 << 10, Window: w}
			s.MSIX = &MSIXCap{Vectors: 4, TableOffset: 0x1000, PBAOffset: 0x2000}
		}, [][2]uint64{{0x1000, 0x40}}, "MSI-X PBA [0x2000, 0x2008) overlaps mmappable area [0x2000, 0x10000)"},
		{"MSI-X trapped", func(s *Spec, w *wcbar.Window) {
			s.BARs[0] = BAR{Size: 64 << 10, Window: w}
			s.MSIX = &MSIXCap{Vectors: 4, TableOffset: 0x1000, PBAOffset: 0x1800}
		}, [][2]uint64{{0x1000, 0x1000}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := wcbartest.NewWindow(t, 64<<10, tt.traps...)
			s := minimalSpec()
			tt.edit(&s, w)
			_, err := NewFunction(newFakeDevice(s), testLog())
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewFunction: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("NewFunction error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestWarnings checks client misuse is logged, with component=pci, and
// rate-limited per kind of mistake rather than once per access; the budget
// belongs to the function, so clients that come and go share it.
func TestWarnings(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	f, err := NewFunction(newFakeDevice(fullSpec()), logrus.NewEntry(logger).WithField("device", "t0"))
	if err != nil {
		t.Fatal(err)
	}
	const clients, perClient = 5, 40
	start := time.Now()
	for range clients {
		mem := dma.NewMap(testLog())
		if err := f.Attach(mem); err != nil {
			t.Fatal(err)
		}
		for range perClient {
			f.ReadRegion(RegionConfig, 4096, make([]byte, 4))
			f.WriteRegion(2, 0x1000, make([]byte, 8)) // PBA
		}
		f.Detach()
		mem.Close()
	}
	// A budget refills one line per Interval: a slow machine may earn more.
	budget := ratelog.Burst + int(time.Since(start)/ratelog.Interval)
	entries := hook.AllEntries()
	count := func(msg string) (n int) {
		for _, e := range entries {
			if e.Message == msg {
				n++
			}
		}
		return n
	}
	for _, msg := range []string{"region access out of range", "write to MSI-X PBA ignored"} {
		if n := count(msg); n < ratelog.Burst || n > budget {
			t.Errorf("%d %q lines for %d accesses by %d clients, want %d..%d (rate-limited per function)",
				n, msg, clients*perClient, clients, ratelog.Burst, budget)
		}
	}
	e := entries[0]
	if e.Level != logrus.WarnLevel || e.Data["component"] != "pci" || e.Data["device"] != "t0" {
		t.Errorf("log entry %v %q %v, want a Warn with component=pci device=t0", e.Level, e.Message, e.Data)
	}
	// After the interval the next one is logged with the suppressed count.
	logged := count("region access out of range")
	time.Sleep(ratelog.Interval)
	f.ReadRegion(RegionConfig, 4096, make([]byte, 4))
	entries = hook.AllEntries()
	if last := entries[len(entries)-1]; last.Message != "region access out of range" || last.Data["suppressed"] != clients*perClient-logged {
		t.Errorf("warning after the interval %q %v, want one with suppressed=%d", last.Message, last.Data, clients*perClient-logged)
	}
}

// TestConcurrentRaise reads the live bits (STATUS.INTERRUPT, MSI pending,
// PBA) while device workers raise and lower interrupts; run with -race.
func TestConcurrentRaise(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	if err := f.SetIRQs(uint32(msi.MSIX), msi.DataEventfd|msi.ActionTrigger, 0, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			f.irq.Raise(i % 3)
			f.irq.Lower()
		}
	}()
	defer func() { // also on t.Fatal: the raiser spins until told
		select {
		case <-done:
		default:
			close(done)
		}
		<-stopped
	}()
	for range 200 {
		cfgRead(t, f, 0, configSizePCIe)
		if err := f.ReadRegion(2, 0x1000, make([]byte, 8)); err != nil {
			t.Fatal(err)
		}
		cfgWrite16(t, f, regCommand, cmdMaster|cmdINTxDisable)
		f.Reset()
	}
	close(done)
	<-stopped
}
