// Package harness runs end-to-end scenarios: myriemu servers and QEMU guests
// booted from the provisioned sid rootfs, with their consoles parsed into
// results and every process stopped afterwards.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/myriemu/myriemu/guestdrv/image"
	"github.com/myriemu/myriemu/vm"
)

// Environment variables the harness reads.
const (
	// EnvCache is the provisioning cache (default DefaultCache).
	EnvCache = "MYRIEMU_CACHE"
	// EnvQEMU names a host qemu-system-x86_64 (>= 10.1 with vfio-user-pci)
	// to use instead of the rootfs's.
	EnvQEMU = "MYRIEMU_QEMU"
	// EnvRunTag is set in the environment of every process the harness
	// starts, so that leftovers can be found in /proc afterwards.
	EnvRunTag = "MYRIEMU_E2E_RUN"
	// EnvBreak is a regular expression: the guests of every test whose
	// name it matches print a failing result first, so the test fails
	// (for seeing what a failure looks like; never set in CI).
	EnvBreak = "MYRIEMU_E2E_BREAK"
)

// DefaultCache is where scripts/provision.sh keeps the rootfs.
const DefaultCache = "/var/cache/myriemu"

// ProvisionHint tells how to get what is missing.
const ProvisionHint = "run `make test` (it provisions first) or `sudo scripts/provision.sh`"

// Env is what every scenario shares: the repo, the rootfs, the QEMU to run,
// a scratch directory, and the binaries built once per process.
type Env struct {
	Repo   string
	Cache  string
	Rootfs *image.Rootfs
	QEMU   vm.Binary
	// QEMUVersion is the first line of "QEMU -version".
	QEMUVersion string
	// Work is a scratch directory (sockets, images), removed by Close. Kept
	// short: UNIX socket paths are limited to 107 bytes.
	Work string
	// Tag is the value of EnvRunTag for this Env's processes.
	Tag string

	mu       sync.Mutex
	myriemu  string            // built server binary
	programs map[string]string // package -> built guest binary
}

// NewEnv finds the repo, checks root and the provisioned rootfs, picks the
// QEMU binary and makes the scratch directory. Its errors say exactly what
// is missing and how to get it.
func NewEnv() (*Env, error) {
	repo, err := findRepo()
	if err != nil {
		return nil, err
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (guest DMA buffers need pagemap PFNs and module builds need chroot + mount namespaces): run as root")
	}
	if _, err := exec.LookPath("go"); err != nil {
		missing = append(missing, "go in PATH")
	}
	cache := os.Getenv(EnvCache)
	if cache == "" {
		cache = DefaultCache
	}
	rootfs, err := image.OpenRootfs(filepath.Join(cache, "rootfs"))
	if err != nil {
		missing = append(missing, fmt.Sprintf("the provisioned sid rootfs: %v", err))
	}
	var qemu vm.Binary
	if rootfs != nil {
		qemu, err = pickQEMU(rootfs.Dir)
		if err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("e2e harness: missing:\n  - %s\n%s", strings.Join(missing, "\n  - "), ProvisionHint)
	}
	work, err := os.MkdirTemp("", "myriemu-e2e-")
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	var tag [8]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	return &Env{
		Repo: repo, Cache: cache, Rootfs: rootfs, QEMU: qemu, QEMUVersion: qemu.Version(), Work: work,
		Tag: hex.EncodeToString(tag[:]), programs: map[string]string{},
	}, nil
}

// Close removes the scratch directory.
func (e *Env) Close() error { return os.RemoveAll(e.Work) }

func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/myriemu/myriemu\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: not inside the myriemu repository (no go.mod found)")
		}
		dir = parent
	}
}

// pickQEMU returns the QEMU to run: $MYRIEMU_QEMU if set, else a host
// qemu-system-x86_64 that has vfio-user-pci, else the rootfs's own.
func pickQEMU(rootfs string) (vm.Binary, error) {
	b, err := vm.FindQEMU(os.Getenv(EnvQEMU), rootfs)
	if err != nil && os.Getenv(EnvQEMU) != "" {
		return b, fmt.Errorf("%s=%v", EnvQEMU, err)
	}
	return b, err
}

// MyriemuBinary builds cmd/myriemu once per Env and returns its path.
func (e *Env) MyriemuBinary(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.myriemu != "" {
		return e.myriemu, nil
	}
	out := filepath.Join(e.Work, "bin", "myriemu")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/myriemu")
	cmd.Dir = e.Repo
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go build ./cmd/myriemu: %w\n%s", err, b)
	}
	e.myriemu = out
	return out, nil
}

// GuestPrograms builds static guest programs (packages relative to the
// repo, e.g. "./guestdrv/cmd/e2e-probe") once per Env and returns their
// paths in order.
func (e *Env) GuestPrograms(ctx context.Context, pkgs ...string) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var todo []string
	queued := map[string]bool{}
	for _, p := range pkgs {
		if _, ok := e.programs[p]; !ok && !queued[p] {
			todo = append(todo, p)
			queued[p] = true
		}
	}
	if len(todo) > 0 {
		paths, err := image.BuildGo(ctx, e.Repo, filepath.Join(e.Work, "guest-bin"), todo...)
		if err != nil {
			return nil, err
		}
		for i, p := range todo {
			e.programs[p] = paths[i]
		}
	}
	out := make([]string, len(pkgs))
	for i, p := range pkgs {
		out[i] = e.programs[p]
	}
	return out, nil
}

// GuestModule builds guestdrv/modules/<name> against the rootfs kernel
// (cached across runs in the provisioning cache).
func (e *Env) GuestModule(ctx context.Context, name string) (string, error) {
	return image.BuildModule(ctx, e.Rootfs, filepath.Join(e.Repo, "guestdrv", "modules", name),
		filepath.Join(e.Cache, "build"))
}

// CProgram builds the C program in dir (relative to the repo, e.g.
// "guestdrv/mxtest") as a static binary with the rootfs's gcc, with
// guestdrv/include (the device ABI and ioctl headers) on the include path;
// cached across runs in the provisioning cache like GuestModule.
func (e *Env) CProgram(ctx context.Context, dir string) (string, error) {
	return image.BuildC(ctx, e.Rootfs, filepath.Join(e.Repo, dir),
		[]string{filepath.Join(e.Repo, "guestdrv", "include")}, filepath.Join(e.Cache, "build"))
}
