package image

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// Vmlinux returns the guest kernel as an uncompressed ELF (vmlinux),
// extracted from the rootfs's bzImage once per kernel ABI into cacheDir.
// QEMU boots such an ELF through its PVH entry point (the kernel has
// CONFIG_PVH), which skips the bzImage's own decompressor: under TCG,
// decompressing the 60 MB kernel is seconds of every boot (about 12 s of
// a 59 s boot on a loaded 2-core machine, measured 2026-12-02). The
// payload is zstd (Debian's kernels) or gzip; zstd needs the host's zstd
// program. An error means: boot Kernel() instead.
func (r *Rootfs) Vmlinux(cacheDir string) (string, error) {
	out := filepath.Join(cacheDir, "vmlinux-"+r.KernelABI)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	bz, err := os.ReadFile(r.Kernel())
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	payload, err := bzImagePayload(bz)
	if err != nil {
		return "", err
	}
	var elf []byte
	switch {
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zstd, err := exec.LookPath("zstd")
		if err != nil {
			return "", fmt.Errorf("image: the kernel is zstd-compressed and the host has no zstd program")
		}
		// The kernel's build appends the uncompressed size (4 bytes)
		// after the frame; zstd refuses trailing bytes.
		cmd := exec.Command(zstd, "-d", "-c", "-q", "--memory=2048MB")
		cmd.Stdin = bytes.NewReader(payload[:len(payload)-4])
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if elf, err = cmd.Output(); err != nil {
			return "", fmt.Errorf("image: zstd -d of the kernel: %w: %s", err, stderr.String())
		}
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return "", fmt.Errorf("image: kernel payload: %w", err)
		}
		if elf, err = io.ReadAll(zr); err != nil {
			return "", fmt.Errorf("image: kernel payload: %w", err)
		}
	default:
		return "", fmt.Errorf("image: kernel payload compressed with a format not handled here (magic % x)", payload[:min(4, len(payload))])
	}
	if !bytes.HasPrefix(elf, []byte("\x7fELF")) {
		return "", fmt.Errorf("image: the kernel payload is not an ELF file")
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".vmlinux-*")
	if err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("image: %w", err)
	}
	if _, err := tmp.Write(elf); err != nil {
		tmp.Close()
		return "", fmt.Errorf("image: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	// Whole or not at all; a concurrent extraction writes the same bytes.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	return out, nil
}

// bzImagePayload returns the compressed kernel inside a bzImage (x86 boot
// protocol >= 2.08: payload_offset and payload_length in the setup
// header, the offset counted from the end of the real-mode setup).
func bzImagePayload(bz []byte) ([]byte, error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, fmt.Errorf("image: the kernel is not a bzImage")
	}
	if binary.LittleEndian.Uint16(bz[0x206:]) < 0x0208 {
		return nil, fmt.Errorf("image: bzImage boot protocol older than 2.08")
	}
	setup := int(bz[0x1f1])
	if setup == 0 {
		setup = 4
	}
	start := (setup+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if start < 0 || n < 8 || start+n > len(bz) {
		return nil, fmt.Errorf("image: bzImage payload %d+%d outside the %d-byte file", start, n, len(bz))
	}
	return bz[start : start+n], nil
}
