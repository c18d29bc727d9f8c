//go:build e2e

package e2e

import (
	"testing"

	"github.com/myriemu/myriemu/tests/harness"
)

// hostBridge is q35's host bridge, present in every guest.
const hostBridge = "8086:29c0"

// TestBootSmoke boots a guest with no vfio-user device and proves the whole
// pipeline: the sid kernel under TCG, the busybox /init, a static Go guest
// program, in-tree modules in dependency order (dca before myri10ge), an
// out-of-tree module built against the rootfs headers with a parameter, and
// the structured result lines.
func TestBootSmoke(t *testing.T) {
	h := harness.New(t, env)
	r := h.MustPass(harness.Guest{
		Name:         "smoke",
		Programs:     []string{"./guestdrv/cmd/e2e-probe"},
		Modules:      []string{"myri10ge"},
		GuestModules: []harness.GuestModule{{Name: "e2e_hello", Args: "answer=42"}},
		Scenario:     "e2e-probe -want " + hostBridge + " -dmesg 'e2e_hello: loaded answer=42'",
		Require:      []string{"insmod:dca", "insmod:myri10ge", "insmod:e2e_hello", "pci.want:" + hostBridge, "dmesg"},
	})
	var order []string
	for _, res := range r.Console.Results {
		if len(res.Name) > 7 && res.Name[:7] == "insmod:" {
			order = append(order, res.Name[7:])
		}
	}
	if len(order) != 3 || order[0] != "dca" || order[1] != "myri10ge" || order[2] != "e2e_hello" {
		t.Errorf("modules loaded in order %v, want [dca myri10ge e2e_hello]", order)
	}
	if r.Console.Kernel != env.Rootfs.KernelABI {
		t.Errorf("guest kernel %q, want the rootfs's %q", r.Console.Kernel, env.Rootfs.KernelABI)
	}
	t.Logf("guest results:\n%s", harness.Results(r))
}

// TestTwoGuests boots two guests at once, as the two-guest Myri-10G demo
// will: each gets its own QEMU, QMP socket, console and verdict.
func TestTwoGuests(t *testing.T) {
	h := harness.New(t, env)
	g := func(name string) harness.Guest {
		return harness.Guest{
			Name:     name,
			Programs: []string{"./guestdrv/cmd/e2e-probe"},
			Scenario: "e2e-probe -want " + hostBridge,
			Require:  []string{"pci.want:" + hostBridge},
		}
	}
	runs := h.Guests(g("left"), g("right"))
	if len(runs) != 2 || runs[0].Guest != "left" || runs[1].Guest != "right" {
		t.Fatalf("runs out of order: %v", runs)
	}
}
