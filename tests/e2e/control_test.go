//go:build e2e

package e2e

// Issue #10 end to end: the control socket (QMP) and fault injection with
// QEMU 11.1 guests running the unmodified myri10ge driver.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"testing"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// controlServer starts a server of n NICs with a control socket and the
// extra serve arguments; it returns the control socket's path.
func controlServer(h *harness.T, n int, extra ...string) (*harness.Server, []myripair.NIC, string) {
	h.Helper()
	nics := myripair.NICs(n, h.Socket)
	qmpPath := h.Socket("qmp")
	args := append(myripair.ServerArgs(nics, 1, "", "debug"), "--control", qmpPath)
	return h.Server("myriemu", append(args, extra...)...), nics, qmpPath
}

// monitor connects go-qemu's SocketMonitor, unchanged, to the control socket.
func monitor(path string) (*qmp.SocketMonitor, error) {
	mon, err := qmp.NewSocketMonitor("unix", path, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if err := mon.Connect(); err != nil {
		return nil, err
	}
	return mon, nil
}

// waitConnected polls query-devices until every NIC has its client and a
// link, or ctx ends.
func waitConnected(ctx context.Context, mon *qmp.SocketMonitor, nics []myripair.NIC) error {
	for {
		out, err := mon.Run([]byte(`{"execute":"query-devices"}`))
		if err != nil {
			return err
		}
		var r struct {
			Return []struct {
				Name      string `json:"name"`
				Connected bool   `json:"client-connected"`
				Link      *bool  `json:"link"`
				BusMaster bool   `json:"bus-master"`
			}
		}
		json.Unmarshal(out, &r)
		ok := 0
		for _, d := range r.Return {
			if !d.Connected || !d.BusMaster || d.Link == nil || !*d.Link {
				continue
			}
			// Up and running: the driver has sent something.
			c, err := mon.Run([]byte(`{"execute":"query-counters","arguments":{"name":"` + d.Name + `"}}`))
			var cr struct {
				Return struct {
					NIC map[string]uint64 `json:"nic"`
				}
			}
			if err == nil && json.Unmarshal(c, &cr) == nil && cr.Return.NIC["tx_frames"] > 0 {
				ok++
			}
		}
		if ok == len(nics) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("NICs not all connected with link up: %s", out)
		case <-time.After(time.Second):
		}
	}
}

// logCounters logs every NIC's counters as query-counters reports them.
func logCounters(h *harness.T, mon *qmp.SocketMonitor, nics []myripair.NIC) {
	for _, n := range nics {
		out, err := mon.Run([]byte(`{"execute":"query-counters","arguments":{"name":"` + n.Name + `"}}`))
		h.Logf("query-counters %s: %s %v", n.Name, out, err)
	}
}

// rawQMP is a line client for the abuse cases.
type rawQMP struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(path string) (*rawQMP, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	q := &rawQMP{c: c, r: bufio.NewReaderSize(c, 1<<20)}
	if _, err := q.reply(); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// reply reads the next non-event line.
func (q *rawQMP) reply() (map[string]any, error) {
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("not JSON: %q", line)
		}
		if _, ev := m["event"]; !ev {
			return m, nil
		}
	}
}

// class sends s and returns the error class of its reply ("" for a return).
func (q *rawQMP) class(s string) (string, error) {
	if _, err := q.c.Write([]byte(s + "\n")); err != nil {
		return "", err
	}
	m, err := q.reply()
	if err != nil {
		return "", err
	}
	if e, ok := m["error"].(map[string]any); ok {
		return fmt.Sprint(e["class"]), nil
	}
	return "", nil
}

