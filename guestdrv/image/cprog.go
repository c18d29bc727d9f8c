package image

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// CFlags are the compiler flags of every C guest program: static (the
// initramfs has no libc), threads, and warnings that are errors where they
// hide real bugs in test programs (an undeclared function, a bad format).
var CFlags = []string{
	"-static", "-O2", "-g0", "-pthread", "-std=gnu11",
	"-Wall", "-Wextra", "-Wno-unused-parameter",
	"-Werror=implicit-function-declaration", "-Werror=format", "-Werror=incompatible-pointer-types",
}

// BuildC compiles the C program in srcDir (every *.c file at its top
// level, one program) with the rootfs's gcc and glibc, chrooted as
// BuildModule does, into a static binary named after the directory, and
// returns its path. includeDirs are put on the include path as one
// directory (their top-level files, later ones winning), so a program
// includes ABI headers such as guestdrv/include/myrimx_ioctl.h by base
// name. Results are cached in cacheDir/programs under a hash of the
// rootfs, the flags and every file of srcDir and includeDirs.
func BuildC(ctx context.Context, r *Rootfs, srcDir string, includeDirs []string, cacheDir string) (string, error) {
	name := filepath.Base(srcDir)
	key := "rootfs=" + r.KernelABI + "," + r.Stamp["key"] + " flags=" + strings.Join(CFlags, " ")
	for _, d := range append([]string{srcDir}, includeDirs...) {
		k, err := hashTree(d, key)
		if err != nil {
			return "", err
		}
		key = k
	}
	return buildCached(cacheDir, "programs", name+"-"+key, name, func(work string) (string, error) {
		if err := os.CopyFS(filepath.Join(work, "src"), os.DirFS(srcDir)); err != nil {
			return "", fmt.Errorf("image: copy %s: %w", srcDir, err)
		}
		if err := os.MkdirAll(filepath.Join(work, "include"), 0o755); err != nil {
			return "", fmt.Errorf("image: %w", err)
		}
		for _, d := range includeDirs {
			if err := copyTopFiles(d, filepath.Join(work, "include")); err != nil {
				return "", err
			}
		}
		sources, err := filepath.Glob(filepath.Join(srcDir, "*.c"))
		if err != nil || len(sources) == 0 {
			return "", fmt.Errorf("image: build %s: no .c files in %s", name, srcDir)
		}
		argv := append([]string{"gcc"}, CFlags...)
		argv = append(argv, "-Iinclude", "-Isrc", "-o", name)
		for _, s := range sources {
			argv = append(argv, "src/"+filepath.Base(s))
		}
		var out bytes.Buffer
		if err := InRootfs(ctx, r, work, &out, argv...); err != nil {
			return "", fmt.Errorf("image: build program %s: %w\n%s", name, err, out.String())
		}
		return out.String(), nil
	})
}

// copyTopFiles copies the regular files at the top of dir into to.
func copyTopFiles(dir, to string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			return fmt.Errorf("image: %w", err)
		}
	}
	return nil
}
