// Command demo is `make demo`: it starts myriemu serving a testdev, boots a
// QEMU guest that has it attached over vfio-user, and tells in plain words
// what the guest saw. It ends with "DEMO OK" (exit 0) or "DEMO FAILED"
// (exit 1, with the guest console and the server log).
//
// Run it from the repository as root after provisioning (make demo does
// both). -keep keeps the console and logs in tests/artifacts/demo.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/myriemu/myriemu/device/testdev"
	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

func main() {
	keep := flag.Bool("keep", false, "keep console and logs in tests/artifacts/demo even on success")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *keep); err != nil {
		fmt.Printf("\nDEMO FAILED: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func run(ctx context.Context, keep bool) error {
	env, err := harness.NewEnv()
	if err != nil {
		return err
	}
	defer env.Close()
	// Console and logs go to tests/artifacts/demo; kept on failure or with -keep.
	dir := filepath.Join(env.Repo, "tests", "artifacts", "demo")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ok := false
	defer func() {
		if ok && !keep {
			os.RemoveAll(dir)
		}
	}()

	say("myriemu demo: an emulated PCI device, served by myriemu over vfio-user, in a real QEMU guest.")
	say("  QEMU:   %s, the %s", env.QEMUVersion, env.QEMU.Desc)
	say("  guest:  Linux %s under TCG (no KVM), busybox initramfs", env.Rootfs.KernelABI)
	say("")

	sock := filepath.Join(env.Work, "td0.sock")
	say("Starting myriemu with one testdev (%04x:%04x) on %s ...", testdev.VendorID, testdev.DeviceID, sock)
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	srv, err := env.StartServer(ctx, "myriemu", []string{"serve", "--device", "testdev,socket=" + sock + ",name=td0"},
		30*time.Second, logFile)
	if err != nil {
		return err
	}
	defer srv.Stop()
	say("  myriemu is listening.")
	say("Booting the guest with the device attached (vfio-user-pci, shared memfd guest RAM) ...")
	r := env.RunGuest(ctx, harness.Guest{
		Name:     "demo",
		Programs: []string{"./guestdrv/cmd/e2e-testdev"},
		Devices:  []vm.Device{{ID: "td0", Socket: sock}},
		Scenario: "e2e-testdev",
		Require:  []string{"testdev.found", "testdev.regs", "testdev.dma.fill", "testdev.dma.copy"},
		Dir:      dir,
	})
	if r.Err != nil {
		fmt.Print("\n" + r.Report(srv))
		return fmt.Errorf("the guest run failed (%s)", firstLine(r.Err.Error()))
	}
	say("  the guest reached its /init %.1f s after QEMU started and powered off after %.1f s.",
		r.BootTime.Seconds(), r.Elapsed.Seconds())
	say("")
	for _, d := range r.PCI {
		if d.QdevID == "td0" {
			say("QEMU's view (query-pci): device td0 at %s is %04x:%04x with %s.", d.Addr(), d.VendorID, d.DeviceID, regions(d))
		}
	}
	say("")
	say("What the guest saw (its own checks, from user space, without a driver):")
	passed, total := 0, 0
	for _, res := range r.Console.Results {
		switch res.Status {
		case result.Pass:
			passed++
			total++
			say("  ok    %s", res.Detail)
		case result.Fail:
			total++
			say("  FAIL  %s: %s", res.Name, res.Detail)
		case result.Info:
			say("  info  %s", res.Detail)
		}
	}
	if err := srv.Stop(); err != nil {
		return fmt.Errorf("myriemu did not stop cleanly: %v", err)
	}
	say("")
	say("myriemu stopped cleanly; QEMU exited on the guest's poweroff.")
	if keep {
		say("Console and logs: %s", dir)
	}
	say("")
	ok = true
	say("DEMO OK: the guest found the emulated testdev and %d of %d checks passed: registers, DMA into guest memory, the window BAR and its doorbell, error paths and counters.", passed, total)
	return nil
}

func regions(d vm.PCIDevice) string {
	var parts []string
	for _, r := range d.Regions {
		kind := "32-bit"
		if r.Mem64 {
			kind = "64-bit"
		}
		if r.Prefetch {
			kind += " prefetchable"
		}
		parts = append(parts, fmt.Sprintf("BAR%d %s (%s %s)", r.BAR, size(r.Size), kind, r.Type))
	}
	if len(parts) == 0 {
		return "no BARs"
	}
	return strings.Join(parts, ", ")
}

func size(n uint64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
