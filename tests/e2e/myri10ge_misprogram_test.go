//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

// abuseResults are the checks e2e-myri-abuse must report as passed, one
// per guest mistake and the device's answer to it.
var abuseResults = []string{
	"abuse.found", "abuse.enable", "abuse.bar0", "abuse.dma", "abuse.bringup", "abuse.peers",
	"cmd.up_after_reset", "cmd.up_before_stats", "cmd.absent_slice", "cmd.unknown",
	"cmd.unknown_mcp_version", "cmd.intrq_size", "cmd.dma_test_outside_ram", "cmd.still_answers",
	"cmd.response_outside_ram",
	"tx.rdma_count_200", "tx.length_ffff", "tx.tso_mss0", "tx.after_malformed",
	"tx.outside_ram", "tx.halted", "tx.recovered",
	"tx.torn_chain", "tx.rewritten_behind", "tx.past_consumer", "tx.after_poller_abuse",
	"rx.out_of_order", "rx.in_order_after", "rx.outside_ram", "rx.recovered",
	"abuse.done",
}

// goodResults are what each well-behaved guest must report.
var goodResults = []string{
	"insmod:dca", "insmod:myri10ge", "net.dev", "net.carrier", "ping.peer", "ping.start",
	"abuser.done", "ping.loss",
}

// The addresses of the scenario: the good guests' own and the ones they
// add once their ping runs (the abuser waits for those to answer ARP), the
// abuser's, and the one the abuser's final ARP requests come from (the
// good guests stop pinging when it shows in their ARP table).
const (
	abuserIP = "10.0.0.3"
	doneIP   = "10.0.0.99"
)

// goodScenario configures the myri10ge interface, waits for carrier and
// for the peer, then pings it in chunks of 20 until the abuser's end
// shows in the ARP table, and prints the totals.
func goodScenario(ip, peer, ready string) string {
	return fmt.Sprintf(`ip=%s peer=%s ready=%s done=%s
res() { echo "E2E-RESULT name=$1 status=$2 detail=$3"; }
now() { cut -d. -f1 /proc/uptime; }
dev=
for d in /sys/class/net/*; do
	case "$(readlink "$d/device/driver")" in */myri10ge) dev=${d##*/};; esac
done
if [ -z "$dev" ]; then res net.dev fail "no interface of the myri10ge driver in /sys/class/net"; exit 1; fi
if ! ip addr add "$ip/24" dev "$dev" || ! ip link set "$dev" up; then res net.dev fail "configuring $dev failed"; exit 1; fi
res net.dev pass "$dev up with $ip/24"
end=$(( $(now) + 30 ))
while [ "$(cat "/sys/class/net/$dev/carrier" 2>/dev/null)" != 1 ]; do
	if [ "$(now)" -ge $end ]; then res net.carrier fail "no carrier on $dev within 30 s"; exit 1; fi
	sleep 0.1
done
res net.carrier pass "carrier on $dev"
tries=0 end=$(( $(now) + 150 ))
until ping -c 1 -W 1 -q "$peer" >/dev/null 2>&1; do
	tries=$((tries+1))
	if [ "$(now)" -ge $end ]; then res ping.peer fail "$peer did not answer within 150 s"; exit 1; fi
	sleep 0.2
done
res ping.peer pass "$peer answers ($tries unanswered tries before)"
ip addr add "$ready/24" dev "$dev" || { res ping.start fail "adding $ready failed"; exit 1; }
res ping.start pass "pinging $peer in chunks of 20 every 0.1 s; $ready announced to the abuser"
tx=0 rx=0 chunks=0 rc=0 end=$(( $(now) + 120 ))
while :; do
	# e2e-net ping, not busybox's: busybox gives up on replies about 1 s
	# after the last request whatever -W says, so a reply late under a
	# loaded host counted as lost.
	out=$(e2e-net ping -to "$peer" -count 20 -interval 0.1 -wait 10s -reply-wait 10s -label chunk 2>&1 | grep 'name=ping:chunk ')
	t=$(echo "$out" | sed -n 's/.*transmitted=\([0-9]*\).*/\1/p')
	r=$(echo "$out" | sed -n 's/.* received=\([0-9]*\).*/\1/p')
	# A chunk without its summary (ping died) counts as 20 lost.
	tx=$((tx + ${t:-20})) rx=$((rx + ${r:-0})) chunks=$((chunks+1))
	if grep -q "^$done " /proc/net/arp; then res abuser.done pass "$done in the ARP table after $chunks chunks"; break; fi
	if [ "$(now)" -ge $end ]; then res abuser.done fail "no ARP from $done (the abuser's end) within 120 s"; rc=1; break; fi
done
res ping.loss info "transmitted=$tx received=$rx to $peer while the abuser ran"
# Keep answering the peer's pings until its last chunk is over too (its
# replies may take up to -reply-wait).
sleep 12
exit $rc
`, ip, peer, ready, doneIP)
}

