package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeDev writes a sysfs-like directory for one function.
func fakeDev(t *testing.T, root, addr string, files map[string]string, cfg []byte) {
	t.Helper()
	dir := filepath.Join(root, addr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, v := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
}

func ids(vendor, device, class string) map[string]string {
	return map[string]string{
		"vendor": vendor + "\n", "device": device + "\n", "class": class + "\n",
		"subsystem_vendor": vendor + "\n", "subsystem_device": device + "\n", "revision": "0x01\n",
		"resource": "0x00000000fe800000 0x00000000fe800fff 0x0000000000040200\n" +
			"0x0000000000000000 0x0000000000000000 0x0000000000000000\n" +
			"0x00000000fe801000 0x00000000fe801fff 0x0000000000040200\n" +
			"0x0000000000000000 0x0000000000000000 0x0000000000000000\n" +
			"0x0000fe0000000000 0x0000fe00000fffff 0x000000000014220c\n" +
			"0x0000000000000000 0x0000000000000000 0x0000000000000000\n" +
			"0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
	}
}

// testdevConfig is a config space with caps PM@0x40 -> MSI@0x50 ->
// PCIe@0x70 -> MSI-X@0xb0.
func testdevConfig() []byte {
	c := make([]byte, 4096)
	c[0], c[1], c[2], c[3] = 0x34, 0x12, 0x57, 0x7e
	c[ConfigStatus] = StatusCapList
	c[ConfigCapPointer] = 0x40
	c[0x40], c[0x41] = CapIDPM, 0x50
	c[0x50], c[0x51] = CapIDMSI, 0x70
	c[0x70], c[0x71] = CapIDPCIe, 0xb0
	c[0xb0], c[0xb1] = CapIDMSIX, 0x00
	c[0xb2] = 3 // table size 4
	return c
}

func TestListAndFind(t *testing.T) {
	root := t.TempDir()
	fakeDev(t, root, "0000:01:00.0", ids("0x1234", "0x7e57", "0x00ff00"), testdevConfig())
	fakeDev(t, root, "0000:00:00.0", ids("0x8086", "0x29c0", "0x060000"), make([]byte, 256))
	all, err := ListPCI(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Addr != "0000:00:00.0" {
		t.Fatalf("ListPCI = %+v", all)
	}
	got, err := FindPCI(root, 0x1234, 0x7e57)
	if err != nil {
		t.Fatal(err)
	}
	want := []PCIDev{{Addr: "0000:01:00.0", Dir: filepath.Join(root, "0000:01:00.0"), Vendor: 0x1234,
		Device: 0x7e57, SubVendor: 0x1234, SubDevice: 0x7e57, Class: 0x00ff00, Revision: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FindPCI (-want +got):\n%s", diff)
	}
	if s := got[0].String(); s != "0000:01:00.0 1234:7e57 class=0x00ff00 rev=1" {
		t.Errorf("String() = %q", s)
	}

	res, err := got[0].Resources()
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Size() != 4096 || res[1].Size() != 0 || res[4].Size() != 1<<20 {
		t.Errorf("sizes %d %d %d", res[0].Size(), res[1].Size(), res[4].Size())
	}
	if f := res[4].Flags; f&ResourceMem == 0 || f&ResourcePrefetch == 0 || f&ResourceMem64 == 0 {
		t.Errorf("BAR4 flags %#x", f)
	}
}

func TestCaps(t *testing.T) {
	root := t.TempDir()
	fakeDev(t, root, "a", ids("0x1234", "0x7e57", "0x00ff00"), testdevConfig())
	d := PCIDev{Addr: "a", Dir: filepath.Join(root, "a")}
	caps, err := d.Caps()
	if err != nil {
		t.Fatal(err)
	}
	want := []Cap{{CapIDPM, 0x40}, {CapIDMSI, 0x50}, {CapIDPCIe, 0x70}, {CapIDMSIX, 0xb0}}
	if diff := cmp.Diff(want, caps); diff != "" {
		t.Errorf("Caps (-want +got):\n%s", diff)
	}
	if c, ok := FindCap(caps, CapIDMSIX); !ok || c.Off != 0xb0 {
		t.Errorf("FindCap(MSI-X) = %v %v", c, ok)
	}

	for name, mutate := range map[string]func([]byte){
		"loop":       func(c []byte) { c[0xb1] = 0x50 },
		"misaligned": func(c []byte) { c[0x41] = 0x51 },
		"below 0x40": func(c []byte) { c[ConfigCapPointer] = 0x20 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testdevConfig()
			mutate(cfg)
			fakeDev(t, root, "b", ids("0x1234", "0x7e57", "0x00ff00"), cfg)
			if _, err := (PCIDev{Addr: "b", Dir: filepath.Join(root, "b")}).Caps(); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestSetCommand(t *testing.T) {
	root := t.TempDir()
	fakeDev(t, root, "a", ids("0x1234", "0x7e57", "0x00ff00"), testdevConfig())
	d := PCIDev{Addr: "a", Dir: filepath.Join(root, "a")}
	got, err := d.SetCommand(CommandMemory|CommandMaster, 0)
	if err != nil || got != CommandMemory|CommandMaster {
		t.Fatalf("SetCommand = %#x, %v", got, err)
	}
	got, err = d.SetCommand(0, CommandMaster)
	if err != nil || got != CommandMemory {
		t.Fatalf("SetCommand clear = %#x, %v", got, err)
	}
	if err := d.ReadConfig(4095, make([]byte, 2)); err == nil || !strings.Contains(err.Error(), "config read") {
		t.Errorf("read past the end: %v", err)
	}
}

// AllocDMA needs root for pagemap PFNs; tests run as root here and in CI.
func TestAllocDMA(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (pagemap PFNs are hidden from others): run as root")
	}
	b, err := AllocDMA(3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 3; i++ {
		if b.Phys(i) == 0 || b.Phys(i)%PageSize != 0 {
			t.Errorf("page %d phys %#x", i, b.Phys(i))
		}
	}
	if !b.Contiguous(1, 2) {
		t.Error("a single page must count as contiguous")
	}
	if len(b.Page(2)) != PageSize {
		t.Error("page size")
	}
}
