//go:build e2e

package e2e

// Issue #13: the emulated wire beyond one process. One Myri-10G guest (A,
// unmodified myri10ge) on one myriemu (S1) reaches, through S1's --port
// links:
//
//   - a stock QEMU guest (E) with two e1000e NICs: one on QEMU's
//     -netdev stream (through a relay myriemu, S3, that has a stream port
//     each way), one on -netdev dgram straight to S1;
//   - the host's own stack in a network namespace the test makes, over a
//     TAP interface S1 creates;
//   - a Myri-10G guest (B) of a second myriemu (S2), joined to S1 by a
//     stream port pair.
//
// One guest of each kind serves every case, since TCG is slow. Every peer
// has its own subnet on A's one interface, and E answers ARP only on the
// NIC that has the address asked for, so each case's frames cross its own
// link only.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

const wireSize = 16 << 20

// wirePeer is one case: a peer of A on its own subnet 10.0.N.0/24, A being
// .1 and the peer .2 there.
type wirePeer struct {
	label  string // stream, dgram, tap, peer
	subnet int
}

func (p wirePeer) aIP() string    { return fmt.Sprintf("10.0.%d.1", p.subnet) }
func (p wirePeer) peerIP() string { return fmt.Sprintf("10.0.%d.2", p.subnet) }

// Ports: A sends to the peer on 5100+subnet, the peer to A on 5200+subnet.
func (p wirePeer) toPeerPort() int { return 5100 + p.subnet }
func (p wirePeer) toAPort() int    { return 5200 + p.subnet }

var wirePeers = []wirePeer{{"stream", 1}, {"dgram", 2}, {"tap", 3}, {"peer", 4}}

// peerSide is what a peer runs for its case: take A's stream while sending
// its own (both 16 MiB, SHA-256 printed at both ends).
func (p wirePeer) peerSide() string {
	return fmt.Sprintf(`e2e-net tcp-serve -port %d -conns 1 -bytes %d -label a-to-%s -timeout 6m &
srv=$!
e2e-net tcp-send -to %s -port %d -conns 1 -bytes %d -seed %d -label %s-to-a -timeout 6m || rc=1
wait $srv || rc=1`, p.toPeerPort(), wireSize, p.label, p.aIP(), p.toAPort(), wireSize, 100+p.subnet, p.label)
}

// aSide is A's half of the case.
func (p wirePeer) aSide() string {
	return fmt.Sprintf(`e2e-net tcp-serve -port %d -conns 1 -bytes %d -label %s-to-a -timeout 6m &
srv=$!
e2e-net tcp-send -to %s -port %d -conns 1 -bytes %d -seed %d -label a-to-%s -timeout 6m || rc=1
wait $srv || rc=1`, p.toAPort(), wireSize, p.label, p.peerIP(), p.toPeerPort(), wireSize, p.subnet, p.label)
}

