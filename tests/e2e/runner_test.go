//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/myriemu/myriemu/tests/harness"
)

// The runner must turn a failing guest assertion into a failure that shows
// the guest console. This test expects exactly that failure.
func TestRunnerReportsFailedAssertion(t *testing.T) {
	h := harness.New(t, env)
	r := h.Guest(harness.Guest{
		Name:     "failing",
		Programs: []string{"./guestdrv/cmd/e2e-probe"},
		// 1234:dead is never present: a deliberately false assertion.
		Scenario: "e2e-probe -want 1234:dead",
	})
	if r.Err == nil {
		t.Fatalf("a guest whose assertion fails was reported as passing:\n%s", r.Report())
	}
	report := r.Report()
	for _, want := range []string{
		"FAILED",
		"failed: pci.want:1234:dead: no PCI function 1234:dead", // the verdict names the assertion
		"the scenario exited with rc=1",
		"--- guest console:",
		"E2E-BOOT kernel=", // the console itself is in the report
		"E2E-DONE rc=1",    //
		"--- QEMU command line:",
		"vmlinuz",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if r.TimedOut {
		t.Errorf("guest timed out instead of failing:\n%s", report)
	}
}

// A guest that hangs is killed at its timeout and reported as such, and
// nothing of it (QEMU, mounts) is left behind.
func TestRunnerKillsHungGuest(t *testing.T) {
	h := harness.New(t, env)
	const timeout = 15 * time.Second
	r := h.Guest(harness.Guest{
		Name:     "hung",
		Scenario: "echo 'E2E-RESULT name=hang status=info detail=sleeping forever'; sleep 100000",
		Timeout:  timeout,
	})
	if r.Err == nil || !r.TimedOut {
		t.Fatalf("hung guest: TimedOut=%v Err=%v, want a timeout:\n%s", r.TimedOut, r.Err, r.Report())
	}
	if !strings.Contains(r.Err.Error(), "did not power off within 15s of E2E-BOOT: QEMU stopped with QMP quit") {
		t.Errorf("error does not say the guest was killed at its timeout: %v", r.Err)
	}
	if after := r.Elapsed - r.BootTime; after < timeout || after > timeout+10*time.Second {
		t.Errorf("QEMU ran %v after E2E-BOOT; want it killed at about %v", after, timeout)
	}
	if !strings.Contains(r.Report(), "sleeping forever") {
		t.Errorf("report lacks the hung guest's console:\n%s", r.Report())
	}
	left, err := env.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left behind after a killed guest:\n%s", strings.Join(left, "\n"))
	}
}
