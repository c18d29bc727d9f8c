package vm

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func baseConfig() Config {
	return Config{
		Binary:    HostBinary("/usr/bin/qemu-system-x86_64"),
		Kernel:    "/k/vmlinuz",
		Initrd:    "/k/initrd.gz",
		QMPSocket: "/run/x/qmp.sock",
	}
}

func TestArgs(t *testing.T) {
	common := []string{
		"-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-nodefaults",
		"-display", "none", "-no-user-config", "-no-reboot",
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string
	}{
		{
			name:   "defaults",
			modify: func(*Config) {},
			want: append(append([]string(nil), common...),
				"-smp", "1", "-m", "512M",
				"-object", "memory-backend-memfd,id=ram0,size=512M,share=on",
				"-serial", "stdio", "-qmp", "unix:/run/x/qmp.sock,server=on,wait=off",
				"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.gz",
				"-append", "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check"),
		},
		{
			name: "two devices, memory, append, extra",
			modify: func(c *Config) {
				c.MemoryMiB = 1024
				c.CPUs = 2
				c.Append = "e2e.scenario=x"
				c.Devices = []Device{
					{ID: "td0", Socket: "/s/td0.sock"},
					{ID: "td1", Socket: "/s/td1.sock", Props: map[string]any{"x-msg-timeout": 20000}},
				}
				c.ExtraArgs = []string{"-trace", "vfio_user_*"}
			},
			want: append(append([]string(nil), common...),
				"-smp", "2", "-m", "1024M",
				"-object", "memory-backend-memfd,id=ram0,size=1024M,share=on",
				"-serial", "stdio", "-qmp", "unix:/run/x/qmp.sock,server=on,wait=off",
				"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.gz",
				"-append", "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check e2e.scenario=x",
				"-device", "pcie-root-port,id=rp-td0,bus=pcie.0,chassis=1",
				"-device", `{"bus":"rp-td0","driver":"vfio-user-pci","id":"td0","socket":{"path":"/s/td0.sock","type":"unix"}}`,
				"-device", "pcie-root-port,id=rp-td1,bus=pcie.0,chassis=2",
				"-device", `{"bus":"rp-td1","driver":"vfio-user-pci","id":"td1","socket":{"path":"/s/td1.sock","type":"unix"},"x-msg-timeout":20000}`,
				"-trace", "vfio_user_*"),
		},
		{
			name: "two NUMA nodes",
			modify: func(c *Config) {
				c.NUMANodes = 2
				c.CPUs = 2
			},
			want: []string{"-machine", "q35", "-accel", "tcg", "-nodefaults",
				"-display", "none", "-no-user-config", "-no-reboot",
				"-smp", "2", "-m", "512M",
				"-object", "memory-backend-memfd,id=ram0,size=256M,share=on",
				"-object", "memory-backend-memfd,id=ram1,size=256M,share=on",
				"-numa", "node,nodeid=0,cpus=0-1,memdev=ram0",
				"-numa", "node,nodeid=1,memdev=ram1",
				"-serial", "stdio", "-qmp", "unix:/run/x/qmp.sock,server=on,wait=off",
				"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.gz",
				"-append", "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check"},
		},
		{
			name:   "one NUMA node is the default machine",
			modify: func(c *Config) { c.NUMANodes = 1 },
			want: append(append([]string(nil), common...),
				"-smp", "1", "-m", "512M",
				"-object", "memory-backend-memfd,id=ram0,size=512M,share=on",
				"-serial", "stdio", "-qmp", "unix:/run/x/qmp.sock,server=on,wait=off",
				"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.gz",
				"-append", "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.modify(&c)
			got, err := c.Args()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Args() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The -device JSON must round-trip to the object QEMU 11.1 expects.
func TestDeviceJSON(t *testing.T) {
	c := baseConfig()
	c.Devices = []Device{{ID: "td0", Socket: `/tmp/a "b"/s.sock`}}
	args, err := c.Args()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(args[len(args)-1]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"driver": "vfio-user-pci", "id": "td0", "bus": "rp-td0",
		"socket": map[string]any{"type": "unix", "path": `/tmp/a "b"/s.sock`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("device JSON (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error
	}{
		{"no binary", func(c *Config) { c.Binary = Binary{} }, "no QEMU binary"},
		{"no kernel", func(c *Config) { c.Kernel = "" }, "no kernel"},
		{"no initrd", func(c *Config) { c.Initrd = "" }, "no initrd"},
		{"no qmp", func(c *Config) { c.QMPSocket = "" }, "no QMP socket"},
		{"comma in kernel", func(c *Config) { c.Kernel = "/a,b" }, "comma"},
		{"comma in qmp", func(c *Config) { c.QMPSocket = "/a,b" }, "comma"},
		{"negative memory", func(c *Config) { c.MemoryMiB = -1 }, "negative"},
		{"negative NUMA nodes", func(c *Config) { c.NUMANodes = -1 }, "negative"},
		{"too many NUMA nodes", func(c *Config) { c.NUMANodes = 9; c.MemoryMiB = 9 * 128 }, "at most 8"},
		{"uneven NUMA split", func(c *Config) { c.NUMANodes = 3 }, "does not split"},
		{"NUMA nodes too small", func(c *Config) { c.NUMANodes = 4; c.MemoryMiB = 128 }, "does not split"},
		{"bad id", func(c *Config) { c.Devices = []Device{{ID: "0x", Socket: "/s"}} }, "bad id"},
		{"dup id", func(c *Config) {
			c.Devices = []Device{{ID: "a", Socket: "/s"}, {ID: "a", Socket: "/t"}}
		}, "used twice"},
		{"no socket", func(c *Config) { c.Devices = []Device{{ID: "a"}} }, "no socket"},
		{"reserved prop", func(c *Config) {
			c.Devices = []Device{{ID: "a", Socket: "/s", Props: map[string]any{"bus": "x"}}}
		}, "set by vm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.modify(&c)
			_, err := c.Args()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Args() error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRootfsBinary(t *testing.T) {
	b := RootfsBinary("/r")
	got := append([]string{b.Path}, b.Args...)
	want := []string{
		"/r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
		"--library-path", "/r/usr/lib/x86_64-linux-gnu:/r/usr/lib/x86_64-linux-gnu/systemd",
		"/r/usr/bin/qemu-system-x86_64",
		"-L", "/r/usr/share/qemu", "-L", "/r/usr/share/seabios", "-L", "/r/usr/lib/ipxe/qemu",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"QEMU_MODULE_DIR=/r/usr/lib/x86_64-linux-gnu/qemu"}, b.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestShellQuote(t *testing.T) {
	got := ShellQuote([]string{"A=b c"}, []string{"/bin/q", "-device", `{"a":"it's"}`, "x,y=z"})
	want := `'A=b c' /bin/q -device '{"a":"it'\''s"}' x,y=z`
	if got != want {
		t.Errorf("ShellQuote = %s, want %s", got, want)
	}
}

func TestParseQueryPCI(t *testing.T) {
	raw := json.RawMessage(queryPCIReply("td0"))
	got, err := ParseQueryPCI(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []PCIDevice{
		{Bus: 0, Slot: 0, Function: 0, VendorID: 0x8086, DeviceID: 0x29c0, Class: 0x0600},
		{Bus: 0, Slot: 1, Function: 0, VendorID: 0x1b36, DeviceID: 0x000c, Class: 0x0604, QdevID: "rp-td0"},
		{Bus: 1, Slot: 0, Function: 0, VendorID: 0x1234, DeviceID: 0x7e57, Class: 0x00ff, QdevID: "td0",
			Regions: []PCIRegion{
				{BAR: 0, Type: "memory", Address: 0xfe800000, Size: 4096},
				{BAR: 4, Type: "memory", Address: -1, Size: 1 << 20, Prefetch: true, Mem64: true},
			}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseQueryPCI (-want +got):\n%s", diff)
	}
	if got[2].Addr() != "01:00.0" {
		t.Errorf("Addr() = %q", got[2].Addr())
	}
	if _, err := ParseQueryPCI(json.RawMessage(`{"not":"a list"}`)); err == nil {
		t.Error("ParseQueryPCI accepted an object")
	}
}

// queryPCIReply is a trimmed query-pci reply of QEMU 11.1 with one
// vfio-user device behind a root port.
func queryPCIReply(id string) string {
	return `[{"bus":0,"devices":[
 {"bus":0,"slot":0,"function":0,"class_info":{"class":1536,"desc":"Host bridge"},"id":{"vendor":32902,"device":10688,"subsystem-vendor":6900,"subsystem":4352},"qdev_id":"","regions":[]},
 {"bus":0,"slot":1,"function":0,"class_info":{"class":1540,"desc":"PCI bridge"},"id":{"vendor":6966,"device":12},"qdev_id":"rp-` + id + `","regions":[],
  "pci_bridge":{"bus":{"number":1,"secondary":1,"subordinate":1,"io_range":{"base":0,"limit":0},"memory_range":{"base":0,"limit":0},"prefetchable_range":{"base":0,"limit":0}},
   "devices":[{"bus":1,"slot":0,"function":0,"class_info":{"class":255},"id":{"vendor":4660,"device":32343},"irq":10,"irq_pin":1,"qdev_id":"` + id + `",
    "regions":[{"bar":0,"type":"memory","address":4269801472,"size":4096,"prefetch":false,"mem_type_64":false},
               {"bar":4,"type":"memory","address":-1,"size":1048576,"prefetch":true,"mem_type_64":true}]}]}}]}]`
}
