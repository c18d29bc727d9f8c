//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// serverUse is what a myriemu process holds: its fds by kind, its mappings
// of guest memory (memfd), its threads and goroutines.
type serverUse struct {
	FDs        map[string]int
	MemfdMaps  int
	Threads    int
	Goroutines int
}

func (u serverUse) String() string {
	kinds := make([]string, 0, len(u.FDs))
	for k, n := range u.FDs {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("fds{%s} memfd-maps=%d threads=%d goroutines=%d", strings.Join(kinds, " "), u.MemfdMaps, u.Threads, u.Goroutines)
}

// same compares everything but the thread count: the Go runtime keeps
// the threads it made under load (idle Ms are never destroyed; only a
// goroutine that dies locked to its thread takes it along), so threads
// are reported and bounded separately.
func (u serverUse) same(v serverUse) bool {
	if u.MemfdMaps != v.MemfdMaps || u.Goroutines != v.Goroutines || len(u.FDs) != len(v.FDs) {
		return false
	}
	for k, n := range u.FDs {
		if v.FDs[k] != n {
			return false
		}
	}
	return true
}

var fdKind = regexp.MustCompile(`^(socket|pipe|anon_inode):\[?([a-z_-]*)`)

// useOf reads pid's use from /proc and its goroutines from query-counters.
func useOf(pid int, mon *qmp.SocketMonitor) (serverUse, error) {
	u := serverUse{FDs: map[string]int{}}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return u, err
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kind := "file"
		switch m := fdKind.FindStringSubmatch(target); {
		case strings.HasPrefix(target, "/memfd:"):
			kind = "memfd"
		case m != nil && m[1] == "anon_inode":
			kind = m[2] // eventfd, eventpoll, ...
		case m != nil:
			kind = m[1]
		}
		u.FDs[kind]++
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "/memfd:") {
			u.MemfdMaps++
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			fmt.Sscan(v, &u.Threads)
		}
	}
	out, err := mon.Run([]byte(`{"execute":"query-counters","arguments":{"name":"myri0"}}`))
	if err != nil {
		return u, err
	}
	var r struct {
		Return struct {
			Process struct {
				Goroutines int `json:"goroutines"`
			} `json:"process"`
		}
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return u, err
	}
	u.Goroutines = r.Return.Process.Goroutines
	return u, nil
}

