package image

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildC compiles a program that includes a header from an include
// directory with the provisioned rootfs's gcc, checks that it is static and
// that a second call hits the cache, and that a compile error is reported
// with the compiler's words. It needs the rootfs and root (chroot).
func TestBuildC(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles in the provisioned rootfs")
	}
	cache := os.Getenv("MYRIEMU_CACHE")
	if cache == "" {
		cache = "/var/cache/myriemu"
	}
	r, err := OpenRootfs(filepath.Join(cache, "rootfs"))
	if err != nil {
		t.Skipf("no provisioned rootfs: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("chroot and mount namespaces need root")
	}
	dir := t.TempDir()
	src, inc := filepath.Join(dir, "hello"), filepath.Join(dir, "include")
	for _, d := range []string{src, inc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(inc, "answer.h"), "#define ANSWER 42\n")
	write(filepath.Join(src, "main.c"), "#include <stdio.h>\n#include <answer.h>\nint main(void) { printf(\"%d\\n\", ANSWER); return 0; }\n")
	out := filepath.Join(dir, "cache")
	bin, err := BuildC(context.Background(), r, src, []string{inc}, out)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static", bin, p.Type)
		}
	}
	f.Close()
	again, err := BuildC(context.Background(), r, src, []string{inc}, out)
	if err != nil || again != bin {
		t.Errorf("second build = %s, %v; want the cached %s", again, err, bin)
	}
	write(filepath.Join(inc, "answer.h"), "#define ANSWER 43\n")
	if changed, err := BuildC(context.Background(), r, src, []string{inc}, out); err != nil || changed == bin {
		t.Errorf("after a header change: %s, %v; want a new build", changed, err)
	}
	write(filepath.Join(src, "main.c"), "int main(void) { return undeclared(); }\n")
	if _, err := BuildC(context.Background(), r, src, []string{inc}, out); err == nil || !strings.Contains(err.Error(), "undeclared") {
		t.Errorf("compile error: %v, want the compiler's message", err)
	}
}
