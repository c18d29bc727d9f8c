//go:build e2e

package e2e

import (
	"strings"
	"testing"

	tdabi "github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

// testdevResults are the checks e2e-testdev must report as passed.
var testdevResults = []string{
	"testdev.found", "testdev.ids", "testdev.bars", "testdev.caps", "testdev.enable",
	"testdev.regs", "testdev.scratch", "testdev.dma.fill", "testdev.dma.copy",
	"testdev.dma.checksum", "testdev.dma.window", "testdev.window.doorbell",
	"testdev.window.trapped", "testdev.dma.bad_length", "testdev.dma.bad_op",
	"testdev.dma.unmapped", "testdev.dma.bus_master_off", "testdev.counters",
	"testdev.irq_raise",
}

// TestTestdev is the vfio-user server issue's scenario in a real guest:
// myriemu serves testdev, QEMU 11.1 attaches it with vfio-user-pci over
// shared memfd RAM, and the guest drives it from user space (registers, DMA
// into its own memory, the window BAR, error paths, counters).
func TestTestdev(t *testing.T) {
	h := harness.New(t, env)
	sock := h.Socket("td0")
	h.Server("myriemu", "serve", "--device", "testdev,socket="+sock+",name=td0", "--log-level", "debug")
	r := h.MustPass(harness.Guest{
		Name:     "testdev",
		Programs: []string{"./guestdrv/cmd/e2e-testdev"},
		Devices:  []vm.Device{{ID: "td0", Socket: sock}},
		Scenario: "e2e-testdev",
		Require:  testdevResults,
	})
	// QEMU's own view of the device (query-pci) must agree with the guest's.
	var found bool
	for _, d := range r.PCI {
		if d.QdevID == "td0" {
			found = true
			if d.VendorID != tdabi.VendorID || d.DeviceID != tdabi.DeviceID {
				t.Errorf("query-pci: td0 is %04x:%04x, want %04x:%04x", d.VendorID, d.DeviceID, tdabi.VendorID, tdabi.DeviceID)
			}
		}
	}
	if !found {
		t.Errorf("query-pci does not list td0: %+v", r.PCI)
	}
	for _, res := range r.Console.Results {
		if strings.HasPrefix(res.Name, "testdev.") {
			t.Logf("%-4s %s: %s", res.Status, res.Name, res.Detail)
		}
	}
}
