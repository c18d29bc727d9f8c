//go:build e2e

package e2e

// Issue #12, scenarios 12-14 of zero-copy-design.md §6.10: the kernel
// takes a registered page away from the myrimx driver by migration. One
// guest with two NUMA nodes (QEMU -numa) and one myrimx card runs
// guestdrv/mxmm: move_pages(2) to node 1 (12), HMM migrate_vma_setup (13)
// and make_device_exclusive (14), the last two through the myrimx_mm
// helper module. Each scenario is judged from the guest's lines (the
// driver's reason counters, the region's state, the data, the
// re-registered GPAs, pins balanced, rmmod) and from the device: its
// AUDIT_COUNT window read by the guest, query-dma-audit at the end, and
// the DEREG reasons it logged (the scenario's registration, found by the
// id and generation the guest printed, retired with the scenario's reason).

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

const mxmmNIC = 0x0060dd00c001

// mxmmScenario is one scenario: its subtest, the prefix of mxmm's result
// names, mxmm's subcommand and the invalidation reason it must produce.
type mxmmScenario struct {
	sub, prefix, cmd, reason string
}

var mxmmScenarios = []mxmmScenario{
	{"12-move-pages", "mm12", "move-pages", "clear"},
	{"13-hmm-migrate", "mm13", "hmm-migrate", "migrate"},
	{"14-device-exclusive", "mm14", "exclusive", "exclusive"},
}

// mxmmScript loads both modules afresh for every scenario, runs it, checks
// the pins once both modules are gone, and reports the rmmods and the
// scenario's wall time; then it dumps the kernel log.
func mxmmScript() string {
	var b strings.Builder
	b.WriteString(`cat /sys/devices/system/node/has_memory | sed 's/^/E2E-RESULT name=mxmm:nodes status=info detail=has_memory=/'
mmstep() {
	label=$1; shift
	t0=$(cut -d' ' -f1 /proc/uptime)
	rmmod myrimx_mm 2>/dev/null; rmmod myrimx 2>/dev/null
	if ! insmod /lib/modules/myrimx.ko || ! insmod /lib/modules/myrimx_mm.ko; then
		echo "E2E-RESULT name=mmstep:$label status=fail detail=insmod failed"
		return
	fi
	mxmm "$@"
	x=$?
	rm=ok
	rmmod myrimx_mm || rm=failed
	rmmod myrimx || rm=failed
	mxmm pins | sed "s/name=pins/name=$label:pins/"
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "E2E-RESULT name=mmstep:$label status=info detail=rmmod=$rm exit=$x seconds=$(awk "BEGIN{print $t1-$t0}")"
}
mmstep helper helper
`)
	for _, s := range mxmmScenarios {
		fmt.Fprintf(&b, "mmstep %s %s\n", s.prefix, s.cmd)
	}
	b.WriteString(mxDmesgDump)
	return b.String()
}

