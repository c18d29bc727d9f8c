package vm

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// FindQEMU returns the QEMU to run: override (a path, e.g. from an
// environment variable) if not "", else a host qemu-system-x86_64 that has
// vfio-user-pci, else the one of the provisioned rootfs at rootfs, run
// through its own loader (RootfsBinary). Its errors say which QEMU was
// tried and what it lacks.
func FindQEMU(override, rootfs string) (Binary, error) {
	if override != "" {
		b := HostBinary(override)
		if err := HasDevices(b, "vfio-user-pci"); err != nil {
			return Binary{}, fmt.Errorf("%s: %v", override, err)
		}
		return b, nil
	}
	if p, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		if b := HostBinary(p); HasDevices(b, "vfio-user-pci") == nil {
			return b, nil
		}
	}
	b := RootfsBinary(rootfs)
	if err := b.Exists(); err != nil {
		return Binary{}, fmt.Errorf("QEMU in the rootfs: %v", err)
	}
	if err := HasDevices(b, "vfio-user-pci"); err != nil {
		return Binary{}, fmt.Errorf("QEMU in the rootfs: %v", err)
	}
	return b, nil
}

// HasDevices checks that the QEMU runs and that "-device help" lists every
// named device model (vfio-user-pci needs QEMU >= 10.1; virtio-9p-pci needs
// a QEMU built with virtfs).
func HasDevices(b Binary, names ...string) error {
	out, err := b.output("-device", "help")
	if err != nil {
		return err
	}
	var missing []string
	for _, n := range names {
		if !strings.Contains(out, `"`+n+`"`) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s has no %s device (vfio-user-pci needs QEMU >= 10.1)", b.Desc, strings.Join(missing, ", "))
	}
	return nil
}

// Version returns the first line of "QEMU -version", or "unknown version".
func (b Binary) Version() string {
	out, err := b.output("-version")
	if err != nil {
		return "unknown version"
	}
	return firstLine(out)
}

// output runs the QEMU with args and returns what it printed.
func (b Binary) output(args ...string) (string, error) {
	cmd := exec.Command(b.Path, append(append([]string(nil), b.Args...), args...)...)
	cmd.Env = append(os.Environ(), b.Env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", b.Path, strings.Join(args, " "), err, firstLine(string(out)))
	}
	return string(out), nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
