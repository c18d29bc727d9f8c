package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/myriemu/myriemu/guestdrv/image"
)

// compileError is a --build-module failure: run exits 2 before booting.
type compileError struct {
	dir string
	err error
}

func (e *compileError) Error() string {
	return fmt.Sprintf("building the module in %s failed: %v", e.dir, e.err)
}

// buildModule builds the out-of-tree module(s) in src with kbuild against
// the guest kernel's headers, chrooted into the rootfs (its gcc built the
// kernel), as the e2e harness does (image.InRootfs: a private mount
// namespace, so no mount outlives it). The source is copied to a scratch
// directory under work first, without build products, so the
// developer's tree is not written to. kbuild's output streams to out as
// it comes, with the scratch path (/mnt inside the chroot) written back
// as src, so compiler messages name the developer's files. It returns the
// .ko files in kbuild's modules.order.
func buildModule(ctx context.Context, r *image.Rootfs, src, work string, out io.Writer) ([]string, error) {
	if os.Geteuid() != 0 {
		return nil, &compileError{src, fmt.Errorf("kbuild runs chrooted into the rootfs: run as root")}
	}
	st, err := os.Stat(src)
	if err != nil {
		return nil, &compileError{src, err}
	}
	if !st.IsDir() {
		return nil, &compileError{src, fmt.Errorf("not a directory (--module takes a .ko file)")}
	}
	dir, err := os.MkdirTemp(work, "build-")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := copySource(src, dir); err != nil {
		return nil, &compileError{src, err}
	}
	// "Entering directory '/mnt'" too: editors resolve kbuild's relative
	// file names against it.
	w := &pathRewriter{out: out, r: strings.NewReplacer("/mnt/", src+"/", "'/mnt'", "'"+src+"'")}
	err = image.InRootfs(ctx, r, dir, w, "make", "-C", "/usr/lib/modules/"+r.KernelABI+"/build", "M=/mnt", "modules")
	w.Flush()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &compileError{src, err}
	}
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return nil, &compileError{src, fmt.Errorf("kbuild wrote no modules.order (is obj-m set in its Kbuild or Makefile?): %w", err)}
	}
	var kos []string
	for _, l := range strings.Fields(string(order)) {
		// modules.order lists foo.o (Linux >= 6.2) or foo.ko.
		l = strings.TrimSuffix(strings.TrimSuffix(l, ".o"), ".ko")
		ko := filepath.Join(dir, l+".ko")
		if _, err := os.Stat(ko); err != nil {
			return nil, &compileError{src, fmt.Errorf("kbuild listed %s but made no %s.ko", l, l)}
		}
		kos = append(kos, ko)
	}
	if len(kos) == 0 {
		return nil, &compileError{src, fmt.Errorf("kbuild built no module (empty modules.order)")}
	}
	return kos, nil
}

// copySource copies the regular files under src to dst, leaving out
// version control and kbuild's products (a host build's .cmd files would
// name host paths).
func copySource(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		name := d.Name()
		if d.IsDir() {
			if rel != "." && (name == ".git" || name == ".tmp_versions") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || isBuildProduct(name) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, info.Mode().Perm())
	})
}

func isBuildProduct(name string) bool {
	switch {
	case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".cmd"),
		name == "Module.symvers", name == "modules.order",
		strings.HasSuffix(name, ".o"), strings.HasSuffix(name, ".ko"),
		strings.HasSuffix(name, ".mod"), strings.HasSuffix(name, ".mod.c"):
		return true
	}
	return false
}

// pathRewriter writes whole lines to out, rewritten by r.
type pathRewriter struct {
	mu      sync.Mutex
	out     io.Writer
	r       *strings.Replacer
	partial []byte
}

func (w *pathRewriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		_, _ = io.WriteString(w.out, w.r.Replace(string(w.partial[:i+1])))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

// Flush writes a last line without a newline.
func (w *pathRewriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		_, _ = io.WriteString(w.out, w.r.Replace(string(w.partial))+"\n")
		w.partial = nil
	}
}
