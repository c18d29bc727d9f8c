package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

// idleMarker is the console line after which the guest only sleeps.
const idleMarker = "BENCH-IDLE-BEGIN"

// idle is issue 15's acceptance 3: the server's CPU time (utime + stime of
// /proc/<pid>/stat, every thread) first with no client attached, then
// while one guest has the NIC up (link up, address set) and sends
// nothing, per pio mode.
func idle(ctx context.Context, env *harness.Env, dir string, args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	modes := fs.String("modes", "mmap,trap", "pio modes to measure")
	window := fs.Duration("window", 30*time.Second, "measurement window with the NIC up")
	unattached := fs.Duration("unattached", 10*time.Second, "measurement window before any client attaches")
	settle := fs.Duration("settle", 5*time.Second, "wait after ifup before measuring")
	parse(fs, args)

	for _, mode := range strings.Split(*modes, ",") {
		d := filepath.Join(dir, mode)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		nic := myripair.NICs(1, func(name string) string { return filepath.Join(env.Work, "idle-"+name+".sock") })[0]
		logFile, err := os.Create(filepath.Join(d, "server.log"))
		if err != nil {
			return err
		}
		srv, err := env.StartServer(ctx, "myriemu", []string{"serve", "--log-level", "info",
			"--device", "myri10ge,socket=" + nic.Socket + ",name=" + nic.Name + ",mac=" + nic.MAC + ",pio=" + mode}, 30*time.Second, logFile)
		if err != nil {
			logFile.Close()
			return err
		}
		noClient, err := cpuShare(ctx, srv.Pid(), *unattached)
		if err != nil {
			srv.Stop()
			logFile.Close()
			return err
		}

		props := map[string]any{}
		if mode == "trap" {
			props["x-no-posted-writes"] = true
		}
		sleep := int((*settle + *window + 20*time.Second).Seconds())
		script := myripair.NewScript(leftIP).Raw(fmt.Sprintf("echo %s\nsleep %d", idleMarker, sleep))
		g := harness.Guest{
			Name: "idle", Scenario: script.String(), Dir: filepath.Join(d, "guest"), Timeout: 5 * time.Minute,
			Programs: []string{myripair.NetTool}, Modules: []string{"myri10ge"},
			Devices: []vm.Device{{ID: "nic0", Socket: nic.Socket, Props: props}},
		}
		var (
			wg      sync.WaitGroup
			up      float64
			upErr   error
			mctx, c = context.WithCancel(ctx)
		)
		wg.Go(func() {
			if upErr = waitLine(mctx, filepath.Join(g.Dir, "console.log"), idleMarker); upErr != nil {
				return
			}
			select {
			case <-time.After(*settle):
			case <-mctx.Done():
				upErr = mctx.Err()
				return
			}
			up, upErr = cpuShare(mctx, srv.Pid(), *window)
		})
		run := env.RunGuest(ctx, g)
		c()
		wg.Wait()
		srv.Stop()
		logFile.Close()
		if upErr != nil {
			return fmt.Errorf("idle pio=%s: %w (guest: %v)", mode, upErr, run.Err)
		}
		fmt.Printf("pio=%s: no client attached: %.2f%% of one core over %v; NIC up and idle: %.2f%% of one core over %v\n",
			mode, noClient, *unattached, up, *window)
	}
	return nil
}

// cpuShare is the CPU time process pid used over the next window, in
// percent of one core.
func cpuShare(ctx context.Context, pid int, window time.Duration) (float64, error) {
	c0, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c1, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	return 100 * (c1 - c0).Seconds() / time.Since(t0).Seconds(), nil
}

// procCPU is utime + stime of /proc/<pid>/stat (fields 14 and 15, in
// clock ticks of 1/100 s: USER_HZ on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	k, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(u+k) * 10 * time.Millisecond, nil
}

// waitLine waits until the file at path has a line containing marker.
func waitLine(ctx context.Context, path, marker string) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			found := false
			for sc.Scan() {
				if strings.Contains(sc.Text(), marker) && !strings.Contains(sc.Text(), "echo") {
					found = true
					break
				}
			}
			f.Close()
			if found {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("no %q line in %s: %w", marker, path, ctx.Err())
		}
	}
}