// TestMyri10geMisprogram is issue #4's acceptance line 7 in real guests:
// one myriemu process serves three Myri-10G NICs on its switch. Guest
// "abuser" drives NIC 0 from user space as a driver that gets everything
// wrong (commands out of order, DMA outside its RAM, absurd send
// descriptors, send descriptors that change under the device's poller
// (issue 15, acceptance 5: a torn chain, a slot rewritten behind the
// consumer, a producer that laps the consumer), receive buffers out of
// order and outside RAM) and checks
// the device's answer to each; guests "good-a" and "good-b" run the
// unmodified myri10ge driver on NICs 1 and 2 and ping each other the whole
// time. Every mistake must get the device's documented behaviour and a
// log line naming the abuser's NIC, the good guests must lose no pings,
// and the server must still run, with no panic.
func TestMyri10geMisprogram(t *testing.T) {
	h := harness.New(t, env)
	nics := []string{"myri0", "myri1", "myri2"}
	args := []string{"serve", "--log-format", "json"}
	var socks []string
	for _, n := range nics {
		s := h.Socket(n)
		socks = append(socks, s)
		args = append(args, "--device", "myri10ge,socket="+s+",name="+n+myripair.PIOKey())
	}
	srv := h.Server("myriemu", args...)

	const timeout = 240 * time.Second // from E2E-BOOT; the abuser bounds itself at 200 s
	abuser := harness.Guest{
		Name:     "abuser",
		Programs: []string{"./guestdrv/cmd/e2e-myri-abuse"},
		Devices:  []vm.Device{{ID: "nic0", Socket: socks[0], Props: myripair.DeviceProps()}},
		Scenario: "e2e-myri-abuse -ip " + abuserIP + " -ready 10.0.0.11,10.0.0.12 -done " + doneIP,
		Require:  abuseResults,
		Timeout:  timeout,
	}
	good := func(name string, nic int, ip, peer, ready string) harness.Guest {
		return harness.Guest{
			Name:     name,
			Modules:  []string{"myri10ge"},
			Programs: []string{"./guestdrv/cmd/e2e-net"},
			Devices:  []vm.Device{{ID: fmt.Sprintf("nic%d", nic), Socket: socks[nic], Props: myripair.DeviceProps()}},
			Scenario: goodScenario(ip, peer, ready),
			Require:  goodResults,
			Timeout:  timeout,
		}
	}
	guests := []harness.Guest{
		abuser,
		good("good-a", 1, "10.0.0.1", "10.0.0.2", "10.0.0.11"),
		good("good-b", 2, "10.0.0.2", "10.0.0.1", "10.0.0.12"),
	}
	for i := range guests {
		guests[i].Dir = filepath.Join(h.Dir, guests[i].Name)
	}
	// RunGuests rather than h.Guests: a failed guest must not stop the
	// server checks below, which say what the device did.
	start := time.Now()
	runs := h.Env.RunGuests(h.Context(), guests...)
	t.Logf("three guests in %.1fs", time.Since(start).Seconds())
	for _, r := range runs {
		t.Logf("guest %s: QEMU %.1fs, /init after %.1fs, err=%v", r.Guest, r.Elapsed.Seconds(), r.BootTime.Seconds(), r.Err)
		if r.Err != nil {
			t.Errorf("%s", r.Report(srv))
		}
	}

	// The abuser: every check passed.
	if c := runs[0].Console; c != nil {
		for _, name := range abuseResults {
			switch res, ok := c.Find(name); {
			case !ok:
				t.Errorf("abuser: no %s result", name)
			case res.Status != result.Pass:
				t.Errorf("abuser: %s: %s %q, want pass", name, res.Status, res.Detail)
			}
		}
		t.Logf("abuser results:\n%s", harness.Results(runs[0]))
	}
	// The good guests: pinged each other the whole time without loss.
	for _, r := range runs[1:] {
		if r.Console == nil {
			continue
		}
		res, ok := r.Console.Find("ping.loss")
		if !ok {
			t.Errorf("%s: no ping.loss result", r.Guest)
			continue
		}
		tx, rx, err := pingCounts(res.Detail)
		switch {
		case err != nil:
			t.Errorf("%s: ping.loss %q: %v", r.Guest, res.Detail, err)
		case tx < 20:
			t.Errorf("%s: only %d pings sent while the abuser ran; the traffic did not span its run", r.Guest, tx)
		case (tx-rx)*100 > tx:
			t.Errorf("%s: %d of %d pings lost while the abuser ran; want at most 1%%", r.Guest, tx-rx, tx)
		default:
			t.Logf("%s: %d pings, %d answered (%.1f%% loss) while the abuser ran", r.Guest, tx, rx, 100*float64(tx-rx)/float64(tx))
		}
	}

	// The server: still running, no panic, a log line for every mistake
	// on the abuser's NIC and none for the others.
	select {
	case <-srv.Exited():
		t.Errorf("the server exited during the scenario; its log:\n%s", srv.Log())
	default:
	}
	checkMisprogramLog(t, srv.Log(), nics[0], nics[1:])
}