// abuse runs issue #10's acceptance 2 cases against the control socket and
// returns every deviation; step hears the start of each step (for the
// log, to line lost pings up with the abuse). hold is how long the slow
// reader and the event flood last after the 100 clients.
func abuse(path string, mon *qmp.SocketMonitor, hold time.Duration, step func(string)) []string {
	var problems []string
	step("negotiation and error cases")
	q, err := dialRaw(path)
	if err != nil {
		return []string{err.Error()}
	}
	defer q.c.Close()
	cases := []struct{ name, in, want string }{
		{"command before qmp_capabilities", `{"execute":"query-devices"}`, "CommandNotFound"},
		{"negotiation", `{"execute":"qmp_capabilities"}`, ""},
		{"unknown command", `{"execute":"frobnicate"}`, "CommandNotFound"},
		{"bad arguments", `{"execute":"set_link","arguments":{"name":"myri0","up":"sideways"}}`, "GenericError"},
		{"unknown device", `{"execute":"set_link","arguments":{"name":"eth7","up":true}}`, "DeviceNotFound"},
		{"malformed JSON", `{"execute":,}`, "GenericError"},
		{"1 MiB line", `{"execute":"query-status","arguments":{"x":"` + strings.Repeat("A", 1<<20) + `"}}`, "GenericError"},
		{"still usable", `{"execute":"query-status"}`, ""},
	}
	for _, c := range cases {
		if c.name == "1 MiB line" {
			step(c.name)
		}
		got, err := q.class(c.in)
		if err != nil || got != c.want {
			problems = append(problems, fmt.Sprintf("%s: class %q (%v), want %q", c.name, got, err, c.want))
		}
	}
	// A client that never reads, while a rule that injects nothing fires
	// FAULT_INJECTED on every frame of the guests' traffic.
	step("slow reader and FAULT_INJECTED flood")
	slow, err := dialRaw(path)
	if err != nil {
		return append(problems, err.Error())
	}
	defer slow.c.Close()
	slow.c.Write([]byte(`{"execute":"qmp_capabilities"}{"execute":"query-status"}` + "\n"))
	if _, err := mon.Run([]byte(`{"execute":"fault-add","arguments":{"rule":"noise: wire.frame=none"}}`)); err != nil {
		problems = append(problems, "fault-add noise: "+err.Error())
	}
	// 100 clients at once, each negotiating and querying.
	step("100 clients")
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 100 {
		wg.Go(func() {
			c, err := dialRaw(path)
			if err == nil {
				defer c.c.Close()
				var cl string
				if cl, err = c.class(`{"execute":"qmp_capabilities"}`); err == nil && cl == "" {
					cl, err = c.class(`{"execute":"query-counters","arguments":{"name":"myri0"}}`)
				}
				if err == nil && cl != "" {
					err = fmt.Errorf("class %s", cl)
				}
			}
			if err != nil {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("client %d of 100: %v", i, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	step("hold")
	time.Sleep(hold)
	if _, err := mon.Run([]byte(`{"execute":"fault-del","arguments":{"id":"noise"}}`)); err != nil {
		problems = append(problems, "fault-del noise: "+err.Error())
	}
	step("done")
	return problems
}

// portDrops returns what the fabric dropped on each NIC's port (frames
// it could not deliver, frames it refused) as query-counters reports.
func portDrops(mon *qmp.SocketMonitor, nics []myripair.NIC) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, n := range nics {
		raw, err := mon.Run([]byte(`{"execute":"query-counters","arguments":{"name":"` + n.Name + `"}}`))
		if err != nil {
			return nil, err
		}
		var r struct {
			Return struct {
				Port map[string]uint64 `json:"port"`
			}
		}
		if err := json.Unmarshal(raw, &r); err != nil || r.Return.Port == nil {
			return nil, fmt.Errorf("query-counters %s: no port counters in %s", n.Name, raw)
		}
		out[n.Name] = r.Return.Port["rx_dropped"] + r.Return.Port["tx_dropped"] + r.Return.Port["tx_errors"]
	}
	return out, nil
}

// TestControlUnderAbuseWhilePinging is issue #10, acceptances 1 and 2 with
// guests: go-qemu's SocketMonitor drives the socket while two guests ping
// each other 300 times; meanwhile every abuse case runs (a command before
// negotiation, an unknown command, bad arguments, malformed JSON, a 1 MiB
// line, 100 clients at once, a client that never reads while events
// flood); every ping must be answered within e2e-net ping's 10 s reply
// wait, the fabric must drop nothing from the moment both NICs run, and
// no NIC may run out of receive buffers.
//
// Each guest stays up until the peer's last ping arrived (-peer-count):
// the guest whose series ended first used to power off under its peer's
// last pings (the 1% and more "lost" under load: a contiguous tail of
// sequence numbers, lost after that guest's NIC detached, nothing
// dropped by the device or the fabric).
func TestControlUnderAbuseWhilePinging(t *testing.T) {
	h := harness.New(t, env)
	srv, nics, path := controlServer(h, 2)
	ping := func(to string) string {
		return "e2e-net ping -to " + to + " -count 300 -interval 0.05 -wait 4m -reply-wait 10s -peer-count 300 -label peer"
	}
	a := myripair.NewScript(ipA).Step(ping(ipB)).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	b := myripair.NewScript(ipB).Step(ping(ipA)).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	mon, err := monitor(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	var problems []string
	var dropsBefore map[string]uint64
	done := make(chan struct{})
	ctx, cancel := context.WithTimeout(h.Context(), 6*time.Minute)
	// Joined even when a failed guest ends the test early (Guests'
	// Fatalf); the steps are logged as they happen for the same reason.
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		if err := waitConnected(ctx, mon, nics); err != nil {
			problems = []string{err.Error()}
			return
		}
		var err error
		if dropsBefore, err = portDrops(mon, nics); err != nil {
			problems = []string{err.Error()}
			return
		}
		problems = abuse(path, mon, 10*time.Second, func(s string) {
			h.Logf("abuse step at %s UTC: %s", time.Now().UTC().Format("15:04:05.000"), s)
		})
	}()
	runs := h.Guests(
		myripair.GuestSpec{Name: "a", NIC: nics[0], Script: a, Timeout: 8 * time.Minute, Require: join(driverResults, []string{"ping:peer"})}.Guest(),
		myripair.GuestSpec{Name: "b", NIC: nics[1], Script: b, Timeout: 8 * time.Minute, Require: join(driverResults, []string{"ping:peer"})}.Guest(),
	)
	<-done
	for _, p := range problems {
		h.Errorf("control: %s", p)
	}
	for _, r := range runs {
		p := mustFind(h, r, "ping:peer")
		start := time.UnixMilli(int64(myripair.FieldFloat(p.Detail, "start_unix") * 1000)).UTC()
		h.Logf("%s ping during the abuse (from %s UTC): %s", r.Guest, start.Format("15:04:05.000"), p.Detail)
		if myripair.Field(p.Detail, "loss") != "0%" || myripair.Field(p.Detail, "missing") != "-" || myripair.Field(p.Detail, "peer_last") != "seen" {
			h.Errorf("%s: ping during the abuse: %s", r.Guest, p.Detail)
		}
		st, _ := myripair.Find(r, "ethtool.stats")
		for _, k := range []string{"dropped_no_small_buffer", "dropped_no_big_buffer", "dropped_overrun"} {
			if v := myripair.Field(st.Detail, k); v != "0" {
				h.Errorf("%s: the driver's %s is %q, want 0", r.Guest, k, v)
			}
		}
		h.Logf("%s ethtool.stats: %s", r.Guest, st.Detail)
	}
	if dropsBefore != nil {
		after, err := portDrops(mon, nics)
		if err != nil {
			h.Errorf("%v", err)
		}
		for _, n := range nics {
			if after[n.Name] != dropsBefore[n.Name] {
				h.Errorf("fabric: %s's port dropped %d frames while both NICs ran", n.Name, after[n.Name]-dropsBefore[n.Name])
			}
		}
	}
	logCounters(h, mon, nics)
	mon.Disconnect()
	checkServer(h, srv, nics)
}

// TestFaultsSeededWire is issue #10, acceptance 3, "seeded wire loss,
// corruption, duplication and reordering with the file still intact":
// the rules are armed from a file at start with one seed, B sends A
// 16 MiB, and the SHA-256 must match on both ends; the fault log must
// record firings of all four rules.
func TestFaultsSeededWire(t *testing.T) {
	h := harness.New(t, env)
	rules := filepath.Join(h.Dir, "rules")
	os.WriteFile(rules, []byte(`# issue #10 acceptance 3: seeded wire impairment
loss: wire.frame=loss; probability=1
corrupt: wire.frame=corrupt(mask=0x10); probability=0.5
dup: wire.frame=dup; probability=0.5
reorder: wire.frame=reorder; probability=0.5
`), 0o644)
	flog := filepath.Join(h.Dir, "fault.log")
	srv, nics, _ := controlServer(h, 2, "--faults", rules, "--fault-seed", "42", "--fault-log", flog)
	const size = 16 << 20
	a := myripair.NewScript(ipA).Step(fmt.Sprintf("e2e-net tcp-serve -port 5001 -conns 1 -bytes %d -label wire -timeout 6m", size)).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	b := myripair.NewScript(ipB).Step(fmt.Sprintf("e2e-net tcp-send -to %s -port 5001 -conns 1 -bytes %d -seed 7 -label wire -timeout 6m", ipA, size)).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	runs := h.Guests(
		myripair.GuestSpec{Name: "a", NIC: nics[0], Script: a, Timeout: 8 * time.Minute, Require: driverResults}.Guest(),
		myripair.GuestSpec{Name: "b", NIC: nics[1], Script: b, Timeout: 8 * time.Minute, Require: driverResults}.Guest(),
	)
	tr, problems := myripair.Transfers(runs[1], runs[0], "wire", 1, size)
	for _, p := range problems {
		h.Errorf("transfer under wire faults: %s", p)
	}
	h.Logf("16 MiB through seeded loss, corruption, duplication and reordering: SHA-256 %s on both ends, %.2f MB/s", tr.GotSHA, tr.MBps)
	checkServer(h, srv, nics)
	text, err := os.ReadFile(flog)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		var f struct{ Rule string }
		json.Unmarshal([]byte(line), &f)
		count[f.Rule]++
	}
	for _, r := range []string{"loss", "corrupt", "dup", "reorder"} {
		if count[r] == 0 {
			h.Errorf("fault log: rule %s never fired", r)
		}
	}
	h.Logf("fault log firings per rule: %v", count)
}

// TestFaultsLinkFlaps is issue #10, acceptance 1 (set_link down and up and
// LINK_CHANGED through go-qemu) and acceptance 3's "20 link flaps": while
// B streams to A, the test flaps A's link 20 times with set_link; the
// guest's driver must log "link down" and "link up" each time, and the
// stream must arrive whole.
func TestFaultsLinkFlaps(t *testing.T) {
	h := harness.New(t, env)
	srv, nics, path := controlServer(h, 2)
	const flaps = 20
	a := myripair.NewScript(ipA).Raw(`e2e-net tcp-serve -port 5001 -conns 1 -label flap -timeout 9m -stop-file /tmp/stop -progress-file /tmp/rx &
serve=$!`).Must("e2e-net grows /tmp/rx 120s -label start").Raw(fmt.Sprintf(`n=0
i=0
while [ $i -lt 600 ]; do
	n=$(dmesg | grep -c 'eth0: link down')
	[ "$n" -ge %d ] && break
	sleep 1
	i=$((i+1))
done
echo "flaps seen in dmesg: $n"
e2e-net link-wait eth0 60s -label after-flaps || rc=1
e2e-net grows /tmp/rx 90s -label after-flaps || rc=1
touch /tmp/stop
wait $serve || rc=1`, flaps)).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, "") + " -want down='link down'")
	b := myripair.NewScript(ipB).Step(fmt.Sprintf("e2e-net tcp-send -to %s -port 5001 -conns 1 -bytes 0 -label flap -timeout 9m", ipA)).Step("e2e-net ethtool stats eth0 -dma").Step(dmesgCheck(true, ""))
	mon, err := monitor(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	events, _ := mon.Events(context.Background())
	// go-qemu's event channel is unbuffered and its reader blocks on it:
	// drain it all the time, keeping the link changes.
	linkEvents := make(chan qmp.Event, 4*flaps)
	go func() {
		for ev := range events {
			if ev.Event == "LINK_CHANGED" {
				select {
				case linkEvents <- ev:
				default:
				}
			}
		}
	}()
	var problems []string
	var changes int
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(h.Context(), 6*time.Minute)
		defer cancel()
		if err := waitConnected(ctx, mon, nics); err != nil {
			problems = append(problems, err.Error())
			return
		}
		time.Sleep(20 * time.Second) // let the stream start
		r := raw.NewMonitor(mon)
		for i := range flaps {
			for _, up := range []bool{false, true} {
				if err := r.SetLink("myri0", up); err != nil {
					problems = append(problems, fmt.Sprintf("flap %d set_link %v: %v", i, up, err))
					return
				}
				select {
				case ev := <-linkEvents:
					if ev.Data["device"] == "myri0" && ev.Data["up"] == up {
						changes++
					}
				case <-time.After(time.Minute):
					problems = append(problems, fmt.Sprintf("flap %d: no LINK_CHANGED", i))
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
	}()
	runs := h.Guests(
		myripair.GuestSpec{Name: "a", NIC: nics[0], Script: a, Timeout: 10 * time.Minute,
			Require: join(driverResults, []string{"link:after-flaps", "grows:after-flaps", "dmesg:down"})}.Guest(),
		myripair.GuestSpec{Name: "b", NIC: nics[1], Script: b, Timeout: 10 * time.Minute, Require: driverResults}.Guest(),
	)
	<-done
	for _, p := range problems {
		h.Errorf("control: %s", p)
	}
	if changes != 2*flaps {
		h.Errorf("%d LINK_CHANGED events, want %d", changes, 2*flaps)
	}
	tr, tp := myripair.Transfers(runs[1], runs[0], "flap", 1, 0)
	for _, p := range tp {
		h.Errorf("stream across the flaps: %s", p)
	}
	h.Logf("stream across %d link flaps: %d bytes, SHA-256 %s on both ends", flaps, tr.Bytes, tr.GotSHA)
	mon.Disconnect()
	c := checkServer(h, srv, nics)
	if c["myri0"]["link_down_events"] < flaps {
		h.Errorf("server: A's NIC reported %d link-down events, want at least %d", c["myri0"]["link_down_events"], flaps)
	}
}
