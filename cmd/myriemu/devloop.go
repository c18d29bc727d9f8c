package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/guestdrv/image"
	"github.com/myriemu/myriemu/vm"
)

// Environment variables run reads (the e2e harness's names).
const (
	envCache = "MYRIEMU_CACHE" // provisioning cache, default defaultCache
	envQEMU  = "MYRIEMU_QEMU"  // a host QEMU >= 10.1 to use instead of the rootfs's
)

// defaultCache is where scripts/provision.sh keeps the rootfs.
const defaultCache = "/var/cache/myriemu"

// Exit statuses of run beyond CMD's own.
const (
	exitProblem     = 1   // CMD succeeded, but something else did not
	exitUsage       = 2   // usage or module compile error; nothing booted
	exitInterrupted = 130 // Ctrl-C (143 after SIGTERM: signalCode)
)

func (a *app) runRun(ctx context.Context, args []string) int {
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(a.stderr, "myriemu run: %v\n", err)
		return exitProblem
	}
	cfg, err := parseRun(args, a.kinds, cwd, io.Discard)
	if errors.Is(err, flag.ErrHelp) {
		newRunFlags(a.stdout, a.kinds).Usage()
		return 0
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "myriemu run: %v\nRun 'myriemu run -h' for usage.\n", err)
		return exitUsage
	}
	if a.onShutdown != nil {
		// After the first signal, a second one kills at once; children
		// die with run (Pdeathsig).
		stop := context.AfterFunc(ctx, a.onShutdown)
		defer stop()
	}
	d := &devloop{cfg: cfg, live: a.stdout, errw: a.stderr, stdin: os.Stdin}
	return d.run(ctx)
}

// devloop is one run: its configuration, where its output goes, and what
// it started.
type devloop struct {
	cfg   runConfig
	live  io.Writer // guest consoles
	errw  io.Writer // run's own lines, build output, summary
	stdin *os.File  // --shell's keyboard

	liveMu sync.Mutex
	start  time.Time
	cancel context.CancelFunc // ends the run as a signal does (--shell's Ctrl-])
	// barrier is the guests' barrier directory (several guests only).
	barrier string
	kernel  string // the guest kernel image QEMU boots
}

func (d *devloop) say(format string, args ...any) {
	d.liveMu.Lock()
	defer d.liveMu.Unlock()
	fmt.Fprintf(d.errw, "myriemu run: "+format+"\n", args...)
}

func (d *devloop) run(ctx context.Context) int {
	d.start = time.Now()
	ctx, d.cancel = context.WithCancel(ctx)
	defer d.cancel()
	code := d.steps(ctx)
	if ctx.Err() != nil && code != signalCode(ctx) {
		// Interrupted before the guests ran (a step failed because of
		// it): everything started so far is stopped by now.
		d.say("interrupted; stopped everything it had started")
		return signalCode(ctx)
	}
	return code
}

// signalCode is the exit status after an interrupt: 128+SIGTERM for
// SIGTERM, else 128+SIGINT (Ctrl-C, or --shell's Ctrl-]).
func signalCode(ctx context.Context) int {
	if c := context.Cause(ctx); c != nil && strings.HasPrefix(c.Error(), syscall.SIGTERM.String()+" ") {
		return 128 + int(syscall.SIGTERM)
	}
	return exitInterrupted
}