var pingCountsRE = regexp.MustCompile(`transmitted=(\d+) received=(\d+)`)

func pingCounts(detail string) (tx, rx int, err error) {
	m := pingCountsRE.FindStringSubmatch(detail)
	if m == nil {
		return 0, 0, fmt.Errorf("no transmitted=N received=M")
	}
	tx, _ = strconv.Atoi(m[1])
	rx, _ = strconv.Atoi(m[2])
	return tx, rx, nil
}

// logLine is one line of the server's JSON log (logrus fields included).
type logLine struct {
	Time   time.Time `json:"time"`
	Level  string    `json:"level"`
	Msg    string    `json:"msg"`
	Device string    `json:"device"`
	Fields map[string]any
}

func parseServerLog(log string) ([]logLine, []string) {
	var lines []logLine
	var other []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.HasPrefix(l, "{") {
			if strings.TrimSpace(l) != "" {
				other = append(other, l)
			}
			continue
		}
		var ll logLine
		if err := json.Unmarshal([]byte(l), &ll); err != nil {
			other = append(other, l)
			continue
		}
		_ = json.Unmarshal([]byte(l), &ll.Fields)
		lines = append(lines, ll)
	}
	return lines, other
}

// misprogramLogs are the device's log lines the abuser's mistakes must
// produce (device/myri10ge/README.md, "Guest mistakes"): level, message,
// and a field that must match, with the least number of such lines.
var misprogramLogs = []struct {
	level, msg, key, val string
	min                  int
}{
	{"warning", "ETHERNET_UP before SET_INTRQ_DMA/SET_STATS_DMA", "slice", "0", 2},
	{"warning", "ring offset for absent slice", "slice", "99", 1},
	{"warning", "interrupt queue size not a power of two slots", "bytes", "1000", 1},
	{"warning", "DMA failed", "dma", "DMA test read", 1},
	{"warning", "DMA failed", "dma", "command response", 1},
	{"warning", "malformed send chain dropped", "", "", 3},
	{"warning", "send descriptor without FIRST skipped", "slice", "0", 1},
	{"warning", "DMA failed", "dma", "send gather", 1},
	{"warning", "receive buffers posted out of order", "group", "1", 1},
	{"warning", "DMA failed", "dma", "receive buffer", 1},
	{"error", "DMA abort: slice halted until the driver resets the NIC", "slice", "0", 2},
}

func checkMisprogramLog(t *testing.T, log, abuser string, good []string) {
	t.Helper()
	if strings.Contains(strings.ToLower(log), "panic") {
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(strings.ToLower(l), "panic") {
				t.Errorf("server log has a panic line: %s", l)
			}
		}
	}
	lines, _ := parseServerLog(log)
	var upTimes []time.Time
	for _, l := range lines {
		for _, g := range good {
			if l.Device == g && l.Msg == "ethernet up" {
				upTimes = append(upTimes, l.Time)
			}
		}
	}
	var first time.Time
	for _, want := range misprogramLogs {
		n := 0
		for _, l := range lines {
			if l.Device != abuser || l.Level != want.level || l.Msg != want.msg {
				continue
			}
			if want.key != "" && fmt.Sprint(l.Fields[want.key]) != want.val {
				continue
			}
			n++
			if first.IsZero() || l.Time.Before(first) {
				first = l.Time
			}
		}
		field := ""
		if want.key != "" {
			field = fmt.Sprintf(" %s=%s", want.key, want.val)
		}
		if n < want.min {
			t.Errorf("server log: %d %s lines %q%s on %s, want at least %d", n, want.level, want.msg, field, abuser, want.min)
		} else {
			t.Logf("server log: %d× %s %q%s on %s", n, want.level, want.msg, field, abuser)
		}
	}
	// The good NICs saw no guest mistake and no DMA failure, and were up
	// before the abuse started.
	for _, l := range lines {
		for _, g := range good {
			if l.Device == g && (l.Level == "warning" || l.Level == "error") {
				t.Errorf("server log: %s line on %s, a well-behaved guest's NIC: %s %v", l.Level, g, l.Msg, l.Fields)
			}
		}
	}
	if len(upTimes) != len(good) {
		t.Errorf("server log: %d \"ethernet up\" lines for %v, want one each", len(upTimes), good)
	}
	for _, u := range upTimes {
		if !first.IsZero() && first.Before(u) {
			t.Errorf("server log: the abuse started at %v, before a good NIC came up at %v", first, u)
		}
	}
}
