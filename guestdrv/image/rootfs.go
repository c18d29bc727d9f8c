// Package image builds guest images for the end-to-end harness: a gzipped
// newc initramfs with busybox, a generated /init, static Go programs and
// kernel modules, to boot with the kernel of the provisioned sid rootfs.
package image

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// StampFile is the provisioning stamp inside a rootfs (scripts/provision.sh).
const StampFile = ".myriemu-stamp"

// Rootfs is a rootfs made by scripts/provision.sh: the source of the guest
// kernel, its modules and headers, busybox and (usually) QEMU.
type Rootfs struct {
	Dir       string
	KernelABI string            // e.g. 7.2.13+deb14-amd64
	Stamp     map[string]string // key=value lines of the stamp
}

// OpenRootfs checks that dir is a complete provisioned rootfs. Its errors
// name what is missing.
func OpenRootfs(dir string) (*Rootfs, error) {
	stamp, err := os.ReadFile(filepath.Join(dir, StampFile))
	if err != nil {
		return nil, fmt.Errorf("image: rootfs %s is not provisioned (no %s): %w", dir, StampFile, err)
	}
	r := &Rootfs{Dir: dir, Stamp: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(string(stamp)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			r.Stamp[k] = v
		}
	}
	r.KernelABI = r.Stamp["kernel_abi"]
	if r.KernelABI == "" || strings.ContainsAny(r.KernelABI, "/ ") {
		return nil, fmt.Errorf("image: rootfs %s: stamp has no usable kernel_abi", dir)
	}
	for _, f := range []string{r.Kernel(), r.Busybox(), r.modulesDir() + "/modules.dep", r.HeadersDir()} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("image: rootfs %s is incomplete: %w", dir, err)
		}
	}
	return r, nil
}

// Kernel is the path of the guest kernel image.
func (r *Rootfs) Kernel() string { return r.modulesDir() + "/vmlinuz" }

// Busybox is the path of the static busybox binary.
func (r *Rootfs) Busybox() string { return filepath.Join(r.Dir, "usr/bin/busybox") }

// HeadersDir is the kbuild directory for out-of-tree modules, as a host path.
func (r *Rootfs) HeadersDir() string { return r.modulesDir() + "/build" }

func (r *Rootfs) modulesDir() string {
	return filepath.Join(r.Dir, "usr/lib/modules", r.KernelABI)
}

// ModuleFiles resolves in-tree module names (as modprobe spells them; '-'
// and '_' are the same) to their files relative to the modules directory,
// each module's dependencies before it, every file once: the order in which
// busybox insmod, which resolves nothing itself, must load them.
func (r *Rootfs) ModuleFiles(names ...string) ([]string, error) {
	f, err := os.Open(r.modulesDir() + "/modules.dep")
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer f.Close()
	deps, err := parseModulesDep(f)
	if err != nil {
		return nil, err
	}
	return resolveModules(deps, names)
}

// moduleName turns "kernel/drivers/dca/dca.ko.xz" into "dca".
func moduleName(file string) string {
	n := path.Base(file)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

type moduleDeps struct {
	file map[string]string   // name -> file
	deps map[string][]string // file -> dependency files
}

func parseModulesDep(f *os.File) (*moduleDeps, error) {
	md := &moduleDeps{file: map[string]string{}, deps: map[string][]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		md.file[moduleName(mod)] = mod
		md.deps[mod] = strings.Fields(deps)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("image: modules.dep: %w", err)
	}
	return md, nil
}

func resolveModules(md *moduleDeps, names []string) ([]string, error) {
	var out []string
	done := map[string]bool{}
	onPath := map[string]bool{}
	var visit func(file string) error
	visit = func(file string) error {
		if done[file] {
			return nil
		}
		if onPath[file] {
			return fmt.Errorf("image: modules.dep: dependency loop at %s", file)
		}
		onPath[file] = true
		// modules.dep lists the deepest dependencies last; load them first.
		deps := md.deps[file]
		for i := len(deps) - 1; i >= 0; i-- {
			if err := visit(deps[i]); err != nil {
				return err
			}
		}
		onPath[file] = false
		done[file] = true
		out = append(out, file)
		return nil
	}
	for _, n := range names {
		file, ok := md.file[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("image: no module %q in modules.dep", n)
		}
		if err := visit(file); err != nil {
			return nil, err
		}
	}
	return out, nil
}
