package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// BuildGo builds Go main packages (import paths or ./relative to dir) as
// static linux/amd64 binaries into outDir, one file per package named after
// its last path element, and returns their paths. CGO is off so that they
// run in the busybox initramfs, which has no libc.
func BuildGo(ctx context.Context, dir, outDir string, pkgs ...string) ([]string, error) {
	if len(pkgs) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	// go build -o dir/ names each binary after the last element of its
	// import path; resolve those first.
	list := exec.CommandContext(ctx, "go", append([]string{"list", "-f", "{{.Name}} {{.ImportPath}}"}, pkgs...)...)
	list.Dir, list.Env = dir, env
	listed, err := list.Output()
	if err != nil {
		return nil, fmt.Errorf("image: go list %s: %w", strings.Join(pkgs, " "), err)
	}
	var paths []string
	lines := strings.Split(strings.TrimSpace(string(listed)), "\n")
	if len(lines) != len(pkgs) {
		// go list folds duplicates; the caller's paths would not line up.
		return nil, fmt.Errorf("image: go list %s: %d packages for %d arguments (duplicates?)", strings.Join(pkgs, " "), len(lines), len(pkgs))
	}
	for _, line := range lines {
		name, importPath, _ := strings.Cut(line, " ")
		if name != "main" {
			return nil, fmt.Errorf("image: %s is not a main package", importPath)
		}
		paths = append(paths, filepath.Join(outDir, path.Base(importPath)))
	}
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", outDir + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, env
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("image: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return paths, nil
}

// BuildModule builds the out-of-tree kernel module in srcDir (a directory
// with a Kbuild or Makefile for "make M=") against the rootfs's headers,
// with the rootfs's own toolchain (the kernel was built with sid's gcc), and
// returns the path of the .ko named after the directory.
//
// kbuild runs chrooted into the rootfs, in a private mount namespace: the
// source is bind-mounted at /mnt and proc is mounted there, and both mounts
// vanish with the process, whatever happens to it. Results are cached in
// cacheDir under a hash of the kernel ABI and every source file.
func BuildModule(ctx context.Context, r *Rootfs, srcDir, cacheDir string) (string, error) {
	name := filepath.Base(srcDir)
	key, err := hashTree(srcDir, r.KernelABI)
	if err != nil {
		return "", err
	}
	return buildCached(cacheDir, "modules", name+"-"+key, name+".ko", func(work string) (string, error) {
		if err := os.CopyFS(work, os.DirFS(srcDir)); err != nil {
			return "", fmt.Errorf("image: copy module source: %w", err)
		}
		var out bytes.Buffer
		if err := InRootfs(ctx, r, work, &out, "make", "-C", "/usr/lib/modules/"+r.KernelABI+"/build", "M=/mnt", "modules"); err != nil {
			return "", fmt.Errorf("image: build module %s: %w\n%s", name, err, out.String())
		}
		return out.String(), nil
	})
}

// buildCached returns cacheDir/kind/entry/file, building it first if the
// cache has no such entry: build gets an empty work directory beside the
// cache and must leave file in it (it returns its tool's output, for the
// error when it did not). The entry is renamed into place whole or not at
// all, so concurrent builders of one key and a build killed midway never
// leave a half entry.
func buildCached(cacheDir, kind, entry, file string, build func(work string) (string, error)) (string, error) {
	final := filepath.Join(cacheDir, kind, entry)
	product := filepath.Join(final, file)
	if _, err := os.Stat(product); err == nil {
		return product, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Dir(final), ".build-"+entry+"-")
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(work)
	out, err := build(work)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(work, file)); err != nil {
		return "", fmt.Errorf("image: build %s: no %s produced\n%s", entry, file, out)
	}
	keep, err := os.MkdirTemp(filepath.Dir(final), ".keep-"+entry+"-")
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	if err := os.Rename(filepath.Join(work, file), filepath.Join(keep, file)); err != nil {
		os.RemoveAll(keep)
		return "", fmt.Errorf("image: %w", err)
	}
	if err := os.Rename(keep, final); err != nil {
		os.RemoveAll(keep)
		if _, statErr := os.Stat(product); statErr == nil {
			return product, nil // a concurrent build won the race
		}
		return "", fmt.Errorf("image: %w", err)
	}
	return product, nil
}

// inRootfsScript runs in a new private mount namespace (Go's exec makes
// the whole tree private after unshare): mount proc and the work directory
// into the rootfs, then chroot and exec the command.
const inRootfsScript = `set -e
R=$1; W=$2; shift 2
mount -t proc proc "$R/proc"
mount --bind "$W" "$R/mnt"
cd "$R"
exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 sh -c 'cd /mnt && exec "$@"' sh "$@"`

// InRootfs runs argv chrooted into the rootfs with workDir mounted at /mnt,
// inside a private mount namespace so that no mount outlives it. Output
// goes to out.
func InRootfs(ctx context.Context, r *Rootfs, workDir string, out io.Writer, argv ...string) error {
	args := append([]string{"-c", inRootfsScript, "in-rootfs", r.Dir, workDir}, argv...)
	cmd := exec.CommandContext(ctx, "/bin/sh", args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: syscall.CLONE_NEWNS,
		Setpgid:      true,
		Pdeathsig:    syscall.SIGKILL,
	}
	// Kill the whole group (make and its compilers) on cancellation.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("in rootfs %s: %w", strings.Join(argv, " "), err)
	}
	return nil
}

// hashTree hashes the names and contents of the regular files under dir,
// plus salt, into a short hex key.
func hashTree(dir, salt string) (string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "salt=%s\n", salt)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("image: %w", err)
		}
		rel, _ := filepath.Rel(dir, f)
		fmt.Fprintf(h, "%s %d\n", rel, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