// waitUse polls until the server's use equals want (a departing client's
// teardown and its goroutines' exits take a moment) or 30 s pass; it
// returns the last reading.
func waitUse(ctx context.Context, pid int, mon *qmp.SocketMonitor, want serverUse) (serverUse, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, err := useOf(pid, mon)
		if err != nil {
			return u, err
		}
		if u.same(want) {
			return u, nil
		}
		if time.Now().After(deadline) {
			return u, fmt.Errorf("server use %v, want %v", u, want)
		}
		select {
		case <-ctx.Done():
			return u, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// deviceState is one device of query-devices.
type deviceState struct {
	Connected bool `json:"client-connected"`
	BusMaster bool `json:"bus-master"`
}

func deviceOf(mon *qmp.SocketMonitor, name string) (deviceState, error) {
	out, err := mon.Run([]byte(`{"execute":"query-devices"}`))
	if err != nil {
		return deviceState{}, err
	}
	var r struct {
		Return []struct {
			Name string `json:"name"`
			deviceState
		}
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return deviceState{}, err
	}
	for _, d := range r.Return {
		if d.Name == name {
			return d.deviceState, nil
		}
	}
	return deviceState{}, fmt.Errorf("query-devices: no %s in %s", name, out)
}

// waitDevice polls query-devices until ok(name's state) or timeout.
func waitDevice(ctx context.Context, mon *qmp.SocketMonitor, name string, timeout time.Duration, ok func(deviceState) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d, err := deviceOf(mon, name)
		if err != nil {
			return err
		}
		if ok(d) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: state %+v (%v)", name, d, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// liveMaps replays the server's "dma map added" and "dma map removed"
// debug lines of device's latest client in log and returns the mappings
// left, as "iova+size", each with whether it is writable.
func liveMaps(log, device string) map[string]bool {
	live := map[string]bool{}
	client := ""
	for _, line := range strings.Split(log, "\n") {
		l, ok := myripair.ParseLogLine(line)
		if !ok || l["device"] != device {
			continue
		}
		switch {
		case l["msg"] == "client connected":
			client = l["client"]
			live = map[string]bool{}
		case l["client"] != client:
		case l["msg"] == "dma map added":
			live[l["iova"]+"+"+l["size"]] = strings.Contains(l["prot"], "w")
		case l["msg"] == "dma map removed":
			delete(live, l["iova"]+"+"+l["size"])
		}
	}
	return live
}

// removedMaps returns the mappings of device that log's "dma map removed"
// lines name, as "iova+size".
func removedMaps(log, device string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(log, "\n") {
		if l, ok := myripair.ParseLogLine(line); ok && l["device"] == device && l["msg"] == "dma map removed" {
			out[l["iova"]+"+"+l["size"]] = true
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitConsole waits until the guest's console shows want after offset
// from and returns the offset just past it.
func waitConsole(ctx context.Context, l *harness.Live, from int, want string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		text := l.Console()
		if i := strings.Index(text[min(from, len(text)):], want); i >= 0 {
			return from + i + len(want), nil
		}
		select {
		case <-ctx.Done():
			return from, fmt.Errorf("console: no %q within %v", want, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitTraffic waits until myri0 has sent and received another 200 frames.
func waitTraffic(ctx context.Context, mon *qmp.SocketMonitor) error {
	before, err := nicCounters(mon, "myri0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		c, err := nicCounters(mon, "myri0")
		if err != nil {
			return err
		}
		if c["tx_frames"] >= before["tx_frames"]+200 && c["rx_frames"] >= before["rx_frames"]+200 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no traffic on myri0: %v then %v", before, c)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// lifecycleScript is the first guest's scenario: in rounds, wait for
// eth0, bring it up, ping the peer (ping:roundN), check the kernel log for
// oopses, then ping the peer 50 times a second with 1400-byte payloads
// until eth0 goes away (hot-unplug), and start over. A reboot starts it
// over from round 1; a kill ends it.
func lifecycleScript() string {
	return fmt.Sprintf(`rc=0
ip link set lo up
n=0
while [ $n -lt 10 ]; do
	n=$((n+1))
	i=0
	while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 1200 ]; do sleep 0.5; i=$((i+1)); done
	ip addr add %[1]s/24 dev eth0
	ip link set eth0 up
	e2e-net link-wait eth0 60s -label round$n || rc=1
	e2e-net ping -to %[2]s -count 5 -interval 0.2 -wait 60s -label round$n || rc=1
%[3]s
	ping -s 1400 -i 0.02 %[2]s >/dev/null 2>&1 &
	p=$!
	echo "E2E-RESULT name=traffic:round$n status=info detail=started"
	while [ -e /sys/class/net/eth0 ]; do sleep 0.2; done
	kill $p 2>/dev/null
	echo "E2E-RESULT name=gone:round$n status=info detail=eth0 removed"
	dmesg | grep -iE 'pciehp|acpiphp|hotplug|myri10ge|vfio|0000:01:00' | tail -n 30 | sed 's/^/E2E-RESULT name=dmesg.unplug status=info detail=/'
done
exit $rc
`, ipA, ipB, driverReactions())
}

// TestLifecycleQEMU is issue #10, acceptance 4: QEMU's own lifecycle
// under traffic, with the unmodified myri10ge. One server serves A's NIC
// (myri0); A's peer is the test itself on a dgram port of the server's
// switch (it answers ARP and pings for 10.0.0.2). Before any QEMU the test
// records what the server holds (fds by kind, memfd mappings, threads,
// goroutines). A boots, its driver adopts the NIC and pings the peer, and
// while it pings 50 times a second with 1400-byte payloads:
//
//  1. QEMU's QMP device_del takes the NIC away: the guest ejects the
//     function behind its pcie-root-port. The server must free the client
//     and hold exactly what it held before A. If QEMU survives the unplug,
//     device_add plugs a NIC on the same socket into the same QEMU and the
//     guest's driver adopts it and pings again. QEMU 11.1.3 does not
//     survive it: it aborts in memory_region_del_subregion as it finalizes
//     the unplugged vfio-user-pci (docs/lifecycle.md); the test records
//     that and goes on with a new QEMU (A1b) on the same socket;
//  2. QEMU's QMP system_reset reboots A (set-action reboot=reset first:
//     the harness's -no-reboot would make it a shutdown). The client
//     stays; QEMU resets the function (bus mastering off, DEVICE_RESET)
//     and unmaps every writable DMA mapping (guest RAM; the read-only BIOS
//     ROM may stay), the rebooted guest's driver adopts the NIC again and
//     pings; the server holds what it held before the reset;
//  3. QEMU is killed with SIGKILL: the server must free the client and
//     hold what it held before A.
//
// Then a new QEMU, A2, boots on the same socket: its driver adopts the
// NIC, it pings the peer 20 times without loss, its kernel log is clean;
// after it powers off the server holds what it held before A, and it has
// accepted exactly three clients.
func TestLifecycleQEMU(t *testing.T) {
	h := harness.New(t, env)
	start := time.Now()
	// The peer A pings is the test itself, on a dgram port of the switch:
	// no second guest to boot and keep running.
	peerPath, portPath := h.Socket("peer"), h.Socket("port")
	peer, err := newHostPeer(peerPath, portPath, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.ParseIP(ipB), false)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.close()
	srv, nics, path := controlServer(h, 1, "--port", "dgram=unix:"+portPath+",unix:"+peerPath)
	mon, err := monitor(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	ctx := h.Context()

	pid := srv.Pid()
	base, err := useOf(pid, mon)
	if err != nil {
		h.Fatalf("reading the server's use: %v", err)
	}
	h.Logf("server (pid %d) before A: %v", pid, base)

	// A's NIC as QEMU's device_add needs it: the harness's -device, as a
	// QMP argument object.
	ga := myripair.GuestSpec{Name: "a1", NIC: nics[0], Timeout: 20 * time.Minute}
	ga.Script = myripair.NewScript(ipA) // replaced below: only Guest()'s devices are used
	g1 := ga.Guest()
	g1.Scenario = lifecycleScript()
	dev := map[string]any{"driver": "vfio-user-pci", "id": g1.Devices[0].ID, "bus": "rp-" + g1.Devices[0].ID,
		"socket": map[string]string{"type": "unix", "path": nics[0].Socket}}
	for k, v := range g1.Devices[0].Props {
		dev[k] = v
	}

	var steps []string
	var problems []string
	logf := func(format string, args ...any) {
		steps = append(steps, fmt.Sprintf("%6.1fs ", time.Since(start).Seconds())+fmt.Sprintf(format, args...))
	}
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	// QEMU's QMP, bounded.
	qemu := func(ctx context.Context, l *harness.Live, cmd string, args any) error {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := l.Machine.Execute(qctx, cmd, args)
		return err
	}
	// freed waits for the server to drop myri0's client and hold what it
	// held before A came.
	freed := func(ctx context.Context, after string) {
		if err := waitDevice(ctx, mon, "myri0", 2*time.Minute, func(d deviceState) bool { return !d.Connected }); err != nil {
			fail("after %s: %v", after, err)
			return
		}
		if u, err := waitUse(ctx, pid, mon, base); err != nil {
			fail("after %s: %v", after, err)
		} else {
			logf("server after %s: %v (before A: threads %d)", after, u, base.Threads)
		}
	}

	unplugKilledQEMU := false
	// unplug is device_del under traffic; then, if QEMU survived it,
	// device_add on the same socket. It returns the console offset and
	// whether QEMU is still there.
	unplug := func(ctx context.Context, l *harness.Live, at int) (int, bool) {
		if err := qemu(ctx, l, "device_del", map[string]any{"id": "nic0"}); err != nil {
			fail("device_del: %v", err)
			return at, false
		}
		logf("device_del nic0 sent (traffic flowing)")
		// Either the guest sees eth0 go (it ejected the function and QEMU
		// unplugged it) or QEMU exits on the way (QEMU 11.1.3 aborts).
		deadline := time.After(2 * time.Minute)
	wait:
		for {
			if i := strings.Index(l.Console()[at:], "name=gone:round1"); i >= 0 {
				at += i
				logf("A's kernel: eth0 gone")
				break
			}
			select {
			case <-l.Machine.Exited():
				break wait
			case <-deadline:
				fail("after device_del: eth0 still there and QEMU still running after 2 min")
				return at, false
			case <-time.After(250 * time.Millisecond):
			}
		}
		// QEMU finalizes the unplugged device after the guest ejected it.
		select {
		case <-l.Machine.Exited():
		case <-time.After(5 * time.Second):
		}
		select {
		case <-l.Machine.Exited():
			freedCtx := context.WithoutCancel(ctx)
			logf("QEMU exited during the unplug: %v", l.Machine.Wait(freedCtx))
			freed(freedCtx, "device_del (QEMU gone)")
			unplugKilledQEMU = true
			return at, false
		default:
		}
		freed(ctx, "device_del")
		if err := qemu(ctx, l, "device_add", dev); err != nil {
			fail("device_add: %v", err)
			return at, false
		}
		logf("device_add nic0 on the same socket sent")
		var err error
		if at, err = waitConsole(ctx, l, at, "name=ping:round2 status=pass", 5*time.Minute); err != nil {
			fail("after device_add: %v", err)
			return at, false
		}
		logf("A's driver adopted the hot-plugged NIC, pinged the peer")
		if err := waitTraffic(ctx, mon); err != nil {
			fail("after device_add: %v", err)
			return at, false
		}
		return at, true
	}

	// reset is system_reset under traffic; the guest reboots and adopts
	// the NIC again.
	reset := func(ctx context.Context, l *harness.Live, at int) (int, bool) {
		attached, err := useOf(pid, mon)
		if err != nil {
			fail("%v", err)
			return at, false
		}
		logf("server with A attached: %v", attached)
		if err := qemu(ctx, l, "set-action", map[string]any{"reboot": "reset"}); err != nil {
			fail("set-action: %v", err)
			return at, false
		}
		resetAt := len(srv.Log())
		if err := qemu(ctx, l, "system_reset", nil); err != nil {
			fail("system_reset: %v", err)
			return at, false
		}
		logf("system_reset sent (traffic flowing)")
		if err := waitDevice(ctx, mon, "myri0", time.Minute, func(d deviceState) bool { return !d.BusMaster }); err != nil {
			fail("after system_reset: %v", err)
		} else {
			logf("server: myri0's bus mastering off (QEMU reset the function)")
		}
		if at, err = waitConsole(ctx, l, at, result.PrefixBoot+" ", 5*time.Minute); err != nil {
			fail("A did not boot again: %v", err)
			return at, false
		}
		logf("A booted again")
		if at, err = waitConsole(ctx, l, at, "name=ping:round1 status=pass", 5*time.Minute); err != nil {
			fail("after system_reset: %v", err)
			return at, false
		}
		logf("A's driver adopted the NIC again, pinged the peer")
		cmds := map[string]int{}
		for _, line := range strings.Split(srv.Log()[resetAt:], "\n") {
			if ll, ok := myripair.ParseLogLine(line); ok && ll["msg"] == "command" && ll["component"] == "vfiouser" && ll["device"] == "myri0" {
				cmds[ll["cmd"]]++
			}
		}
		logf("server: vfio-user commands from A's QEMU since the reset: %v", cmds)
		before, after := srv.Log()[:resetAt], srv.Log()[resetAt:]
		live := liveMaps(before, "myri0")
		unmapped := 0
		var kept []string
		for _, k := range sortedKeys(live) {
			switch {
			case removedMaps(after, "myri0")[k]:
				unmapped++
			case live[k]:
				// Guest RAM: QEMU's reset redoes the memory map.
				fail("system_reset left the writable DMA mapping %s mapped", k)
			default:
				kept = append(kept, k) // read-only: the BIOS ROM
			}
		}
		logf("server: the reset unmapped %d of the %d DMA mappings A's QEMU had (kept, read-only: %v)", unmapped, len(live), kept)
		if len(live) == 0 || unmapped == 0 {
			fail("system_reset unmapped none of %d DMA mappings", len(live))
		}
		if cmds["DEVICE_RESET"] == 0 || cmds["DMA_UNMAP"] == 0 {
			fail("no DEVICE_RESET or no DMA_UNMAP reached the server after system_reset: %v", cmds)
		}
		if err := waitTraffic(ctx, mon); err != nil {
			fail("after system_reset: %v", err)
			return at, false
		}
		if u, err := waitUse(ctx, pid, mon, attached); err != nil {
			fail("after system_reset: %v", err)
		} else {
			logf("server after the reboot: %v", u)
		}
		return at, true
	}

	// kill is SIGKILL under traffic.
	kill := func(ctx context.Context, l *harness.Live) {
		if err := syscall.Kill(l.Machine.Pid(), syscall.SIGKILL); err != nil {
			fail("kill QEMU: %v", err)
			return
		}
		logf("QEMU killed with SIGKILL (traffic flowing)")
		freed(context.WithoutCancel(ctx), "SIGKILL")
	}

	// booted waits for A's first ping and for traffic.
	booted := func(ctx context.Context, l *harness.Live) (int, bool) {
		at, err := waitConsole(ctx, l, 0, "name=ping:round1 status=pass", 8*time.Minute)
		if err != nil {
			fail("A never pinged the peer: %v", err)
			return at, false
		}
		logf("A booted, its driver adopted the NIC, pinged the peer")
		if err := waitTraffic(ctx, mon); err != nil {
			fail("%v", err)
			return at, false
		}
		return at, true
	}

	g1.Control = func(ctx context.Context, l *harness.Live) {
		at, ok := booted(ctx, l)
		if !ok {
			return
		}
		if at, ok = unplug(ctx, l, at); !ok {
			return
		}
		if _, ok = reset(ctx, l, at); !ok {
			return
		}
		kill(ctx, l)
	}
	r1 := h.Guest(g1)
	logf("A's QEMU gone: %v", r1.Err)
	runs := []*harness.Run{r1}
	if unplugKilledQEMU && len(problems) == 0 {
		// The reset and the kill on a new QEMU.
		g1b := g1
		g1b.Name, g1b.Dir = "a1b", ""
		g1b.Control = func(ctx context.Context, l *harness.Live) {
			at, ok := booted(ctx, l)
			if !ok {
				return
			}
			if _, ok = reset(ctx, l, at); !ok {
				return
			}
			kill(ctx, l)
		}
		runs = append(runs, h.Guest(g1b))
		logf("A1b's QEMU gone: %v", runs[1].Err)
	}

	// The next QEMU on the same socket.
	a2 := myripair.NewScript(ipA).Step("e2e-net ping -to " + ipB + " -count 20 -interval 0.1 -wait 2m -label peer").
		Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	r2 := h.Guest(myripair.GuestSpec{Name: "a2", NIC: nics[0], Script: a2, Timeout: 10 * time.Minute,
		Require: join(driverResults, []string{"ping:peer"})}.Guest())
	if r2.Err != nil {
		fail("the next QEMU on myri0's socket:\n%s", r2.Report(srv))
	} else {
		logf("A2 (a new QEMU on the same socket): %s", mustFind(h, r2, "ping:peer").Detail)
	}
	if err := waitDevice(ctx, mon, "myri0", time.Minute, func(d deviceState) bool { return !d.Connected }); err != nil {
		fail("after A2: %v", err)
	} else if u, err := waitUse(ctx, pid, mon, base); err != nil {
		fail("after A2 powered off: %v", err)
	} else {
		logf("server after A2 powered off: %v", u)
		if u.Threads > base.Threads+8 {
			fail("server threads grew from %d to %d over four clients", base.Threads, u.Threads)
		}
	}
	c, _ := mon.Run([]byte(`{"execute":"query-counters","arguments":{"name":"myri0"}}`))
	var cr struct {
		Return struct {
			VFIOUser map[string]uint64 `json:"vfio-user"`
		}
	}
	json.Unmarshal(c, &cr)
	if n := cr.Return.VFIOUser["clients"]; n != 3 {
		fail("myri0's server accepted %d clients, want 3 (A, A after device_add, A2)", n)
	}
	logf("myri0's vfio-user counters: %v", cr.Return.VFIOUser)

	received, answered := peer.counts()
	logf("the host peer received %d frames and answered %d ARP and echo requests", received, answered)
	h.Logf("steps:\n  %s", strings.Join(steps, "\n  "))
	for _, r := range runs {
		for _, l := range results(r, "dmesg.unplug") {
			h.Logf("%s kernel log after the unplug: %s", r.Guest, l.Detail)
		}
		for _, res := range results(r, "dmesg.oops") {
			if res.Status != result.Pass {
				fail("%s: %s", r.Guest, res.Detail)
			}
		}
		if strings.TrimSpace(r.QEMUStderr) != "" {
			h.Logf("%s's QEMU stderr:\n%s", r.Guest, strings.TrimSpace(r.QEMUStderr))
		}
	}
	for _, p := range problems {
		h.Errorf("%s", p)
	}
	if len(problems) > 0 {
		for _, r := range runs {
			h.Logf("%s", r.Report(srv))
		}
	}
	mon.Disconnect()
	myripair.WaitDetached(srv, 3, 10*time.Second)
	if err := srv.Stop(); err != nil {
		h.Errorf("myriemu did not stop cleanly: %v", err)
	}
	// A client's departure, however abrupt, is no warning: the server
	// logs warnings for what a client or guest did wrong.
	for _, l := range myripair.Problems(srv.Log()) {
		h.Errorf("server log: %s", l)
	}
	detaches := myripair.NICCounters(srv.Log(), "myri0")
	if len(detaches) != 3 {
		h.Errorf("myri0 detached %d times, want 3", len(detaches))
	}
	for i, c := range detaches {
		h.Logf("myri0 detach %d: %s", i+1, c)
		if c["guest_errors"] != 0 {
			h.Errorf("myri0 counted %d guest errors in client %d", c["guest_errors"], i+1)
		}
	}
	h.Logf("wall time %.0f s", time.Since(start).Seconds())
}
