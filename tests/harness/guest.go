package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/myriemu/myriemu/guestdrv/image"
	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/vm"
)

// Default timeouts. A TCG boot to /init takes about 4-6 s on an idle 2-core
// machine, but several times that on a loaded one, so reaching /init gets
// its own generous bound and the scenario's bound starts from there.
const (
	DefaultBootTimeout  = 180 * time.Second
	DefaultGuestTimeout = 120 * time.Second
)

// GuestModule is an out-of-tree module from guestdrv/modules/<Name>.
type GuestModule struct {
	Name string
	Args string
}

// Guest describes one guest boot.
type Guest struct {
	// Name names the guest's files and QMP socket; [A-Za-z0-9_.-].
	Name string
	// Programs are guest program packages relative to the repo
	// ("./guestdrv/cmd/e2e-probe"), built static and put in /bin.
	Programs []string
	// CPrograms are C program directories relative to the repo
	// ("guestdrv/mxtest"), built static with the rootfs's gcc (Env.CProgram)
	// and put in /bin under the directory's name.
	CPrograms []string
	// Modules are in-tree kernel modules loaded (with their dependencies,
	// in order) before the scenario; ModuleArgs gives their parameters.
	Modules    []string
	ModuleArgs map[string]string
	// GuestModules are built from guestdrv/modules and loaded next.
	GuestModules []GuestModule
	// Firmware files for /lib/firmware.
	Firmware map[string][]byte
	// Scenario is the busybox sh script /init runs.
	Scenario string
	// Devices are the vfio-user devices to attach.
	Devices   []vm.Device
	MemoryMiB int
	// NUMANodes splits the RAM into that many NUMA nodes (vm.Config);
	// 0 keeps one.
	NUMANodes int
	// Append is added to the kernel command line.
	Append string
	// BootTimeout bounds QEMU's start to the E2E-BOOT line of /init; 0
	// means DefaultBootTimeout.
	BootTimeout time.Duration
	// Timeout bounds the rest, E2E-BOOT to QEMU's exit (the scenario and
	// poweroff); 0 means DefaultGuestTimeout.
	Timeout time.Duration
	// Require lists result names that must be printed.
	Require []string
	// Dir keeps console.log, qemu-stderr.log and qemu-cmdline.txt; "" puts
	// them in the Env's scratch directory.
	Dir string
	// ExtraArgs are appended to QEMU's arguments (e.g. -netdev and a NIC).
	ExtraArgs []string
	// Control, if set, runs in its own goroutine once QEMU's QMP answers,
	// to drive QEMU itself while the guest runs (device_del, device_add,
	// system_reset, a kill). Its ctx ends when QEMU has exited or the run
	// is over, and Control must return then; RunGuest returns only after
	// Control has.
	Control func(ctx context.Context, l *Live)
}

// Live is a running guest as Guest.Control sees it.
type Live struct {
	// Machine is QEMU: its QMP (Execute), its pid, Kill.
	Machine *vm.Machine
	console *lockedBuffer
}

// Console returns everything the guest printed so far.
func (l *Live) Console() string { return l.console.String() }

// Run is what happened to one guest.
type Run struct {
	Guest       string
	Console     *result.Console
	ConsoleText string
	QEMUStderr  string
	CommandLine string
	// PCI is QEMU's own view (query-pci) when the guest reached /init;
	// queried only for guests with Devices.
	PCI []vm.PCIDevice
	// TimedOut is set when QEMU was killed at BootTimeout or Timeout.
	TimedOut    bool
	BootTimeout time.Duration
	Timeout     time.Duration
	Elapsed     time.Duration // QEMU start to exit
	BootTime    time.Duration // QEMU start to E2E-BOOT; 0 if never seen
	Dir         string
	// Err is nil if the guest passed: it booted, its devices were there,
	// it finished in time and its results pass (result.Console.Verdict).
	Err error
}

// RunGuest builds the guest's image, boots it and waits for it to power
// off or time out; QEMU is always gone when it returns.
func (e *Env) RunGuest(ctx context.Context, g Guest) *Run {
	r := &Run{Guest: g.Name, BootTimeout: g.BootTimeout, Timeout: g.Timeout, Dir: g.Dir}
	if r.BootTimeout == 0 {
		r.BootTimeout = DefaultBootTimeout
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultGuestTimeout
	}
	r.Err = e.runGuest(ctx, g, r)
	return r
}

// RunGuests boots the guests at the same time (e.g. two guests on one
// emulated wire) and returns their runs in order once all have ended.
func (e *Env) RunGuests(ctx context.Context, gs ...Guest) []*Run {
	// Build the shared programs first, once, rather than racing to.
	var pkgs []string
	for _, g := range gs {
		pkgs = append(pkgs, g.Programs...)
	}
	_, _ = e.GuestPrograms(ctx, pkgs...) // errors surface again per guest
	runs := make([]*Run, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i] = e.RunGuest(ctx, g)
		}()
	}
	wg.Wait()
	return runs
}