// TestMyrimxMigrate is issue #12's scenarios 12, 13 and 14 in one boot of
// a two-node guest.
func TestMyrimxMigrate(t *testing.T) {
	start := time.Now()
	h := harness.New(t, env)
	sock := h.Socket("mx0")
	qmpPath := h.Socket("qmp")
	srv := h.Server("myriemu", "serve", "--log-level", "info", "--control", qmpPath,
		"--device", fmt.Sprintf("myrimx,socket=%s,name=mx0,audit=observe,nic_id=%#x", sock, mxmmNIC))
	r := h.Guest(harness.Guest{
		Name:         "mm",
		CPrograms:    []string{"guestdrv/mxmm"},
		GuestModules: []harness.GuestModule{{Name: "myrimx"}, {Name: "myrimx_mm"}},
		Devices:      []vm.Device{{ID: "mx0", Socket: sock}},
		MemoryMiB:    512,
		NUMANodes:    2,
		// NUMA balancing would unmap the buffers on its own schedule
		// (PROTECTION_VMA hint faults) and blur the reason counts.
		// mxmm reads AUDIT_COUNT through the driver's INFO, so no
		// iomem=relaxed (CONFIG_IO_STRICT_DEVMEM) is needed to map BAR0.
		Append:   "numa_balancing=disable",
		Scenario: mxmmScript(),
		Timeout:  8 * time.Minute,
		Dir:      filepath.Join(h.Dir, "mm"),
	})
	h.Logf("guest: QEMU %.1fs, boot %.1fs, %v", r.Elapsed.Seconds(), r.BootTime.Seconds(), r.Err)
	if r.Console == nil || !r.Console.Booted || r.TimedOut {
		t.Fatalf("the guest did not boot or timed out:\n%s", r.Report(srv))
	}

	// The device's side, while the server still has the attachment.
	mon, err := monitor(qmpPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := mon.Run([]byte(`{"execute":"query-dma-audit","arguments":{"name":"mx0"}}`))
	dev, devErr := queryMxDevSide(mon, "mx0")
	mon.Disconnect()
	if err != nil {
		t.Fatalf("query-dma-audit: %v", err)
	}
	if devErr != nil {
		t.Fatal(devErr)
	}
	h.Logf("device mx0: deregs by reason %v, fences %d, %d retired", dev.DeregsByReason, dev.Fences, dev.RetiredTotal)
	h.Logf("query-dma-audit mx0: %s", out)
	totals, err := parseAuditTotals(out)
	if err != nil {
		t.Fatalf("query-dma-audit: %v: %s", err, out)
	}
	if totals.Violations != 0 {
		t.Errorf("device mx0: %d audit violations (%v), want 0: every scenario keeps the driver correct", totals.Violations, totals.PerCheck)
	}

	for _, res := range r.Console.Results {
		h.Logf("%-4s %s: %s", res.Status, res.Name, res.Detail)
	}
	for _, res := range r.Console.Results {
		if strings.HasPrefix(res.Name, "insmod:") && res.Status != result.Pass {
			t.Errorf("%s: %s", res.Name, res.Detail)
		}
	}
	if bad := mxKernelProblems(r.ConsoleText); len(bad) > 0 {
		t.Errorf("kernel log:\n  %s", strings.Join(bad, "\n  "))
	}

	t.Run("helper", func(t *testing.T) {
		mxmmJudge(t, r, "helper", []string{"helper:migrate", "helper:exclusive", "helper:pages-kept", "helper:data", "helper:refused", "helper:pins"})
	})
	for _, s := range mxmmScenarios {
		t.Run(s.sub, func(t *testing.T) {
			if s.prefix == "mm12" {
				if sk, ok := myripair.Find(r, "mm12:skip"); ok {
					t.Skip(sk.Detail)
				}
			}
			mxmmJudge(t, r, s.prefix, []string{
				s.prefix + ":revoked", s.prefix + ":query", s.prefix + ":data", s.prefix + ":reregister",
				s.prefix + ":send", s.prefix + ":teardown", s.prefix + ":pins",
			})
			reasons, _ := myripair.Find(r, s.prefix+":reasons")
			if got := myripair.Field(reasons.Detail, "inv_"+s.reason); got != "1" {
				t.Errorf("invalidations for %s: %q, want 1 (%s)", s.reason, got, reasons.Detail)
			}
			// The device's side: the registration the kernel took away
			// was retired by a DEREG with this reason.
			if setup, ok := myripair.Find(r, s.prefix+":setup"); !ok {
				t.Errorf("%s:setup not printed: no (id, generation) to look up on the device", s.prefix)
			} else {
				id, _ := strconv.ParseUint(myripair.Field(setup.Detail, "id"), 10, 32)
				gen, _ := strconv.ParseUint(myripair.Field(setup.Detail, "gen"), 10, 32)
				if why := dev.checkRetired(uint32(id), uint32(gen), s.reason); why != "" {
					t.Errorf("%s: %s", s.prefix, why)
				} else {
					t.Logf("device: %v", dev.find(uint32(id), uint32(gen))[0])
				}
			}
			if dev.DeregsByReason[s.reason] == 0 {
				t.Errorf("device mx0 counted no %s DEREG: %v", s.reason, dev.DeregsByReason)
			}
			switch s.prefix {
			case "mm12":
				mxmmWant(t, r, "mm12:gpa-node")
				mv, _ := myripair.Find(r, "mm12:move")
				pl, _ := myripair.Find(r, "mm12:placement")
				t.Logf("move_pages: %s; after: %s", mv.Detail, pl.Detail)
				if myripair.Field(reasons.Detail, "inv_migrate") != "0" {
					t.Errorf("move_pages gave MIGRATE invalidations (§3.3: it must be CLEAR): %s", reasons.Detail)
				}
			case "mm13":
				mxmmWant(t, r, "mm13:same-gpas")
				mg, _ := myripair.Find(r, "mm13:migrate")
				t.Logf("migrate_vma: %s", mg.Detail)
				if myripair.Field(mg.Detail, "migrated") != "0" {
					t.Errorf("a page migrated without a destination: %s", mg.Detail)
				}
			case "mm14":
				mxmmWant(t, r, "mm14:exclusive")
				mxmmWant(t, r, "mm14:same-gpas")
				mxmmWant(t, r, "mm14:leave")
			}
		})
	}
	h.Logf("TestMyrimxMigrate wall time %.1fs", time.Since(start).Seconds())
	if t.Failed() {
		h.Logf("guest:\n%s", r.Report(srv))
	}
}

// mxmmJudge checks one mmstep: reached, rmmod clean, mxmm exited 0, and
// every named result printed and passed.
func mxmmJudge(t *testing.T, r *harness.Run, label string, want []string) {
	t.Helper()
	step, ok := myripair.Find(r, "mmstep:"+label)
	if !ok {
		t.Fatalf("no mmstep:%s line: the scenario was not reached", label)
	}
	t.Logf("wall %ss (insmod, scenario, rmmod, pins); %s", myripair.Field(step.Detail, "seconds"), step.Detail)
	if myripair.Field(step.Detail, "rmmod") != "ok" {
		t.Errorf("rmmod after the scenario: %s", step.Detail)
	}
	if myripair.Field(step.Detail, "exit") != "0" {
		t.Errorf("mxmm exited %s", myripair.Field(step.Detail, "exit"))
	}
	for _, name := range want {
		mxmmWant(t, r, name)
	}
	for _, res := range r.Console.Results {
		if strings.HasPrefix(res.Name, label+":") && res.Status == result.Fail {
			t.Errorf("%s failed: %s", res.Name, res.Detail)
		}
	}
}

// mxmmWant fails t unless the run printed name with status pass.
func mxmmWant(t *testing.T, r *harness.Run, name string) {
	t.Helper()
	res, ok := myripair.Find(r, name)
	switch {
	case !ok:
		t.Errorf("%s: not printed", name)
	case res.Status != result.Pass:
		t.Errorf("%s: %s %s", name, res.Status, res.Detail)
	default:
		t.Logf("%s: %s", name, res.Detail)
	}
}
