package image

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/myriemu/myriemu/guestdrv/initramfs"
)

// Module is a kernel module file to load at boot, with its parameters.
type Module struct {
	// Path is the module file on the host (.ko or .ko.xz).
	Path string
	// Args are insmod parameters ("name=value ...").
	Args string
}

// Spec describes one guest image.
type Spec struct {
	Rootfs *Rootfs
	// Modules are in-tree module names; they and their dependencies are
	// loaded first, in dependency order.
	Modules []string
	// ModuleArgs holds insmod parameters per in-tree module name.
	ModuleArgs map[string]string
	// ExtraModules (out-of-tree, e.g. from guestdrv/modules) load next, in
	// order.
	ExtraModules []Module
	// Programs are host files copied to /bin/<base name> (static binaries).
	Programs []string
	// Firmware files go to /lib/firmware/<name>, where the kernel's loader
	// looks for them.
	Firmware map[string][]byte
	// Scenario is the shell script /init runs (with busybox sh) after the
	// modules are loaded; its exit status is reported in E2E-DONE.
	Scenario string
}

// Init is the /init every image runs. It mounts the pseudo file systems,
// prints E2E-BOOT, loads /etc/modules.order (a result line per module),
// runs /scenario, prints E2E-DONE with its exit status and powers off. A
// panic (or /init dying) ends QEMU through panic=-1 and -no-reboot.
const Init = `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "E2E-BOOT kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -f /etc/modules.order ]; then
	while read -r m args; do
		n=${m##*/}; n=${n%%.ko*}
		if out=$(insmod "/lib/modules/$m" $args 2>&1); then
			echo "E2E-RESULT name=insmod:$n status=pass detail=$args"
		else
			echo "E2E-RESULT name=insmod:$n status=fail detail=$out"
		fi
	done < /etc/modules.order
fi
cd /
sh /scenario
rc=$?
echo "E2E-DONE rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
`

// Build writes the gzipped initramfs of spec to out (atomically: a
// temporary file renamed into place).
func Build(spec Spec, out string) error {
	if spec.Rootfs == nil {
		return fmt.Errorf("image: no rootfs")
	}
	var raw bytes.Buffer
	w := initramfs.NewWriter(&raw)
	busybox, err := os.ReadFile(spec.Rootfs.Busybox())
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	steps := []func() error{
		func() error { return w.CharDev("dev/console", 0o600, 5, 1) },
		func() error { return w.Dir("proc", 0o755) },
		func() error { return w.Dir("sys", 0o755) },
		func() error { return w.Dir("tmp", 0o1777) },
		func() error { return w.File("bin/busybox", 0o755, busybox) },
		func() error { return w.Symlink("bin/sh", "busybox") },
		func() error { return w.File("init", 0o755, []byte(Init)) },
		func() error { return w.File("scenario", 0o755, []byte(spec.Scenario+"\n")) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}

	var order []string
	if len(spec.Modules) > 0 {
		files, err := spec.Rootfs.ModuleFiles(spec.Modules...)
		if err != nil {
			return err
		}
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(spec.Rootfs.modulesDir(), f))
			if err != nil {
				return fmt.Errorf("image: %w", err)
			}
			base := path.Base(f)
			if err := w.File("lib/modules/"+base, 0o644, data); err != nil {
				return err
			}
			order = append(order, strings.TrimSpace(base+" "+spec.ModuleArgs[moduleName(f)]))
		}
	}
	for _, m := range spec.ExtraModules {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		base := filepath.Base(m.Path)
		if err := w.File("lib/modules/"+base, 0o644, data); err != nil {
			return err
		}
		order = append(order, strings.TrimSpace(base+" "+m.Args))
	}
	if len(order) > 0 {
		if err := w.File("etc/modules.order", 0o644, []byte(strings.Join(order, "\n")+"\n")); err != nil {
			return err
		}
	}
	for _, p := range spec.Programs {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if err := w.File("bin/"+filepath.Base(p), 0o755, data); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(spec.Firmware))
	for n := range spec.Firmware {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := w.File("lib/firmware/"+n, 0o644, spec.Firmware[n]); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}

	tmp, err := os.CreateTemp(filepath.Dir(out), ".initramfs-*")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp.Name())
	// Level 1: the image is a few MB and built for every boot; speed wins.
	zw, err := gzip.NewWriterLevel(tmp, gzip.BestSpeed)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("image: %w", err)
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("image: compress: %w", err)
	}
	if err := zw.Close(); err != nil {
		tmp.Close()
		return fmt.Errorf("image: compress: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}
