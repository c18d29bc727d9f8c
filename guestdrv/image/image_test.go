package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testABI = "7.2.13+deb14-amd64"

// fakeRootfs lays out the parts of a provisioned rootfs that image reads.
func fakeRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mods := filepath.Join(dir, "usr/lib/modules", testABI)
	files := map[string]string{
		StampFile:         "key=abc\nkernel_abi=" + testABI + "\nqemu=1:11.1.3+ds-1\n",
		"usr/bin/busybox": "BUSYBOX",
		"usr/lib/modules/" + testABI + "/vmlinuz": "KERNEL",
		"usr/lib/modules/" + testABI + "/modules.dep": "kernel/drivers/dca/dca.ko.xz:\n" +
			"kernel/drivers/net/ethernet/myricom/myri10ge/myri10ge.ko.xz: kernel/drivers/dca/dca.ko.xz\n" +
			"kernel/drivers/net/mdio.ko.xz:\n" +
			"kernel/net/xfrm/xfrm_algo.ko.xz:\n" +
			"kernel/drivers/net/ethernet/intel/ixgbe/ixgbe.ko.xz: kernel/net/xfrm/xfrm_algo.ko.xz kernel/drivers/net/mdio.ko.xz kernel/drivers/dca/dca.ko.xz\n" +
			"kernel/drivers/i2c/i2c-algo-bit.ko.xz: kernel/drivers/loop/a.ko.xz\n" +
			"kernel/drivers/loop/a.ko.xz: kernel/drivers/i2c/i2c-algo-bit.ko.xz\n",
		"usr/lib/modules/" + testABI + "/kernel/drivers/dca/dca.ko.xz":                                "DCA",
		"usr/lib/modules/" + testABI + "/kernel/drivers/net/ethernet/myricom/myri10ge/myri10ge.ko.xz": "MYRI",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "usr/src/linux-headers-"+testABI), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../src/linux-headers-"+testABI, filepath.Join(mods, "build")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenRootfs(t *testing.T) {
	dir := fakeRootfs(t)
	r, err := OpenRootfs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.KernelABI != testABI || r.Stamp["qemu"] != "1:11.1.3+ds-1" {
		t.Errorf("OpenRootfs = %+v", r)
	}
	if _, err := OpenRootfs(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not provisioned") {
		t.Errorf("empty dir: %v", err)
	}
	if err := os.Remove(r.Kernel()); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRootfs(dir); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("no kernel: %v", err)
	}
}

func TestModuleFiles(t *testing.T) {
	r, err := OpenRootfs(fakeRootfs(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		names []string
		want  []string
		err   string
	}{
		{[]string{"myri10ge"}, []string{
			"kernel/drivers/dca/dca.ko.xz",
			"kernel/drivers/net/ethernet/myricom/myri10ge/myri10ge.ko.xz",
		}, ""},
		{[]string{"ixgbe", "myri10ge"}, []string{
			"kernel/drivers/dca/dca.ko.xz",
			"kernel/drivers/net/mdio.ko.xz",
			"kernel/net/xfrm/xfrm_algo.ko.xz",
			"kernel/drivers/net/ethernet/intel/ixgbe/ixgbe.ko.xz",
			"kernel/drivers/net/ethernet/myricom/myri10ge/myri10ge.ko.xz",
		}, ""},
		{[]string{"i2c_algo_bit"}, nil, "loop"},
		{[]string{"i2c-algo-bit"}, nil, "loop"},
		{[]string{"nosuch"}, nil, `no module "nosuch"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.names, ","), func(t *testing.T) {
			got, err := r.ModuleFiles(tt.names...)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ModuleFiles (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	r, err := OpenRootfs(fakeRootfs(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prog := filepath.Join(dir, "e2e-probe")
	ko := filepath.Join(dir, "e2e_hello.ko")
	for p, data := range map[string]string{prog: "PROGRAM", ko: "HELLO"} {
		if err := os.WriteFile(p, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "initrd.gz")
	err = Build(Spec{
		Rootfs:       r,
		Modules:      []string{"myri10ge"},
		ModuleArgs:   map[string]string{"myri10ge": "myri10ge_fw_name=x.dat"},
		ExtraModules: []Module{{Path: ko, Args: "answer=42"}},
		Programs:     []string{prog},
		Firmware:     map[string][]byte{"x.dat": []byte("FW")},
		Scenario:     "e2e-probe -v",
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// Names and contents in archive order (each name is followed by its data).
	want := []string{
		"dev/console", "bin/busybox\x00", "BUSYBOX", "bin/sh\x00", "init\x00", "E2E-DONE",
		"scenario\x00", "e2e-probe -v\n",
		"lib/modules/dca.ko.xz\x00", "DCA", "lib/modules/myri10ge.ko.xz\x00", "MYRI",
		"lib/modules/e2e_hello.ko\x00", "HELLO",
		"etc/modules.order\x00", "dca.ko.xz\nmyri10ge.ko.xz myri10ge_fw_name=x.dat\ne2e_hello.ko answer=42\n",
		"bin/e2e-probe\x00", "PROGRAM", "lib/firmware/x.dat\x00", "FW", "TRAILER!!!",
	}
	pos := 0
	for _, w := range want {
		i := bytes.Index(raw[pos:], []byte(w))
		if i < 0 {
			t.Fatalf("%q not found after offset %d", w, pos)
		}
		pos += i + len(w)
	}
}

// The generated /init must at least be valid shell.
func TestInitSyntax(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh on the host: %v", err)
	}
	cmd := exec.Command(sh, "-n")
	cmd.Stdin = strings.NewReader(Init)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh -n /init: %v\n%s", err, out)
	}
}

func TestHashTree(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.c"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	k1, err := hashTree(dir, "abi1")
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := hashTree(dir, "abi2")
	if err := os.WriteFile(filepath.Join(dir, "a.c"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	k3, _ := hashTree(dir, "abi1")
	if k1 == k2 || k1 == k3 || len(k1) != 16 {
		t.Errorf("keys %s %s %s: salt and content must both change the key", k1, k2, k3)
	}
}

// BuildGo builds a static program that runs without libc.
func TestBuildGo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"go.mod":  "module example.com/hello\n\ngo 1.26\n",
		"main.go": "package main\n\nfunc main() { println(\"hi\") }\n",
	}
	for n, d := range files {
		if err := os.WriteFile(filepath.Join(src, n), []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	paths, err := BuildGo(context.Background(), src, filepath.Join(dir, "out"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 || filepath.Base(paths[0]) != "hello" {
		t.Fatalf("paths = %q", paths)
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("ld-linux")) {
		t.Error("binary names a dynamic loader: not static")
	}
}

func TestBzImagePayload(t *testing.T) {
	bz := make([]byte, 5*512+64)
	bz[0x1f1] = 4 // setup sectors: the payload area starts at 5*512
	copy(bz[0x202:], "HdrS")
	bz[0x206], bz[0x207] = 0x0f, 0x02 // protocol 2.15
	bz[0x248] = 16                    // payload_offset
	bz[0x24c] = 32                    // payload_length
	copy(bz[5*512+16:], "\x1f\x8bPAYLOAD")
	p, err := bzImagePayload(bz)
	if err != nil || len(p) != 32 || !bytes.HasPrefix(p, []byte("\x1f\x8bPAYLOAD")) {
		t.Fatalf("payload %q, %v", p, err)
	}
	bz[0x24c] = 200 // past the end
	if _, err := bzImagePayload(bz); err == nil {
		t.Error("a payload past the end of the file: no error")
	}
	if _, err := bzImagePayload([]byte("short")); err == nil {
		t.Error("not a bzImage: no error")
	}
}
