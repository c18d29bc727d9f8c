//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// TestFaultsMailbox is issue #10, acceptance 3, for the firmware mailbox:
// a command timeout, an error status, and a command slow on either side
// of the driver's 15 ms timeout. The rules, armed from a file at start,
// step through blkdebug states on MXGEFW_CMD_SET_MTU, which the driver
// sends at every open: the first open passes; A then cycles its link
// down and up, and the opens meet in turn a timeout, an ERROR_BUSY
// status, a response 5 ms late (under the boundary: open succeeds) and
// one 500 ms late (over it: a timeout again). The boundary is the
// driver's 15 polls of msleep(1), each at least a jiffy: 60 ms at HZ=250,
// more under a loaded TCG; a 60 ms late response still made it in a first
// run. A failed open leaves the
// link down; the next cycle must bring it back. A's driver must log its
// own "timed out" and "failed" lines, and afterwards A must ping B and
// receive 16 MiB from it with equal SHA-256.
func TestFaultsMailbox(t *testing.T) {
	h := harness.New(t, env)
	rules := filepath.Join(h.Dir, "rules")
	os.WriteFile(rules, []byte(`# issue #10 acceptance 3: the mailbox's error paths, one open after another
timeout: fw.cmd=timeout; opcode=SET_MTU; device=myri0; after=1; once; new_state=2
error: fw.cmd=error(other); opcode=SET_MTU; device=myri0; state=2; once; new_state=3
under: fw.cmd=slow(delay=5ms); opcode=SET_MTU; device=myri0; state=3; once; new_state=4
over: fw.cmd=slow(delay=500ms); opcode=SET_MTU; device=myri0; state=4; once; new_state=5
`), 0o644)
	srv, nics, _ := controlServer(h, 2, "--faults", rules, "--fault-log", filepath.Join(h.Dir, "fault.log"))
	const size = 16 << 20
	cycle := func(label string) string {
		return fmt.Sprintf(`ip link set eth0 down
ip link set eth0 up || true
sleep 2
if [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; then echo "E2E-RESULT name=open:%[1]s status=info detail=carrier=1"; else echo "E2E-RESULT name=open:%[1]s status=info detail=carrier=0"; fi`, label)
	}
	a := myripair.NewScript(ipA).
		Raw(cycle("timeout")).Raw(cycle("error")).Raw(cycle("under")).Raw(cycle("over")).Raw(cycle("recovered")).
		Must("e2e-net link-wait eth0 60s -label recovered").
		Step("e2e-net ping -to " + ipB + " -count 20 -interval 0.1 -wait 2m -label peer").
		Step(fmt.Sprintf("e2e-net tcp-serve -port 5001 -conns 1 -bytes %d -label mbox -timeout 5m", size)).
		Step("e2e-net ethtool stats eth0 -dma").
		Raw(driverReactions([2]string{"timeout", "timed out"}, [2]string{"failed", "failed, result"}))
	// B only sends: a ping of its own would overlap A's link cycles.
	b := myripair.NewScript(ipB).
		Step(fmt.Sprintf("e2e-net tcp-send -to %s -port 5001 -conns 1 -bytes %d -seed 3 -label mbox -timeout 5m", ipA, size)).
		Step("e2e-net ethtool stats eth0 -dma").Raw(driverReactions())
	runs := h.Guests(
		myripair.GuestSpec{Name: "a", NIC: nics[0], Script: a, Timeout: 10 * time.Minute,
			Require: []string{"link:eth0", "link:recovered", "ping:peer", "dmesg:timeout", "dmesg:failed", "dmesg.oops"}}.Guest(),
		myripair.GuestSpec{Name: "b", NIC: nics[1], Script: b, Timeout: 10 * time.Minute, Require: []string{"link:eth0", "ethtool.dma", "dmesg.oops"}}.Guest(),
	)
	ra, rb := runs[0], runs[1]
	for _, l := range []string{"timeout", "error", "under", "over", "recovered"} {
		if r, ok := myripair.Find(ra, "open:"+l); ok {
			h.Logf("a: open after the %s step: %s", l, r.Detail)
		}
	}
	for _, w := range []string{"dmesg:timeout", "dmesg:failed", "dmesg.oops"} {
		h.Logf("a: %s: %s", w, mustFind(h, ra, w).Detail)
	}
	tr, problems := myripair.Transfers(rb, ra, "mbox", 1, size)
	for _, p := range problems {
		h.Errorf("transfer after the mailbox faults: %s", p)
	}
	h.Logf("16 MiB after the mailbox faults: SHA-256 %s on both ends", tr.GotSHA)
	myripair.WaitDetached(srv, len(nics), 10*time.Second)
	if err := srv.Stop(); err != nil {
		h.Errorf("myriemu did not stop cleanly: %v", err)
	}
	text, _ := os.ReadFile(filepath.Join(h.Dir, "fault.log"))
	for _, r := range []string{"timeout", "error", "under", "over"} {
		if !strings.Contains(string(text), `"rule":"`+r+`"`) {
			h.Errorf("fault log: rule %s never fired", r)
		}
	}
	h.Logf("fault log:\n%s", text)
}