// steps runs everything in order; each step's deferred cleanup stops what
// it started.
func (d *devloop) steps(ctx context.Context) int {
	rootfs, qemu, err := d.environment(ctx)
	if err != nil {
		d.say("%v", err)
		return exitProblem
	}
	work, err := os.MkdirTemp("", "myriemu-run-")
	if err != nil {
		d.say("%v", err)
		return exitProblem
	}
	defer os.RemoveAll(work)
	files := work
	if d.cfg.Keep != "" {
		files = d.cfg.Keep
		if err := os.MkdirAll(files, 0o755); err != nil {
			d.say("--keep: %v", err)
			return exitProblem
		}
	}

	mods, names, err := d.modules(ctx, rootfs, work)
	if err != nil {
		if ctx.Err() != nil {
			d.say("interrupted while building; nothing booted")
			return signalCode(ctx)
		}
		// A compile error, or a module flag naming no usable file.
		d.say("%v; nothing booted", err)
		return exitUsage
	}

	if d.cfg.Guests > 1 {
		d.barrier = filepath.Join(work, "barrier")
		if err := os.Mkdir(d.barrier, 0o755); err != nil {
			d.say("%v", err)
			return exitProblem
		}
	}
	guests := planGuests(d.cfg, filepath.Join(work, "s"))
	if err := os.MkdirAll(filepath.Join(work, "s"), 0o700); err != nil {
		d.say("%v", err)
		return exitProblem
	}
	exe, err := os.Executable()
	if err != nil {
		d.say("cannot find my own binary to run serve: %v", err)
		return exitProblem
	}
	pcap := ""
	if d.cfg.Keep != "" {
		pcap = filepath.Join(files, "wire.pcap")
	}
	logFile, err := os.Create(filepath.Join(files, "server.log"))
	if err != nil {
		d.say("%v", err)
		return exitProblem
	}
	defer logFile.Close()
	srvArgs := serveArgs(d.cfg, guests, pcap)
	srv, err := startServer(ctx, exe, srvArgs, logFile)
	if err != nil {
		if ctx.Err() != nil {
			return signalCode(ctx)
		}
		d.say("myriemu serve did not start: %v%s", err, serveHint(err))
		return exitProblem
	}
	defer srv.stop()

	initrds, err := d.images(rootfs, guests, mods, names, work)
	if err != nil {
		d.say("%v", err)
		return exitProblem
	}
	d.say("%d guest(s), Linux %s under TCG, %s; cards: %s; consoles follow",
		len(guests), rootfs.KernelABI, qemu.Version(), cardList(d.cfg.NICs))

	runs := make([]*guestRun, len(guests))
	var wg sync.WaitGroup
	for i, g := range guests {
		runs[i] = &guestRun{plan: g, dir: filepath.Join(files, g.Name), initrd: initrds[i]}
		wg.Go(func() { d.runGuest(ctx, runs[i], qemu, rootfs) })
	}
	wg.Wait()

	s := summary{guests: runs, elapsed: time.Since(d.start), keep: d.cfg.Keep, interrupted: ctx.Err() != nil}
	if !s.interrupted {
		// Myri-10G NICs log their counters when their QEMU goes away.
		var nics []string
		for _, g := range guests {
			for _, c := range g.Cards {
				if c.Kind == "myri10ge" {
					nics = append(nics, c.Device)
				}
			}
		}
		srv.waitDetached(nics, 10*time.Second)
		if d.cfg.Control != "" {
			s.faults, s.faultErr = faultLog(d.cfg.Control)
		}
	}
	if err := srv.stop(); err != nil && !s.interrupted {
		s.serverErr = err
	}
	entries := logEntries(srv.log.String())
	s.counters = nicCounters(entries)
	s.serverProblems = serverProblems(entries)
	s.cards = guests
	s.control = d.cfg.Control
	code := s.exitCode()
	if s.interrupted {
		code = signalCode(ctx)
	}
	d.liveMu.Lock()
	s.write(d.errw, code)
	d.liveMu.Unlock()
	return code
}

// serveHint explains a serve that refuses a flag run passed through.
func serveHint(err error) string {
	for _, f := range []string{"faults", "control"} {
		if strings.Contains(err.Error(), "flag provided but not defined: -"+f) {
			return fmt.Sprintf("\n(this myriemu's serve has no --%s yet: run passes --%s through to serve, which gets it with the control socket and fault injection, issue 10)", f, f)
		}
	}
	return ""
}

// environment finds the provisioned rootfs and the QEMU to run, and
// checks that QEMU can attach the 9p share. Provisioning is the e2e
// harness's (scripts/provision.sh); when the rootfs is missing and run is
// started inside a myriemu checkout, it provisions as make test does,
// else it says how.
func (d *devloop) environment(ctx context.Context) (*image.Rootfs, vm.Binary, error) {
	cache := os.Getenv(envCache)
	if cache == "" {
		cache = defaultCache
	}
	rootfs, err := image.OpenRootfs(filepath.Join(cache, "rootfs"))
	if err != nil {
		script := findProvisionScript()
		if script == "" {
			return nil, vm.Binary{}, fmt.Errorf("%v\nProvision first, as root, from a myriemu checkout: `make provision` "+
				"(or `sudo scripts/provision.sh`; about 2 min, once); %s=DIR uses another cache", err, envCache)
		}
		d.say("no provisioned rootfs (%v); provisioning with %s (about 2 min, once)", err, script)
		cmd := exec.CommandContext(ctx, script)
		cmd.Stdout, cmd.Stderr = d.errw, d.errw
		if err := cmd.Run(); err != nil {
			return nil, vm.Binary{}, fmt.Errorf("%s: %w", script, err)
		}
		if rootfs, err = image.OpenRootfs(filepath.Join(cache, "rootfs")); err != nil {
			return nil, vm.Binary{}, err
		}
	}
	qemu, err := vm.FindQEMU(os.Getenv(envQEMU), rootfs.Dir)
	if err != nil {
		return nil, vm.Binary{}, err
	}
	// The uncompressed kernel boots through PVH, without the bzImage's
	// decompressor: seconds less per boot under TCG.
	d.kernel = rootfs.Kernel()
	if vmlinux, err := rootfs.Vmlinux(filepath.Join(cache, "build")); err == nil {
		d.kernel = vmlinux
	} else {
		d.say("booting the compressed kernel (slower under TCG): %v", err)
	}
	if d.cfg.Share != "" || d.cfg.Guests > 1 {
		if err := vm.HasDevices(qemu, "virtio-9p-pci"); err != nil {
			return nil, vm.Binary{}, fmt.Errorf("--share and several guests need 9p: %v", err)
		}
	}
	if d.cfg.Share != "" {
		if st, err := os.Stat(d.cfg.Share); err != nil || !st.IsDir() {
			return nil, vm.Binary{}, fmt.Errorf("--share %s: not a directory", d.cfg.Share)
		}
	}
	return rootfs, qemu, nil
}