// TestWire is issue #13, acceptance 1 and 2 (vhost-user excepted):
//
//	"1. A Myri-10G guest (unmodified myri10ge) pings with 0% loss and
//	moves 16 MiB with equal SHA-256 to and from: a stock QEMU e1000e
//	guest over stream; the same over dgram; ...; the host's own stack in
//	a network namespace over tap; and a Myri-10G guest of a second
//	myriemu serve process joined by a stream port pair."
//	"2. The stream link survives its peer process restarting: traffic
//	resumes by itself, the transfer in flight completes (TCP
//	retransmits), and counters show the gap."
//
// A pings each peer 50 times, then moves 16 MiB each way with each, one
// peer after the other. Then A sends E 32 MiB over the stream path and,
// once it moves, tells the host (a connection to the namespace); the
// test then stops the relay S3 (S1's stream peer and QEMU's stream
// server), waits 3 s and starts it again: QEMU and S3 reconnect by
// themselves, and the transfer must complete whole. S1's log of its relay
// port must show the second connection and the frames it dropped in
// between.
func TestWire(t *testing.T) {
	h := harness.New(t, env)
	ctx := h.Context()
	w := h.Dir // socket paths: short enough for sun_path, kept on failure
	sock := func(name string) string { return filepath.Join(w, name+".sock") }
	if len(sock("s1-relay")) > 100 {
		w = t.TempDir()
	}
	tag := strconv.Itoa(os.Getpid() % 100000)
	tapName, netns := "mwtap"+tag, "myriemu-wire-"+tag

	nicA := myripair.NIC{Name: "myri0", Socket: sock("myri0"), MAC: "00:60:dd:00:00:01"}
	nicB := myripair.NIC{Name: "myri1", Socket: sock("myri1"), MAC: "00:60:dd:00:00:02"}
	s1 := h.Server("s1", append(myripair.ServerArgs([]myripair.NIC{nicA}, 1, filepath.Join(h.Dir, "s1.pcap"), "debug"),
		"--port", "stream=unix:"+sock("s1-relay")+",server,name=relay,mtu=1500",
		"--port", "dgram=unix:"+sock("s1-dgram")+",unix:"+sock("e-dgram")+",name=qemu-dgram,mtu=1500",
		"--port", "tap="+tapName+",name=host",
		"--port", "stream=unix:"+sock("s1-peer")+",server,name=peer")...)
	s2 := h.Server("s2", append(myripair.ServerArgs([]myripair.NIC{nicB}, 1, "", "debug"),
		"--port", "stream=unix:"+sock("s1-peer")+",client,name=up")...)
	relayArgs := func(n int) []string {
		return []string{"serve", "--device", "testdev,socket=" + sock(fmt.Sprintf("relay-td%d", n)),
			"--port", "stream=unix:" + sock("s1-relay") + ",client,name=up",
			"--port", "stream=unix:" + sock("relay-qemu") + ",server,name=qemu,mtu=1500"}
	}
	relay := h.Server("relay", relayArgs(0)...)

	// The host's stack: the TAP S1 made goes into a namespace of its own.
	hostRun := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		h.Fatalf("ip netns add %s: %v: %s", netns, err, out)
	}
	h.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	for _, c := range [][]string{
		{"ip", "link", "set", tapName, "netns", netns},
		{"ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", netns, "ip", "addr", "add", wirePeers[2].peerIP() + "/24", "dev", tapName},
		{"ip", "netns", "exec", netns, "ip", "link", "set", tapName, "up"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			h.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	if mtu, err := hostRun("cat", "/sys/class/net/"+tapName+"/mtu"); err != nil || strings.TrimSpace(mtu) != "9000" {
		h.Errorf("TAP %s MTU %q (%v), want 9000", tapName, strings.TrimSpace(mtu), err)
	}
	tools, err := env.GuestPrograms(ctx, myripair.NetTool)
	if err != nil {
		h.Fatalf("%v", err)
	}
	netTool := tools[0]

	// A: every peer's subnet on its one interface.
	a := myripair.NewScript(wirePeers[0].aIP())
	for _, p := range wirePeers[1:] {
		a.Must("ip addr add " + p.aIP() + "/24 dev eth0")
	}
	for _, p := range wirePeers {
		a.Step(fmt.Sprintf("e2e-net ping -to %s -count 50 -interval 0.05 -wait 6m -label %s", p.peerIP(), p.label))
	}
	for _, p := range wirePeers {
		a.Raw(p.aSide())
	}
	// The restart: a transfer that is moving when the relay goes away.
	a.Raw(fmt.Sprintf(`e2e-net tcp-send -to %s -port 5301 -conns 1 -bytes %d -seed 7 -label restart -timeout 8m -progress-file /tmp/restart &
rs=$!
e2e-net grows /tmp/restart 2m -label restart-moving || rc=1
e2e-net tcp-send -to %s -port 6000 -conns 1 -bytes 1000 -label signal -timeout 2m || rc=1
wait $rs || rc=1`, wirePeers[0].peerIP(), 2*wireSize, wirePeers[2].peerIP()))
	a.Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))

	// E: a stock QEMU guest, e1000e on stream (via the relay) and dgram.
	const macS, macD = "52:54:00:00:13:01", "52:54:00:00:13:02"
	e := &myripair.Script{}
	e.Raw(fmt.Sprintf(`rc=0
ip link set lo up
echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
ifmac() { for i in /sys/class/net/*; do [ "$(cat $i/address)" = "$1" ] && basename $i; done; }
S=$(ifmac %s)
D=$(ifmac %s)
echo "stream NIC: $S, dgram NIC: $D"`, macS, macD))
	e.Must("ip addr add " + wirePeers[0].peerIP() + "/24 dev $S").Must("ip link set $S up")
	e.Must("ip addr add " + wirePeers[1].peerIP() + "/24 dev $D").Must("ip link set $D up")
	e.Must("e2e-net link-wait $S 60s -label stream").Must("e2e-net link-wait $D 60s -label dgram")
	e.Step("e2e-net ethtool drvinfo $S")
	e.Raw(wirePeers[0].peerSide()).Raw(wirePeers[1].peerSide())
	e.Step(fmt.Sprintf("e2e-net tcp-serve -port 5301 -conns 1 -bytes %d -label restart -timeout 8m", 2*wireSize))
	eGuest := harness.Guest{
		Name:     "e1000e",
		Programs: []string{myripair.NetTool},
		Modules:  []string{"e1000e"},
		Scenario: e.String(),
		Timeout:  20 * time.Minute,
		Require:  []string{"link:stream", "link:dgram", "tcp.recv:restart"},
		ExtraArgs: []string{
			"-netdev", "stream,id=ns,server=off,addr.type=unix,addr.path=" + sock("relay-qemu") + ",reconnect-ms=500",
			"-device", "e1000e,netdev=ns,mac=" + macS,
			"-netdev", "dgram,id=nd,local.type=unix,local.path=" + sock("e-dgram") + ",remote.type=unix,remote.path=" + sock("s1-dgram"),
			"-device", "e1000e,netdev=nd,mac=" + macD,
		},
	}

	// B: the Myri-10G guest of S2.
	b := myripair.NewScript(wirePeers[3].peerIP()).Raw(wirePeers[3].peerSide())
	b.Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))

	// The host: its half of the TAP case, then the restart on A's signal.
	var hostOut strings.Builder
	var hostErrs []string
	relay2 := (*harness.Server)(nil)
	var wg sync.WaitGroup
	hostCtx, stopHost := context.WithCancel(ctx)
	wg.Go(func() {
		out, err := hostRun("sh", "-c", strings.ReplaceAll(wirePeers[2].peerSide(), "e2e-net", netTool))
		hostOut.WriteString(out)
		if err != nil {
			hostErrs = append(hostErrs, fmt.Sprintf("host side of the TAP case: %v", err))
		}
		out, err = hostRun(netTool, "tcp-serve", "-port", "6000", "-conns", "1", "-bytes", "1000", "-label", "signal", "-timeout", "15m")
		hostOut.WriteString(out)
		if err != nil || hostCtx.Err() != nil {
			hostErrs = append(hostErrs, fmt.Sprintf("no restart signal from A: %v", err))
			return
		}
		h.Logf("A's restart transfer is moving: stopping the relay")
		if err := relay.Stop(); err != nil {
			hostErrs = append(hostErrs, fmt.Sprintf("relay: %v", err))
		}
		time.Sleep(3 * time.Second)
		logFile, err := os.Create(filepath.Join(h.Dir, "server-relay2.log"))
		if err != nil {
			hostErrs = append(hostErrs, err.Error())
			return
		}
		h.Cleanup(func() { logFile.Close() })
		// Not h.Server: that fails the test from this goroutine.
		if relay2, err = h.Env.StartServer(ctx, "relay2", relayArgs(1), 30*time.Second, logFile); err != nil {
			hostErrs = append(hostErrs, fmt.Sprintf("relay restart: %v", err))
			return
		}
		h.Cleanup(func() { relay2.Stop() })
		h.Logf("relay started again")
	})

	start := time.Now()
	runs := h.Env.RunGuests(ctx,
		myripair.GuestSpec{Name: "a", NIC: nicA, Script: a, Timeout: 20 * time.Minute, Dir: filepath.Join(h.Dir, "a"),
			Require: join(driverResults, []string{"dmesg:adopted", "grows:restart-moving"})}.Guest(),
		withDir(eGuest, filepath.Join(h.Dir, "e1000e")),
		myripair.GuestSpec{Name: "b", NIC: nicB, Script: b, Timeout: 20 * time.Minute, Dir: filepath.Join(h.Dir, "b"),
			Require: join(driverResults, []string{"dmesg:adopted"})}.Guest(),
	)
	stopHost()
	wg.Wait()
	h.Logf("guests done in %.0f s", time.Since(start).Seconds())
	ra, re, rb := runs[0], runs[1], runs[2]
	host := &harness.Run{Guest: "host", Console: result.ParseString(hostOut.String()), ConsoleText: hostOut.String()}
	servers := []*harness.Server{s1, s2, relay, relay2}
	for _, r := range runs {
		h.Logf("guest %s: %s (QEMU %.1fs)", r.Guest, map[bool]string{true: "passed", false: "failed"}[r.Err == nil], r.Elapsed.Seconds())
		if r.Err != nil {
			h.Errorf("%s", r.Report(servers...))
		}
	}
	for _, e := range hostErrs {
		h.Errorf("%s\nhost output:\n%s", e, hostOut.String())
	}
	for _, r := range []*harness.Run{ra, rb} {
		logDriver(h, r)
	}

	// Acceptance 1: pings and transfers, each way, per case.
	peerRun := map[string]*harness.Run{"stream": re, "dgram": re, "tap": host, "peer": rb}
	rows := [][]string{{"case", "ping (A)", "direction", "bytes", "SHA-256 (both ends)", "MB/s"}}
	for _, p := range wirePeers {
		ping := mustFind(h, ra, "ping:"+p.label)
		if myripair.Field(ping.Detail, "received") != "50" || myripair.Field(ping.Detail, "loss") != "0%" {
			h.Errorf("%s: A's ping: %s", p.label, ping.Detail)
		}
		for _, dir := range []struct {
			label          string
			sender, receiv *harness.Run
		}{{"a-to-" + p.label, ra, peerRun[p.label]}, {p.label + "-to-a", peerRun[p.label], ra}} {
			tr, problems := myripair.Transfers(dir.sender, dir.receiv, dir.label, 1, wireSize)
			for _, pr := range problems {
				h.Errorf("%s: %s", p.label, pr)
			}
			rows = append(rows, []string{p.label, myripair.Field(ping.Detail, "received") + " received, loss " + myripair.Field(ping.Detail, "loss"),
				dir.label, strconv.FormatUint(tr.Bytes, 10), tr.GotSHA, fmt.Sprintf("%.2f", tr.MBps)})
		}
	}
	h.Logf("16 MiB each way per case:\n%s", table(rows))

	// Acceptance 2: the transfer across the relay's restart.
	tr, problems := myripair.Transfers(ra, re, "restart", 1, 2*wireSize)
	for _, pr := range problems {
		h.Errorf("restart: %s", pr)
	}
	h.Logf("transfer across the relay's restart: %d bytes, SHA-256 %s at both ends, %.1f s", tr.Bytes, tr.GotSHA, tr.Seconds)

	// The servers: clean stops, no warnings, and the links' counters.
	for _, s := range []*harness.Server{relay2, s2} {
		if s == nil {
			continue
		}
		if err := s.Stop(); err != nil {
			h.Errorf("%v", err)
		}
	}
	checkServer(h, s1, []myripair.NIC{nicA})
	for _, s := range servers[1:] {
		if s == nil {
			continue
		}
		for _, l := range myripair.Problems(s.Log()) {
			h.Errorf("server %s log: %s", s.Name, l)
		}
	}
	ports := portCounters(s1.Log())
	for _, name := range []string{"relay", "qemu-dgram", "host", "peer"} {
		c := ports[name]
		h.Logf("s1 port %s: %s", name, portCountersString(c))
		if c == nil {
			h.Errorf("s1 logged no counters for port %s", name)
			continue
		}
		if c["in_bytes"] < wireSize || c["out_bytes"] < wireSize {
			h.Errorf("s1 port %s carried %d bytes in and %d out, want at least %d each way", name, c["in_bytes"], c["out_bytes"], wireSize)
		}
		if c["in_runt"]+c["in_oversize"]+c["in_desync"]+c["out_errors"] != 0 {
			h.Errorf("s1 port %s counted bad input or write errors: %s", name, portCountersString(c))
		}
	}
	if c := ports["relay"]; c != nil && (c["connects"] < 2 || c["disconnects"] < 1) {
		h.Errorf("s1's relay port: %d connects and %d disconnects: the restart does not show", c["connects"], c["disconnects"])
	}
	if c := ports["relay"]; c != nil {
		h.Logf("the gap on s1's relay port: %d disconnect(s), %d frame(s) the switch dropped for it, %d dropped at the link",
			c["disconnects"], c["switch_rx_dropped"], c["out_no_carrier"])
	}
}

