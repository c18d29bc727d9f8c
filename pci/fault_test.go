package pci

import (
	"bytes"
	"testing"

	"github.com/myriemu/myriemu/fault/faulttest"
)

func TestBARFaults(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	f.SetFaults(faulttest.Set(t, 3,
		"drop: bar.write=drop; iova=0x100..0x103; once",
		"ones: bar.read=allones; iova=0x200..0x203; once",
		"tear: bar.wc=tear(bytes=2); iova=0x300..0x307; once",
	), "t0")
	if err := f.WriteRegion(0, 0x100, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if got := d.takeAccesses(); len(got) != 0 {
		t.Errorf("dropped write reached the device: %v", got)
	}
	p := make([]byte, 4)
	f.ReadRegion(0, 0x200, p)
	if !bytes.Equal(p, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("allones read %x", p)
	}
	f.WriteRegion(0, 0x300, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if got := d.takeAccesses(); len(got) != 1 || got[0] != "W0 0x300+2" {
		t.Errorf("torn write: %v", got)
	}
	// Rules spent: accesses pass again.
	f.WriteRegion(0, 0x100, []byte{1, 2, 3, 4})
	if got := d.takeAccesses(); len(got) != 1 {
		t.Errorf("after once: %v", got)
	}
}

func TestSurpriseRemoval(t *testing.T) {
	f, _ := newTestFunction(t, fullSpec())
	f.SetFaults(faulttest.Set(t, 3, "gone: pci.cfg=surprise-remove; once"), "t0")
	p := make([]byte, 2)
	f.ReadRegion(RegionConfig, 0, p)
	if p[0] != 0xff || p[1] != 0xff || !f.Removed() {
		t.Fatalf("vendor id after removal %x", p)
	}
	// Sticky until the next client, BARs included.
	q := make([]byte, 4)
	f.ReadRegion(0, 0, q)
	f.ReadRegion(RegionConfig, 2, p)
	if q[0] != 0xff || p[0] != 0xff {
		t.Errorf("not sticky: bar %x cfg %x", q, p)
	}
}

func TestRebootClearsBusMaster(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	cfgWrite(t, f, regCommand, []byte{cmdMaster | 0x2, 0})
	if !f.BusMaster() {
		t.Fatal("bus master not set")
	}
	f.SetFaults(faulttest.Set(t, 3, "boom: fw.nic=reboot; once"), "t0")
	f.WriteRegion(0, 0x10, []byte{1, 2, 3, 4})
	if f.BusMaster() || d.resets != 1 {
		t.Errorf("after fw.reboot: bus master %v, resets %d", f.BusMaster(), d.resets)
	}
	if cfg16(t, f, regCommand)&0x2 == 0 {
		t.Error("reboot cleared more than MASTER")
	}
}

func TestResetFail(t *testing.T) {
	f, d := newTestFunction(t, fullSpec())
	f.SetFaults(faulttest.Set(t, 3, "r: pci.reset=fail; once"), "t0")
	f.Reset()
	f.Reset()
	if d.resets != 1 {
		t.Errorf("%d device resets, want 1 (the first failed)", d.resets)
	}
}
