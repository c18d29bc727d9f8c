//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

// determinismRules are the seeded wire faults of TestFaultsDeterminism:
// a fifth of the frames lost, a fifth of the rest corrupted.
const determinismRules = `# issue #10 acceptance 5: seeded wire loss and corruption
loss: wire.frame=loss; probability=20
flip: wire.frame=corrupt; probability=20
`

// determinismPings is how many echo requests the guest sends out of each NIC.
const determinismPings = 200

// echoSeqs returns the ICMP echo request sequence numbers among frames
// (IPv4 without options), and how many frames were something else.
func echoSeqs(frames [][]byte) (seqs map[int]bool, other int) {
	seqs = map[int]bool{}
	for _, f := range frames {
		if len(f) >= 42 && f[12] == 0x08 && f[13] == 0x00 && f[14] == 0x45 && f[23] == 1 && f[34] == 8 {
			seqs[int(binary.BigEndian.Uint16(f[40:42]))] = true
			continue
		}
		other++
	}
	return seqs, other
}

// determinismRun is one server of TestFaultsDeterminism: one NIC, the
// seed or the replay, its fault log, and the tap on its switch.
type determinismRun struct {
	name string
	args []string
	srv  *harness.Server
	nic  myripair.NIC
	log  string
	tap  *hostPeer

	frames [][]byte
}

// start runs the server: a NIC named myri0 (so that every log names the
// same device), the given fault arguments, its log, and a dgram port to
// the test's tap.
func (r *determinismRun) start(h *harness.T, mac string) {
	h.Helper()
	var err error
	tapPath, portPath := h.Socket(r.name+"-tap"), h.Socket(r.name+"-port")
	if r.tap, err = newHostPeer(tapPath, portPath, nil, nil, true); err != nil {
		h.Fatal(err)
	}
	h.Cleanup(func() { r.tap.close() })
	r.nic = myripair.NIC{Name: "myri0", Socket: h.Socket(r.name), MAC: mac}
	r.log = filepath.Join(h.Dir, r.name+".faults.log")
	args := append(myripair.ServerArgs([]myripair.NIC{r.nic}, 1, "", "info"),
		"--port", "dgram=unix:"+portPath+",unix:"+tapPath, "--fault-log", r.log)
	r.srv = h.Server(r.name, append(args, r.args...)...)
}

// stop stops the server (which flushes its fault log) and the tap.
func (r *determinismRun) stop(h *harness.T) []byte {
	h.Helper()
	myripair.WaitDetached(r.srv, 1, 10*time.Second)
	if err := r.srv.Stop(); err != nil {
		h.Errorf("%s: %v", r.name, err)
	}
	for _, l := range myripair.Problems(r.srv.Log()) {
		if !strings.Contains(l, "fault injected") {
			h.Errorf("%s: server log: %s", r.name, l)
		}
	}
	r.frames = r.tap.close()
	text, err := os.ReadFile(r.log)
	if err != nil {
		h.Fatal(err)
	}
	return text
}

// determinismGuest pings a silent address out of every NIC in turn: a
// static neighbour (no ARP), IPv6 off (no router or neighbour
// solicitations, no MLD reports), so each NIC sends exactly the echo
// requests, in order, whatever the guest's timing.
func determinismGuest(name string, runs []*determinismRun) harness.Guest {
	var devs []vm.Device
	var b strings.Builder
	b.WriteString("rc=0\nip link set lo up\n")
	for i, r := range runs {
		devs = append(devs, vm.Device{ID: fmt.Sprintf("nic%d", i), Socket: r.nic.Socket, Props: nicProps()})
		fmt.Fprintf(&b, `ip addr add 10.0.%[1]d.1/24 dev eth%[2]d || rc=1
arp -i eth%[2]d -s 10.0.%[1]d.9 02:00:00:00:00:09 || rc=1
ip link set eth%[2]d up || rc=1
e2e-net link-wait eth%[2]d 60s -label %[3]s || rc=1
ping -c %[4]d -i 0.02 -W 1 10.0.%[1]d.9 > /dev/null 2>&1
echo "E2E-RESULT name=sent:%[3]s status=info detail=$(cat /sys/class/net/eth%[2]d/statistics/tx_packets) packets"
`, i+1, i, r.name, determinismPings)
	}
	b.WriteString(driverReactions())
	b.WriteString("\nexit $rc\n")
	req := []string{"dmesg.oops"}
	for _, r := range runs {
		req = append(req, "link:"+r.name)
	}
	return harness.Guest{
		Name:     name,
		Programs: []string{myripair.NetTool},
		Modules:  []string{"myri10ge"},
		Devices:  devs,
		Append:   "ipv6.disable=1",
		Scenario: b.String(),
		Timeout:  8 * time.Minute,
		// The machine is shared: a TCG boot has taken 140 s under load.
		BootTimeout: 6 * time.Minute,
		Require:     req,
	}
}