// findProvisionScript returns scripts/provision.sh of the myriemu
// checkout the working directory is in, or "".
func findProvisionScript() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/myriemu/myriemu\n") {
			p := filepath.Join(dir, "scripts", "provision.sh")
			if _, err := os.Stat(p); err == nil {
				return p
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// modules builds the --build-module directories and checks the --module
// files, in command-line order, and returns the .ko files and their
// module names.
func (d *devloop) modules(ctx context.Context, rootfs *image.Rootfs, work string) ([]image.Module, []string, error) {
	var mods []image.Module
	var names []string
	seen := map[string]string{}
	add := func(ko, from string) error {
		n := moduleNameOf(ko)
		if prev, ok := seen[n]; ok {
			return fmt.Errorf("module %s comes from both %s and %s", n, prev, from)
		}
		seen[n] = from
		mods = append(mods, image.Module{Path: ko})
		names = append(names, n)
		return nil
	}
	for _, m := range d.cfg.Modules {
		if !m.Build {
			if st, err := os.Stat(m.Path); err != nil || !st.Mode().IsRegular() {
				return nil, nil, fmt.Errorf("--module %s: not a file", m.Path)
			}
			if err := add(m.Path, m.Path); err != nil {
				return nil, nil, err
			}
			continue
		}
		d.say("building %s against Linux %s (kbuild in the rootfs)", m.Path, rootfs.KernelABI)
		t := time.Now()
		kos, err := buildModule(ctx, rootfs, m.Path, work, d.errw)
		if err != nil {
			return nil, nil, err
		}
		var built []string
		for _, ko := range kos {
			if err := add(ko, m.Path); err != nil {
				return nil, nil, err
			}
			built = append(built, filepath.Base(ko))
		}
		d.say("built %s in %.1f s", strings.Join(built, ", "), time.Since(t).Seconds())
	}
	return mods, names, nil
}

// moduleNameOf is the kernel's name of a module file: its base name
// without .ko[.xz], with '-' as '_'.
func moduleNameOf(file string) string {
	n := filepath.Base(file)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

// images builds each guest's initramfs: busybox, the in-tree driver with
// its dependencies, 9p when sharing, the developer's modules, and the
// scenario.
func (d *devloop) images(rootfs *image.Rootfs, guests []guestPlan, mods []image.Module, names []string, work string) ([]string, error) {
	var intree []string
	args := map[string]string{}
	var fw map[string][]byte
	if netdevs(d.cfg) > 0 {
		intree = append(intree, "myri10ge")
		maxSlices := 1
		for _, n := range d.cfg.NICs {
			maxSlices = max(maxSlices, n.slices())
		}
		if maxSlices > 1 {
			// Several slices need MSI-X and a firmware file the driver
			// loads (device/myri10ge README).
			args["myri10ge"] = fmt.Sprintf("myri10ge_max_slices=%d", maxSlices)
			fw = map[string][]byte{}
			for _, name := range myri10ge.FirmwareNames {
				fw[name] = myri10ge.FirmwareImage()
			}
		}
	}
	if d.cfg.Share != "" || d.barrier != "" {
		intree = append(intree, "9pnet_virtio", "9p")
	}
	var out []string
	for _, g := range guests {
		p := filepath.Join(work, g.Name+".initrd.gz")
		err := image.Build(image.Spec{
			Rootfs:       rootfs,
			Modules:      intree,
			ModuleArgs:   args,
			ExtraModules: mods,
			Firmware:     fw,
			Scenario:     scenario(d.cfg, g, names),
		}, p)
		if err != nil {
			return nil, fmt.Errorf("guest %s image: %w", g.Name, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func cardList(nics []nicSpec) string {
	if len(nics) == 0 {
		return "none"
	}
	var kinds []string
	for _, n := range nics {
		kinds = append(kinds, strings.Join(append([]string{n.Kind}, n.Opts...), ","))
	}
	return strings.Join(kinds, " + ") + " per guest"
}