func (e *Env) runGuest(ctx context.Context, g Guest, r *Run) error {
	if g.Name == "" || strings.ContainsAny(g.Name, "/ ,") {
		return fmt.Errorf("harness: bad guest name %q", g.Name)
	}
	scratch := filepath.Join(e.Work, "guest-"+g.Name)
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if r.Dir == "" {
		r.Dir = scratch
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	initrd, err := e.buildImage(ctx, g, scratch)
	if err != nil {
		return err
	}

	binary := e.QEMU
	binary.Env = append(append([]string(nil), binary.Env...), EnvRunTag+"="+e.Tag)
	cfg := vm.Config{
		Binary:    binary,
		Kernel:    e.Rootfs.Kernel(),
		Initrd:    initrd,
		Append:    g.Append,
		MemoryMiB: g.MemoryMiB,
		NUMANodes: g.NUMANodes,
		Devices:   g.Devices,
		QMPSocket: filepath.Join(scratch, "qmp.sock"),
		ExtraArgs: g.ExtraArgs,
	}
	m, err := vm.New(cfg, nil)
	if err != nil {
		return err
	}
	r.CommandLine = m.CommandLine()
	_ = os.WriteFile(filepath.Join(r.Dir, "qemu-cmdline.txt"), []byte(r.CommandLine+"\n"), 0o644)
	consoleFile, err := os.Create(filepath.Join(r.Dir, "console.log"))
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer consoleFile.Close()
	stderrFile, err := os.Create(filepath.Join(r.Dir, "qemu-stderr.log"))
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer stderrFile.Close()
	booted := make(chan struct{})
	console := &lockedBuffer{file: consoleFile}
	console.onLine = func(line string) {
		if strings.Contains(line, result.PrefixBoot+" ") && booted != nil {
			close(booted)
			booted = nil // guarded by console.mu
		}
	}
	bootSeen := booted
	stderr := &lockedBuffer{file: stderrFile}
	m.Console, m.Stderr = console, stderr
	defer func() {
		_ = m.Kill() // no-op when QEMU is already gone
		r.ConsoleText = console.String()
		r.QEMUStderr = stderr.String()
		r.Console = result.ParseString(r.ConsoleText)
	}()

	// runCtx bounds QMP calls; the boot and scenario bounds are below.
	runCtx, cancel := context.WithTimeout(ctx, r.BootTimeout+r.Timeout)
	defer cancel()
	start := time.Now()
	if err := m.Start(runCtx); err != nil {
		r.Elapsed = time.Since(start)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			r.TimedOut = true
		}
		return fmt.Errorf("QEMU failed to come up: %w", err)
	}
	if g.Control != nil {
		cctx, ccancel := context.WithCancel(runCtx)
		var cwg sync.WaitGroup
		cwg.Add(2)
		go func() { // runControlEnd: QEMU's exit ends Control's ctx
			defer cwg.Done()
			select {
			case <-m.Exited():
			case <-cctx.Done():
			}
			ccancel()
		}()
		go func() {
			defer cwg.Done()
			g.Control(cctx, &Live{Machine: m, console: console})
		}()
		// Runs before the deferred Kill: QEMU has exited, or the run is
		// over and QEMU is about to be killed; either way ctx ends.
		defer func() {
			ccancel()
			cwg.Wait()
		}()
	}
	var timedOut string
	var queryErr error
	bootTimer := time.NewTimer(r.BootTimeout - time.Since(start))
	defer bootTimer.Stop()
	var scenario <-chan time.Time
wait:
	for {
		select {
		case <-m.Exited():
			break wait
		case <-bootSeen:
			bootSeen = nil
			r.BootTime = time.Since(start)
			bootTimer.Stop()
			t := time.NewTimer(r.Timeout)
			defer t.Stop()
			scenario = t.C
			// The firmware has numbered the buses behind the root ports
			// by now (before it, query-pci cannot see those devices).
			if len(g.Devices) > 0 {
				r.PCI, queryErr = e.queryDevices(runCtx, m, g.Devices)
			}
		case <-bootTimer.C:
			timedOut = fmt.Sprintf("guest %s did not reach /init (E2E-BOOT) within %v", g.Name, r.BootTimeout)
			break wait
		case <-scenario:
			timedOut = fmt.Sprintf("guest %s did not power off within %v of E2E-BOOT", g.Name, r.Timeout)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if timedOut != "" {
		// Ask QEMU to quit over QMP; Shutdown kills it if that fails.
		qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := m.Shutdown(qctx); err != nil {
			timedOut += fmt.Sprintf(": QEMU killed (%v)", err)
		} else {
			timedOut += ": QEMU stopped with QMP quit"
		}
		qcancel()
	}
	if ctx.Err() != nil {
		_ = m.Kill()
	}
	werr := m.Wait(context.Background()) // QEMU is gone or killed: returns at once
	r.Elapsed = time.Since(start)
	r.TimedOut = timedOut != ""
	// The deferred function fills Console; parse here too for the verdict.
	verdict := result.ParseString(console.String()).Verdict(g.Require...)
	var problems []string
	if r.TimedOut {
		problems = append(problems, timedOut)
	} else if ctx.Err() != nil {
		problems = append(problems, fmt.Sprintf("guest %s: %v", g.Name, ctx.Err()))
	} else if werr != nil {
		problems = append(problems, fmt.Sprintf("QEMU exited with an error: %v", werr))
	}
	if queryErr != nil {
		problems = append(problems, queryErr.Error())
	} else if r.BootTime > 0 {
		for _, d := range g.Devices {
			if !hasQdev(r.PCI, d.ID) {
				problems = append(problems, fmt.Sprintf("QEMU's query-pci does not list device %s", d.ID))
			}
		}
	}
	if verdict != nil {
		problems = append(problems, verdict.Error())
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "\n"))
}

// queryDevices runs query-pci until every device is listed (QEMU numbers
// the buses behind root ports when the firmware does), for at most 10 s.
func (e *Env) queryDevices(ctx context.Context, m *vm.Machine, devs []vm.Device) ([]vm.PCIDevice, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		pci, err := m.PCIDevices(ctx)
		if err != nil {
			return pci, fmt.Errorf("query-pci: %w", err)
		}
		all := true
		for _, d := range devs {
			all = all && hasQdev(pci, d.ID)
		}
		if all {
			return pci, nil
		}
		select {
		case <-ctx.Done():
			return pci, nil // the caller reports the missing ones
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func hasQdev(devs []vm.PCIDevice, id string) bool {
	for _, d := range devs {
		if d.QdevID == id {
			return true
		}
	}
	return false
}

func (e *Env) buildImage(ctx context.Context, g Guest, scratch string) (string, error) {
	programs, err := e.GuestPrograms(ctx, g.Programs...)
	if err != nil {
		return "", err
	}
	for _, dir := range g.CPrograms {
		bin, err := e.CProgram(ctx, dir)
		if err != nil {
			return "", err
		}
		programs = append(programs, bin)
	}
	spec := image.Spec{
		Rootfs:     e.Rootfs,
		Modules:    g.Modules,
		ModuleArgs: g.ModuleArgs,
		Programs:   programs,
		Firmware:   g.Firmware,
		Scenario:   g.Scenario,
	}
	for _, gm := range g.GuestModules {
		ko, err := e.GuestModule(ctx, gm.Name)
		if err != nil {
			return "", err
		}
		spec.ExtraModules = append(spec.ExtraModules, image.Module{Path: ko, Args: gm.Args})
	}
	out := filepath.Join(scratch, "initrd.gz")
	if err := image.Build(spec, out); err != nil {
		return "", err
	}
	return out, nil
}

// Report renders a failed (or any) run for a human: the verdict, the QEMU
// command line, the guest console, QEMU's stderr and the server logs.
func (r *Run) Report(servers ...*Server) string {
	var b strings.Builder
	status := "PASSED"
	if r.Err != nil {
		status = "FAILED"
	}
	boot := "never reached /init"
	if r.BootTime > 0 {
		boot = fmt.Sprintf("reached /init after %.1fs", r.BootTime.Seconds())
	}
	fmt.Fprintf(&b, "=== guest %s %s after %.1fs (%s; timeouts: boot %v, scenario %v)\n",
		r.Guest, status, r.Elapsed.Seconds(), boot, r.BootTimeout, r.Timeout)
	if r.Err != nil {
		fmt.Fprintf(&b, "%s\n", indent(r.Err.Error()))
	}
	fmt.Fprintf(&b, "--- QEMU command line:\n%s\n", indent(r.CommandLine))
	fmt.Fprintf(&b, "--- guest console:\n%s\n", indent(tail(strings.ReplaceAll(r.ConsoleText, "\r", ""), 400)))
	if strings.TrimSpace(r.QEMUStderr) != "" {
		fmt.Fprintf(&b, "--- QEMU stderr:\n%s\n", indent(tail(r.QEMUStderr, 100)))
	}
	for _, s := range servers {
		if s == nil {
			continue
		}
		fmt.Fprintf(&b, "--- server %s log (%s):\n%s\n", s.Name, strings.Join(s.Argv, " "), indent(tail(s.Log(), 200)))
	}
	if r.Dir != "" {
		fmt.Fprintf(&b, "--- files kept in %s\n", r.Dir)
	}
	return b.String()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return strings.Join(lines, "\n")
	}
	return fmt.Sprintf("(%d earlier lines cut)\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "\n")
}

var _ io.Writer = (*lockedBuffer)(nil)
