package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// helpQEMU writes a script that answers -device help and -version as a
// QEMU with the given device models would.
func helpQEMU(t *testing.T, devices ...string) string {
	t.Helper()
	var help strings.Builder
	for _, d := range devices {
		help.WriteString(`name "` + d + `", bus PCI\n`)
	}
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	script := "#!/bin/sh\ncase \"$1\" in\n-version) echo 'QEMU emulator version 11.1.3'; echo 'Copyright';;\n" +
		"-device) printf '" + help.String() + "';;\n*) exit 1;;\nesac\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHasDevices(t *testing.T) {
	b := HostBinary(helpQEMU(t, "vfio-user-pci", "virtio-9p-pci"))
	if err := HasDevices(b, "vfio-user-pci", "virtio-9p-pci"); err != nil {
		t.Errorf("HasDevices: %v", err)
	}
	if got := b.Version(); got != "QEMU emulator version 11.1.3" {
		t.Errorf("Version = %q", got)
	}
	old := HostBinary(helpQEMU(t, "vfio-pci"))
	err := HasDevices(old, "vfio-user-pci", "virtio-9p-pci")
	if err == nil || !strings.Contains(err.Error(), "no vfio-user-pci, virtio-9p-pci device") {
		t.Errorf("HasDevices of an old QEMU: %v", err)
	}
	if _, err := FindQEMU(old.Path, t.TempDir()); err == nil || !strings.Contains(err.Error(), old.Path) {
		t.Errorf("FindQEMU with an override lacking vfio-user-pci: %v", err)
	}
	if got, err := FindQEMU(b.Path, t.TempDir()); err != nil || got.Path != b.Path {
		t.Errorf("FindQEMU(override) = %+v, %v", got, err)
	}
	if err := HasDevices(HostBinary(filepath.Join(t.TempDir(), "none"))); err == nil {
		t.Error("HasDevices of a missing binary: no error")
	}
}
