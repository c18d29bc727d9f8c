//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// myriServer starts one myriemu with nics Myri-10G NICs of slices slices
// on its switch (debug log: every mailbox command), stopped with the test.
func myriServer(h *harness.T, nics, slices int) (*harness.Server, []myripair.NIC) {
	h.Helper()
	n := myripair.NICs(nics, h.Socket)
	return h.Server("myriemu", myripair.ServerArgs(n, slices, "", "debug")...), n
}

// myriServerCtl is myriServer with a control socket, whose path it returns.
func myriServerCtl(h *harness.T, nics, slices int) (*harness.Server, []myripair.NIC, string) {
	h.Helper()
	n := myripair.NICs(nics, h.Socket)
	ctl := h.Socket("qmp")
	args := append(myripair.ServerArgs(n, slices, "", "debug"), "--control", ctl)
	return h.Server("myriemu", args...), n, ctl
}

// checkServer waits for every NIC's detach (the QEMUs are gone), stops the
// server and fails the test for an unclean stop, any warning or error in
// its log, and any guest or DMA error a NIC counted. It returns each NIC's
// counters (the last detach).
func checkServer(h *harness.T, srv *harness.Server, nics []myripair.NIC) map[string]myripair.Counters {
	h.Helper()
	myripair.WaitDetached(srv, len(nics), 10*time.Second)
	if err := srv.Stop(); err != nil {
		h.Errorf("myriemu did not stop cleanly: %v", err)
	}
	for _, l := range myripair.Problems(srv.Log()) {
		h.Errorf("server log: %s", l)
	}
	out := map[string]myripair.Counters{}
	for _, n := range nics {
		cs := myripair.NICCounters(srv.Log(), n.Name)
		if len(cs) == 0 {
			h.Errorf("server: no counters logged for %s", n.Name)
			continue
		}
		c := cs[len(cs)-1]
		out[n.Name] = c
		if c["guest_errors"] != 0 || c["dma_errors"] != 0 {
			h.Errorf("server: %s counted %d guest errors and %d DMA errors", n.Name, c["guest_errors"], c["dma_errors"])
		}
		h.Logf("server: %s %s", n.Name, c)
	}
	return out
}

// results returns a run's results called name, in console order.
func results(r *harness.Run, name string) []result.Result {
	var out []result.Result
	if r.Console == nil {
		return nil
	}
	for _, res := range r.Console.Results {
		if res.Name == name {
			out = append(out, res)
		}
	}
	return out
}

// mustFind returns a run's result called name, failing the test without it.
func mustFind(h *harness.T, r *harness.Run, name string) result.Result {
	h.Helper()
	res, ok := myripair.Find(r, name)
	if !ok {
		h.Errorf("guest %s printed no %s", r.Guest, name)
	}
	return res
}

// logDriver logs what a guest's kernel log and ethtool said of the driver.
func logDriver(h *harness.T, r *harness.Run) {
	h.Helper()
	for _, name := range []string{"ethtool.drvinfo", "dmesg:adopted", "dmesg:probe", "dmesg:link", "ethtool.dma", "dmesg.clean"} {
		if res, ok := myripair.Find(r, name); ok {
			h.Logf("%s %s: %s", r.Guest, name, res.Detail)
		}
	}
	for _, res := range results(r, "dmesg.allowed") {
		h.Logf("%s dmesg.allowed: %s", r.Guest, res.Detail)
	}
}

// dmesgCheck is the guest's kernel-log check: with adopt, the adopt path's
// own lines are allowed and adoption must show; otherwise (a firmware file)
// no warning, failure or timeout line at all is.
func dmesgCheck(adopt bool, fwName string) string {
	if adopt {
		return "e2e-net dmesg-check -show -adopt -want adopted='Successfully adopted running firmware' " +
			"-want probe='fw adopted' -want link='link up'"
	}
	return fmt.Sprintf("e2e-net dmesg-check -show -want probe='fw %s' -want link='link up'", fwName)
}

// driverResults are the results every Myri-10G guest must print.
var driverResults = []string{"link:eth0", "ethtool.drvinfo", "ethtool.dma", "dmesg.clean", "dmesg:probe", "dmesg:link"}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// table renders rows of cells as aligned text, for logs.
func table(rows [][]string) string {
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			fmt.Fprintf(&b, "  %-*s", width[i], c)
		}
		b.WriteString("\n")
	}
	return b.String()
}