// firingsOf parses a fault log into its lines' (rule, op) and counts.
func firingsOf(text []byte) (ops map[string][]uint64, lines int) {
	ops = map[string][]uint64{}
	for _, l := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		if l == "" {
			continue
		}
		var f struct {
			Rule string
			Op   uint64
		}
		json.Unmarshal([]byte(l), &f)
		ops[f.Rule] = append(ops[f.Rule], f.Op)
		lines++
	}
	return ops, lines
}

// TestFaultsDeterminism is issue #10, acceptance 5, with a real guest and
// the unmodified myri10ge. The fault log is keyed by each door's
// operation counter, so a run is reproducible when the device's operation
// sequence at the door is. The scenario makes it so at the wire door: the
// guest sends exactly 200 ICMP echo requests out of a NIC and nothing
// else (IPv6 off, a static neighbour), so the n-th frame the wire door
// sees is echo request n-1 in every run, however TCG schedules the guest.
// Seeded loss and corruption rules fire on those frames.
//
// Two boots of one guest, each with two NICs, each NIC on its own server:
// boot 1 runs seed 42 and seed 7, boot 2 seed 42 again and a server with
// no rules replaying seed 42's log of boot 1. Every server writes its log
// (--fault-log) and floods the frames that crossed its wire door to a
// dgram port the test reads. The logs of seed 42 in both boots must be
// byte-identical, seed 7's must differ, and the replay must write the
// seed-42 log again, byte for byte. The frames that arrived must be the
// echo requests the logs do not say were lost, with the logs' losses
// missing.
func TestFaultsDeterminism(t *testing.T) {
	h := harness.New(t, env)
	start := time.Now()
	rules := filepath.Join(h.Dir, "rules")
	if err := os.WriteFile(rules, []byte(determinismRules), 0o644); err != nil {
		t.Fatal(err)
	}
	seed42 := &determinismRun{name: "seed42", args: []string{"--faults", rules, "--fault-seed", "42"}}
	seed7 := &determinismRun{name: "seed7", args: []string{"--faults", rules, "--fault-seed", "7"}}
	seed42.start(h, "00:60:dd:00:00:01")
	seed7.start(h, "00:60:dd:00:00:02")
	r1 := h.Guest(determinismGuest("boot1", []*determinismRun{seed42, seed7}))
	if r1.Err != nil {
		h.Fatalf("%s", r1.Report(seed42.srv, seed7.srv))
	}
	log42, log7 := seed42.stop(h), seed7.stop(h)

	again := &determinismRun{name: "again42", args: []string{"--faults", rules, "--fault-seed", "42"}}
	replay := &determinismRun{name: "replay42", args: []string{"--fault-replay", seed42.log}}
	again.start(h, "00:60:dd:00:00:01")
	replay.start(h, "00:60:dd:00:00:02")
	r2 := h.Guest(determinismGuest("boot2", []*determinismRun{again, replay}))
	if r2.Err != nil {
		h.Fatalf("%s", r2.Report(again.srv, replay.srv))
	}
	logAgain, logReplay := again.stop(h), replay.stop(h)

	for _, r := range []*harness.Run{r1, r2} {
		for _, res := range results(r, "sent:seed42") {
			h.Logf("%s %s: %s", r.Guest, res.Name, res.Detail)
		}
	}
	ops42, n42 := firingsOf(log42)
	_, n7 := firingsOf(log7)
	h.Logf("seed 42, boot 1: %d firings (%d losses, %d corruptions), %d bytes, first lines:\n%s", n42,
		len(ops42["loss"]), len(ops42["flip"]), len(log42), head(log42, 3))
	h.Logf("seed 7, boot 1: %d firings, %d bytes, first lines:\n%s", n7, len(log7), head(log7, 3))
	if n42 == 0 || len(ops42["loss"]) == 0 || len(ops42["flip"]) == 0 {
		h.Errorf("seed 42 did not fire both rules: %v", ops42)
	}
	if !bytes.Equal(log42, logAgain) {
		h.Errorf("seed 42: boot 2's log differs from boot 1's:\n%s", diffLines(log42, logAgain))
	} else {
		h.Logf("seed 42: boot 2's log is byte-identical to boot 1's (%d bytes)", len(logAgain))
	}
	if bytes.Equal(log42, log7) {
		h.Errorf("seed 7 wrote the same log as seed 42")
	} else {
		h.Logf("seed 7's log differs from seed 42's")
	}
	if !bytes.Equal(log42, logReplay) {
		h.Errorf("the replay of seed 42's log wrote a different log:\n%s", diffLines(log42, logReplay))
	} else {
		h.Logf("--fault-replay of seed 42's log wrote it again, byte-identical")
	}

	// The wire's side: each server's tap saw exactly the echo requests its
	// log did not lose.
	for _, r := range []*determinismRun{seed42, seed7, again, replay} {
		text, _ := os.ReadFile(r.log)
		ops, _ := firingsOf(text)
		lost := map[int]bool{}
		for _, op := range ops["loss"] {
			lost[int(op)-1] = true // op 1 is echo request 0
		}
		if len(r.frames) != determinismPings-len(lost) {
			h.Errorf("%s: %d frames reached the tap, want %d (%d sent, %d lost)", r.name, len(r.frames), determinismPings-len(lost), determinismPings, len(lost))
		}
		seqs, other := echoSeqs(r.frames)
		var wrong []int
		for seq := range determinismPings {
			if seqs[seq] == lost[seq] {
				wrong = append(wrong, seq)
			}
		}
		sort.Ints(wrong)
		if other != 0 || len(wrong) != 0 {
			// A corruption can hit the header bytes the check reads; it
			// must then be one of the log's corrupted frames.
			corrupt := map[int]bool{}
			for _, op := range ops["flip"] {
				corrupt[int(op)-1] = true
			}
			var unexplained []int
			for _, seq := range wrong {
				if !corrupt[seq] {
					unexplained = append(unexplained, seq)
				}
			}
			if len(unexplained) > 0 || other > len(ops["flip"]) {
				h.Errorf("%s: the tap's echo requests disagree with the log at seqs %v (%d frames not echo requests)", r.name, unexplained, other)
			}
		}
		h.Logf("%s: %d frames reached the tap: %d echo requests, %d other; the log lost %d", r.name, len(r.frames), len(seqs), other, len(lost))
	}
	h.Logf("wall time %.0f s (boot 1 QEMU %.1f s, boot 2 QEMU %.1f s)", time.Since(start).Seconds(), r1.Elapsed.Seconds(), r2.Elapsed.Seconds())
}

// nicProps are the vfio-user-pci properties myripair gives every NIC.
func nicProps() map[string]any {
	return myripair.GuestSpec{Script: &myripair.Script{}}.Guest().Devices[0].Props
}

// head returns the first n lines of text.
func head(text []byte, n int) string {
	lines := strings.SplitN(string(text), "\n", n+1)
	return "  " + strings.Join(lines[:min(n, len(lines))], "\n  ")
}

// diffLines shows the first lines where a and b differ.
func diffLines(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	var out []string
	for i := 0; i < max(len(la), len(lb)) && len(out) < 6; i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n  - %s\n  + %s", i+1, x, y))
		}
	}
	return fmt.Sprintf("%d vs %d lines\n%s", len(la), len(lb), strings.Join(out, "\n"))
}