func withDir(g harness.Guest, dir string) harness.Guest {
	g.Dir = dir
	return g
}

// portCounters returns each link's counters from the last "port closed"
// line a server logged for it.
func portCounters(log string) map[string]myripair.Counters {
	out := map[string]myripair.Counters{}
	for _, line := range strings.Split(log, "\n") {
		l, ok := myripair.ParseLogLine(line)
		if !ok || l["msg"] != "port closed" {
			continue
		}
		c := myripair.Counters{}
		for k, v := range l {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				c[k] = n
			}
		}
		out[l["port"]] = c
	}
	return out
}

func portCountersString(c myripair.Counters) string {
	var b strings.Builder
	for _, k := range []string{"connects", "disconnects", "in_frames", "in_bytes", "out_frames", "out_bytes",
		"out_too_big", "out_no_carrier", "out_errors", "in_runt", "in_oversize", "in_desync", "switch_rx_dropped"} {
		fmt.Fprintf(&b, "%s=%d ", k, c[k])
	}
	return strings.TrimSpace(b.String())
}

// TestWireVhostUser is issue #13, acceptance 1, for vhost-user:
//
//	"1. A Myri-10G guest (unmodified myri10ge) pings with 0% loss and
//	moves 16 MiB with equal SHA-256 to and from: ... a virtio-net guest
//	over vhost-user; ..."
//
// S1 serves A's Myri-10G NIC and a vhost-user-net backend on the same
// switch; a stock QEMU guest's virtio-net-pci (the sid kernel's virtio_net
// driver) uses it through -netdev vhost-user. A pings it 50 times and they
// move 16 MiB each way.
func TestWireVhostUser(t *testing.T) {
	h := harness.New(t, env)
	w := h.Dir
	if len(filepath.Join(w, "vhost-user.sock")) > 100 {
		w = t.TempDir()
	}
	vu := filepath.Join(w, "vhost-user.sock")
	nicA := myripair.NIC{Name: "myri0", Socket: filepath.Join(w, "myri0.sock"), MAC: "00:60:dd:00:00:01"}
	s1 := h.Server("s1", append(myripair.ServerArgs([]myripair.NIC{nicA}, 1, "", "debug"),
		"--port", "vhost-user="+vu+",name=virtio,mtu=1500")...)
	p := wirePeer{"vhost", 5}
	a := myripair.NewScript(p.aIP()).
		Step(fmt.Sprintf("e2e-net ping -to %s -count 50 -interval 0.05 -wait 6m -label %s", p.peerIP(), p.label)).
		Raw(p.aSide()).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	v := myripair.NewScript(p.peerIP()).Raw(p.peerSide())
	vGuest := harness.Guest{
		Name:     "virtio",
		Programs: []string{myripair.NetTool},
		Modules:  []string{"virtio_net"},
		Scenario: v.String(),
		Timeout:  15 * time.Minute,
		Require:  []string{"link:eth0"},
		ExtraArgs: []string{
			"-chardev", "socket,id=vu,path=" + vu + ",reconnect-ms=1000",
			"-netdev", "vhost-user,id=nv,chardev=vu",
			"-device", "virtio-net-pci,netdev=nv,mac=52:54:00:00:13:05",
		},
	}
	start := time.Now()
	runs := h.Guests(
		myripair.GuestSpec{Name: "a", NIC: nicA, Script: a, Timeout: 15 * time.Minute,
			Require: join(driverResults, []string{"dmesg:adopted"})}.Guest(),
		vGuest,
	)
	h.Logf("guests done in %.0f s", time.Since(start).Seconds())
	ra, rv := runs[0], runs[1]
	logDriver(h, ra)
	if res, ok := myripair.Find(rv, "ethtool.drvinfo"); ok {
		h.Logf("virtio guest: %s", res.Detail)
	}
	ping := mustFind(h, ra, "ping:"+p.label)
	if myripair.Field(ping.Detail, "received") != "50" || myripair.Field(ping.Detail, "loss") != "0%" {
		h.Errorf("A's ping: %s", ping.Detail)
	}
	h.Logf("A's ping of the virtio-net guest: %s", ping.Detail)
	for _, dir := range []struct {
		label            string
		sender, receiver *harness.Run
	}{{"a-to-vhost", ra, rv}, {"vhost-to-a", rv, ra}} {
		tr, problems := myripair.Transfers(dir.sender, dir.receiver, dir.label, 1, wireSize)
		for _, pr := range problems {
			h.Errorf("%s", pr)
		}
		h.Logf("%s: %d bytes, SHA-256 %s at both ends, %.2f MB/s", dir.label, tr.Bytes, tr.GotSHA, tr.MBps)
	}
	checkServer(h, s1, []myripair.NIC{nicA})
	c := portCounters(s1.Log())["virtio"]
	h.Logf("s1 port virtio: %s", portCountersString(c))
	if c == nil || c["in_bytes"] < wireSize || c["out_bytes"] < wireSize {
		h.Errorf("s1's vhost-user port carried too little: %s", portCountersString(c))
	}
}
