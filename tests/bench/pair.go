package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

// The two guests of a pair: left receives, right pings and sends.
const (
	leftIP  = "10.0.0.1"
	rightIP = "10.0.0.2"
)

// nicKind is one way of giving a pair of guests a wire.
type nicKind struct {
	name string
	// pio is myri10ge's pio= key; "" for e1000e.
	pio string
	// props are the vfio-user-pci properties of a Myri-10G NIC.
	props map[string]any
	// mtu, if not 0, is set on both guests' eth0 (else the driver's default).
	mtu int
	// nice, if not 0, is the server's every thread's nice value while the
	// guests run (below 0: ahead of the vCPUs).
	nice int
}

// kinds are the configurations compare knows. pio=trap is attached with
// x-no-posted-writes=on, as the README told users before issue 15 (with
// QEMU's posted writes its commands time out on this machine); pio=mmap
// with QEMU's defaults.
var kinds = map[string]nicKind{
	"mmap":           {name: "myri10ge pio=mmap", pio: "mmap", props: map[string]any{}},
	"trap":           {name: "myri10ge pio=trap", pio: "trap", props: map[string]any{"x-no-posted-writes": true}},
	"trap-posted":    {name: "myri10ge pio=trap, posted writes", pio: "trap", props: map[string]any{}},
	"mmap-mtu1500":   {name: "myri10ge pio=mmap, MTU 1500", pio: "mmap", props: map[string]any{}, mtu: 1500},
	"mmap-nice":      {name: "myri10ge pio=mmap, server at nice -10", pio: "mmap", props: map[string]any{}, nice: -10},
	"e1000e":         {name: "QEMU e1000e, -netdev dgram", props: nil},
	"e1000e-mtu9000": {name: "QEMU e1000e, -netdev dgram, MTU 9000", mtu: 9000},
}

// pairRun is one boot of a pair.
type pairRun struct {
	left, right *harness.Run
	server      *harness.Server // nil for e1000e
}

// bootPair starts the server (for Myri-10G), boots both guests with their
// scenarios and waits for both to power off. The server is stopped when it
// returns.
func bootPair(ctx context.Context, env *harness.Env, dir string, k nicKind, left, right *myripair.Script, timeout time.Duration) (*pairRun, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sock := func(name string) string { return filepath.Join(env.Work, name+".sock") }
	g := [2]harness.Guest{
		{Name: "left", Scenario: left.String(), Dir: filepath.Join(dir, "left"), BootTimeout: timeout, Timeout: timeout, Programs: []string{myripair.NetTool}},
		{Name: "right", Scenario: right.String(), Dir: filepath.Join(dir, "right"), BootTimeout: timeout, Timeout: timeout, Programs: []string{myripair.NetTool}},
	}
	pr := &pairRun{}
	if k.pio == "" {
		// Each guest's dgram socket sends to the other's.
		for i := range g {
			me, peer := sock(fmt.Sprintf("e1000e-%d", i)), sock(fmt.Sprintf("e1000e-%d", 1-i))
			os.Remove(me)
			g[i].Modules = []string{"e1000e"}
			g[i].ExtraArgs = []string{
				"-netdev", "dgram,id=nd,local.type=unix,local.path=" + me + ",remote.type=unix,remote.path=" + peer,
				"-device", fmt.Sprintf("e1000e,netdev=nd,mac=52:54:00:00:15:%02x", i+1),
			}
		}
	} else {
		nics := myripair.NICs(2, func(name string) string { return sock("bench-" + name) })
		args := []string{"serve", "--log-level", "info"}
		for _, n := range nics {
			args = append(args, "--device", "myri10ge,socket="+n.Socket+",name="+n.Name+",mac="+n.MAC+",pio="+k.pio)
		}
		logFile, err := os.Create(filepath.Join(dir, "server.log"))
		if err != nil {
			return nil, err
		}
		defer logFile.Close()
		srv, err := env.StartServer(ctx, "myriemu", args, 30*time.Second, logFile)
		if err != nil {
			return nil, err
		}
		defer srv.Stop()
		pr.server = srv
		for i := range g {
			g[i].Modules = []string{"myri10ge"}
			g[i].Devices = []vm.Device{{ID: "nic0", Socket: nics[i].Socket, Props: k.props}}
		}
	}
	if k.nice != 0 && pr.server != nil {
		// Threads appear as the guests attach: renice them once a second.
		rctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { reniceLoop(rctx, pr.server.Pid(), k.nice) })
		defer wg.Wait()
		defer stop()
	}
	runs := env.RunGuests(ctx, g[0], g[1])
	pr.left, pr.right = runs[0], runs[1]
	if pr.server != nil {
		myripair.WaitDetached(pr.server, 2, 10*time.Second)
	}
	return pr, nil
}

// reniceLoop sets every thread of process pid to nice until ctx ends.
func reniceLoop(ctx context.Context, pid, nice int) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			if tid, err := strconv.Atoi(task.Name()); err == nil {
				_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// guestScript starts a scenario: eth0 (the one NIC) up with ip/24, the
// kind's MTU, carrier.
func guestScript(ip string, k nicKind) *myripair.Script {
	s := myripair.NewScript(ip)
	if k.mtu != 0 {
		s.Must(fmt.Sprintf("ip link set eth0 mtu %d", k.mtu))
	}
	return s
}

// runErr summarises a failed guest for the report.
func runErr(r *harness.Run) string {
	if r == nil || r.Err == nil {
		return ""
	}
	return fmt.Sprintf("%s: %v", r.Guest, strings.SplitN(r.Err.Error(), "\n", 2)[0])
}
