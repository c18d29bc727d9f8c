package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Binary says how to execute QEMU: a plain qemu-system-x86_64 on the host,
// or sid's QEMU from the harness rootfs run through sid's own dynamic loader
// (no chroot and no mounts; see shared/reference/e2e-harness.md 1.3).
type Binary struct {
	// Path is the program to execute.
	Path string
	// Args go before QEMU's own arguments (for the loader: --library-path
	// and the QEMU executable, followed by the firmware -L directories).
	Args []string
	// Env holds extra KEY=VALUE pairs added to the environment.
	Env []string
	// Desc says in words which QEMU this is, for reports.
	Desc string
}

// HostBinary runs a QEMU installed on the host at path.
func HostBinary(path string) Binary {
	return Binary{Path: path, Desc: "host QEMU " + path}
}

// RootfsBinary runs the qemu-system-x86_64 of a Debian rootfs at root
// through the rootfs's own ld.so, so that its libraries (and libc) come from
// the rootfs, not the host. The firmware search paths must be given with -L
// because QEMU derives its data directory from /proc/self/exe, which is the
// loader here; QEMU_MODULE_DIR points at its loadable modules.
func RootfsBinary(root string) Binary {
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	return Binary{
		Path: filepath.Join(lib, "ld-linux-x86-64.so.2"),
		Args: []string{
			"--library-path", lib + ":" + filepath.Join(lib, "systemd"),
			filepath.Join(root, "usr/bin/qemu-system-x86_64"),
			"-L", filepath.Join(root, "usr/share/qemu"),
			"-L", filepath.Join(root, "usr/share/seabios"),
			"-L", filepath.Join(root, "usr/lib/ipxe/qemu"),
		},
		Env:  []string{"QEMU_MODULE_DIR=" + filepath.Join(lib, "qemu")},
		Desc: "QEMU of rootfs " + root + " (through its ld.so)",
	}
}

// Device is one vfio-user-pci device, placed behind its own pcie-root-port
// so that it is a normal (hot-pluggable) endpoint.
type Device struct {
	// ID is the qdev id ("td0"); query-pci reports it as qdev_id. The root
	// port gets the id "rp-" + ID.
	ID string
	// Socket is the path of the server's UNIX socket; the server must
	// already listen when QEMU starts (it connects once, synchronously).
	Socket string
	// Props are extra vfio-user-pci properties, e.g. "x-msg-timeout".
	Props map[string]any
}

// Config describes one guest. Kernel, Initrd and QMPSocket are required.
type Config struct {
	Binary Binary
	// Kernel and Initrd are the guest kernel image and initramfs.
	Kernel string
	Initrd string
	// Append is added to the kernel command line after the defaults
	// (DefaultAppend).
	Append string
	// MemoryMiB is the guest RAM size; 0 means 512. The RAM is a
	// memory-backend-memfd with share=on, so servers can mmap it for DMA.
	MemoryMiB int
	// CPUs is the number of vCPUs; 0 means 1.
	CPUs int
	// NUMANodes splits the RAM evenly into that many NUMA nodes (QEMU
	// -numa), each its own shared memfd backend; every vCPU sits on node
	// 0, the other nodes hold memory only. 0 or 1 keeps the one-node
	// machine. A second node lets a guest move pages between nodes
	// (move_pages(2), mbind) under a device's registrations.
	NUMANodes int
	// Devices are the vfio-user devices, in order.
	Devices []Device
	// QMPSocket is the path of the QMP UNIX socket QEMU creates.
	QMPSocket string
	// ExtraArgs are appended to the generated arguments verbatim.
	ExtraArgs []string
}

// DefaultAppend is the start of every guest kernel command line: console on
// the first serial port, reboot (which -no-reboot turns into QEMU's exit) at
// once on a panic instead of hanging, and the TSC trusted: under TCG on a
// loaded host the clocksource watchdog sees the emulated TSC skew against
// the HPET and logs a warning ("Marking clocksource tsc unstable due to
// frequency skew") that says nothing about the devices under test but
// would fail every kernel-log check. no_timer_check skips the kernel's
// IO-APIC timer check, which a loaded host's TCG fails: "Kernel panic -
// not syncing: IO-APIC + timer doesn't work!" 0.06 s into a boot (seen in
// TestLifecycleQEMU on 2026-12-02; KVM guests skip the check the same way,
// and myriemu run passes it too, docs/run.md).
const DefaultAppend = "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check"

// NUMA limits: QEMU allows many more nodes, but a test machine needs a
// few, and a node below 64 MiB leaves Linux too little to boot with.
const (
	maxNUMANodes = 8
	minNodeMiB   = 64
)

var idRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,30}$`)

func (c Config) memoryMiB() int {
	if c.MemoryMiB == 0 {
		return 512
	}
	return c.MemoryMiB
}

func (c Config) cpus() int {
	if c.CPUs == 0 {
		return 1
	}
	return c.CPUs
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case c.Binary.Path == "":
		return fmt.Errorf("vm: config: no QEMU binary")
	case c.Kernel == "":
		return fmt.Errorf("vm: config: no kernel")
	case c.Initrd == "":
		return fmt.Errorf("vm: config: no initrd")
	case c.QMPSocket == "":
		return fmt.Errorf("vm: config: no QMP socket path")
	case c.MemoryMiB < 0 || c.CPUs < 0 || c.NUMANodes < 0:
		return fmt.Errorf("vm: config: negative memory, CPU or NUMA node count")
	case c.NUMANodes > maxNUMANodes:
		return fmt.Errorf("vm: config: %d NUMA nodes, at most %d", c.NUMANodes, maxNUMANodes)
	case c.NUMANodes > 1 && (c.memoryMiB()%c.NUMANodes != 0 || c.memoryMiB()/c.NUMANodes < minNodeMiB):
		return fmt.Errorf("vm: config: %d MiB does not split into %d NUMA nodes of the same size of at least %d MiB",
			c.memoryMiB(), c.NUMANodes, minNodeMiB)
	case strings.ContainsAny(c.Kernel+c.Initrd, ","):
		// QEMU's option parser would split these.
		return fmt.Errorf("vm: config: kernel/initrd path contains a comma")
	case strings.ContainsAny(c.QMPSocket, ","):
		return fmt.Errorf("vm: config: QMP socket path %q contains a comma", c.QMPSocket)
	}
	seen := map[string]bool{}
	for i, d := range c.Devices {
		if !idRE.MatchString(d.ID) {
			return fmt.Errorf("vm: config: device %d: bad id %q", i, d.ID)
		}
		if seen[d.ID] {
			return fmt.Errorf("vm: config: device id %q used twice", d.ID)
		}
		seen[d.ID] = true
		if d.Socket == "" {
			return fmt.Errorf("vm: config: device %s: no socket path", d.ID)
		}
		for k := range d.Props {
			switch k {
			case "driver", "id", "bus", "socket":
				return fmt.Errorf("vm: config: device %s: property %q is set by vm", d.ID, k)
			}
		}
	}
	return nil
}

// Args returns QEMU's arguments for c (without the Binary's own prefix).
//
// The machine is q35 under TCG with no default devices and no display; the
// serial port is QEMU's stdout; -no-reboot turns the guest's reboot (and so
// a panic, with panic=-1) into QEMU's exit. Guest RAM is a shared memfd.
// Each vfio-user device uses the JSON -device form, the only one QEMU 11.1
// accepts for the nested socket address (vfio-user-notes.md 6.2).
func (c Config) Args() ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	mem := c.memoryMiB()
	appendLine := DefaultAppend
	if c.Append != "" {
		appendLine += " " + c.Append
	}
	// One memfd backend is the machine's RAM, or one per NUMA node.
	machine := "q35,memory-backend=ram0"
	memory := []string{"-object", fmt.Sprintf("memory-backend-memfd,id=ram0,size=%dM,share=on", mem)}
	if c.NUMANodes > 1 {
		machine = "q35"
		memory = numaArgs(mem, c.NUMANodes, c.cpus())
	}
	args := []string{
		"-machine", machine,
		"-accel", "tcg",
		"-nodefaults",
		"-display", "none",
		"-no-user-config",
		"-no-reboot",
		"-smp", strconv.Itoa(c.cpus()),
		"-m", fmt.Sprintf("%dM", mem),
	}
	args = append(args, memory...)
	args = append(args,
		"-serial", "stdio",
		"-qmp", "unix:"+c.QMPSocket+",server=on,wait=off",
		"-kernel", c.Kernel,
		"-initrd", c.Initrd,
		"-append", appendLine,
	)
	for i, d := range c.Devices {
		port := "rp-" + d.ID
		args = append(args, "-device",
			fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d", port, i+1))
		dev := map[string]any{
			"driver": "vfio-user-pci",
			"id":     d.ID,
			"bus":    port,
			"socket": map[string]string{"type": "unix", "path": d.Socket},
		}
		for k, v := range d.Props {
			dev[k] = v
		}
		js, err := json.Marshal(dev) // map keys are sorted: deterministic
		if err != nil {
			return nil, fmt.Errorf("vm: config: device %s: %w", d.ID, err)
		}
		args = append(args, "-device", string(js))
	}
	return append(args, c.ExtraArgs...), nil
}

// numaArgs returns the memory arguments of a machine of n NUMA nodes:
// backends ram0..ram<n-1> of mem/n MiB each, one per -numa node, and the
// cpus vCPUs on node 0. QEMU lays the nodes out in order (node 0 at the
// lowest guest-physical addresses); the server sees one DMA mapping, with
// its own memfd, per node.
func numaArgs(mem, n, cpus int) []string {
	var out []string
	for i := range n {
		out = append(out, "-object", fmt.Sprintf("memory-backend-memfd,id=ram%d,size=%dM,share=on", i, mem/n))
	}
	for i := range n {
		node := fmt.Sprintf("node,nodeid=%d,memdev=ram%d", i, i)
		if i == 0 {
			node = fmt.Sprintf("node,nodeid=0,cpus=0-%d,memdev=ram0", cpus-1)
		}
		out = append(out, "-numa", node)
	}
	return out
}

// Argv returns the whole command line: the Binary's program and prefix
// followed by Args.
func (c Config) Argv() ([]string, error) {
	args, err := c.Args()
	if err != nil {
		return nil, err
	}
	argv := append([]string{c.Binary.Path}, c.Binary.Args...)
	return append(argv, args...), nil
}

// ShellQuote renders argv as one line a shell would split back into argv,
// with the Binary's environment in front, for reports and manual reruns.
func ShellQuote(env, argv []string) string {
	var b strings.Builder
	for _, e := range env {
		b.WriteString(quote(e))
		b.WriteByte(' ')
	}
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(a))
	}
	return b.String()
}

var plainRE = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

func quote(s string) string {
	if plainRE.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Exists reports whether the Binary's program and, for a loader, the QEMU
// executable it runs, are present.
func (b Binary) Exists() error {
	if _, err := os.Stat(b.Path); err != nil {
		return fmt.Errorf("vm: QEMU: %w", err)
	}
	if len(b.Args) >= 3 && b.Args[0] == "--library-path" {
		if _, err := os.Stat(b.Args[2]); err != nil {
			return fmt.Errorf("vm: QEMU: %w", err)
		}
	}
	return nil
}
