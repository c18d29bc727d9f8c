//go:build e2e

package e2e

// Scenario 21 of zero-copy-design.md §6.10 in TestMyrimx: QEMU takes guest
// A's RAM away (a reboot: system_reset) while A holds a live registration
// with a posted RECV and B's SEND waits at A's endpoint. guestdrv/mxtest
// reset.c is the guests' side; here is the host's: the reset through A's
// QEMU (Guest.Control), then the device's side through the control socket.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// mxResetHold is the last step of A's script (after its kernel log dump):
// it prints mx:21-ready and waits for the host's reset. mxResetPeer is
// B's, after its "mxtest peer" has quit.
const (
	mxResetHold = "mxtest -peer-nic %#x -audit observe reset-hold 300\n"
	mxResetPeer = "mxtest -audit observe reset-peer 300 || rc=1\n"
)

// mxReset is what the host saw around A's reset.
type mxReset struct {
	err           error
	steps         []string
	regsBefore    int    // mxa's registrations at A's ready line
	unmapsBefore  uint64 // query-dma-audit's unmaps then
	unmapsAfter   uint64
	firstChange   string // which the polls saw first: "registrations", "unmaps" or "both"
	revokedIn     time.Duration
	logFrom       int // the server log's length at the reset
	resetSent     bool
	revokedAndGot bool
	retired       []mxRetired // mxa's retirements since A's ready line
}

func (r *mxReset) logf(format string, args ...any) {
	r.steps = append(r.steps, fmt.Sprintf(format, args...))
}

// mxRegistrations is the length of query-registrations for dev.
func mxRegistrations(mon *qmp.SocketMonitor, dev string) (int, error) {
	out, err := mon.Run([]byte(`{"execute":"query-registrations","arguments":{"name":"` + dev + `"}}`))
	if err != nil {
		return 0, fmt.Errorf("query-registrations %s: %w", dev, err)
	}
	var r struct {
		Return []json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("query-registrations %s: %w: %s", dev, err, out)
	}
	return len(r.Return), nil
}

// mxUnmaps is query-dma-audit's unmaps (DMA_UNMAPs seen) for dev.
func mxUnmaps(mon *qmp.SocketMonitor, dev string) (uint64, error) {
	out, err := mon.Run([]byte(`{"execute":"query-dma-audit","arguments":{"name":"` + dev + `"}}`))
	if err != nil {
		return 0, fmt.Errorf("query-dma-audit %s: %w", dev, err)
	}
	var r struct {
		Return []struct {
			Unmaps uint64 `json:"unmaps"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Return) != 1 {
		return 0, fmt.Errorf("query-dma-audit %s: %v: %s", dev, err, out)
	}
	return r.Return[0].Unmaps, nil
}

// mxTable is what the reset is watched by: dev's registrations and the
// DMA_UNMAPs it has seen.
func mxTable(mon *qmp.SocketMonitor, dev string) (regs int, unmaps uint64, err error) {
	if regs, err = mxRegistrations(mon, dev); err != nil {
		return 0, 0, err
	}
	unmaps, err = mxUnmaps(mon, dev)
	return regs, unmaps, err
}

// mxResetA is guest A's Control: at A's mx:21-ready it reboots A's QEMU
// (set-action reboot=reset first: the harness's -no-reboot would make it
// a shutdown), waits until mxa's table is empty and a DMA_UNMAP arrived,
// and kills A (its script would start over after the reboot).
func mxResetA(ctx context.Context, l *harness.Live, mon *qmp.SocketMonitor, srv *harness.Server) (r mxReset) {
	if _, err := waitConsole(ctx, l, 0, "name=mx:21-ready ", 14*time.Minute); err != nil {
		r.err = err
		return r
	}
	var err error
	if r.regsBefore, r.unmapsBefore, err = mxTable(mon, "mxa"); err != nil {
		r.err = err
		return r
	}
	d0, err := queryMxDevSide(mon, "mxa")
	if err != nil {
		r.err = err
		return r
	}
	r.logf("A ready: mxa holds %d registrations, %d DMA_UNMAPs seen so far", r.regsBefore, r.unmapsBefore)
	qemu := func(cmd string, args any) error {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := l.Machine.Execute(qctx, cmd, args)
		return err
	}
	if err := qemu("set-action", map[string]any{"reboot": "reset"}); err != nil {
		r.err = fmt.Errorf("set-action: %w", err)
		return r
	}
	r.logFrom = len(srv.Log())
	if err := qemu("system_reset", nil); err != nil {
		r.err = fmt.Errorf("system_reset: %w", err)
		return r
	}
	r.resetSent = true
	// Whatever is seen below, A must not live on: after the reboot its
	// script would start over and run every scenario again.
	defer func() {
		if err := l.Machine.Kill(); err != nil {
			r.logf("kill A's QEMU: %v", err)
		} else {
			r.logf("A's QEMU killed (the reboot would rerun its script)")
		}
	}()
	t0 := time.Now()
	r.logf("system_reset sent to A's QEMU")
	// The table must empty; a DMA_UNMAP is looked for only a little
	// longer (10 s), before the rebooted guest could reach its script.
	deadline := time.After(time.Minute)
	var unmapWait <-chan time.Time
	for {
		n, u, err := mxTable(mon, "mxa")
		if err != nil {
			r.err = err
			return r
		}
		g, m := n == 0, u > r.unmapsBefore
		if r.firstChange == "" && (g || m) {
			switch {
			case g && m:
				r.firstChange = "both"
			case g:
				r.firstChange = "registrations"
			default:
				r.firstChange = "unmaps"
			}
		}
		r.unmapsAfter = u
		if g && !r.revokedAndGot {
			r.revokedIn, r.revokedAndGot = time.Since(t0), true
			unmapWait = time.After(10 * time.Second)
		}
		if g && m {
			break
		}
		select {
		case <-ctx.Done():
			r.err = fmt.Errorf("A's QEMU ended before the checks: registrations %d, unmaps %d", n, u)
			return r
		case <-deadline:
			r.err = fmt.Errorf("1 min after system_reset: mxa holds %d registrations", n)
			return r
		case <-unmapWait:
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	r.logf("%.1fs after system_reset: mxa's table empty (first change seen: %s); query-dma-audit unmaps %d -> %d %.1fs after the reset",
		r.revokedIn.Seconds(), r.firstChange, r.unmapsBefore, r.unmapsAfter, time.Since(t0).Seconds())
	if d1, err := queryMxDevSide(mon, "mxa"); err != nil {
		r.logf("%v", err)
	} else {
		last := uint64(0)
		if n := len(d0.Retired); n > 0 {
			last = d0.Retired[n-1].Seq
		}
		for _, x := range d1.Retired {
			if x.Seq > last {
				r.retired = append(r.retired, x)
			}
		}
		r.logf("mxa's retirements since A's ready line: %+v", r.retired)
	}
	// B's SEND ends with A's endpoint; give its completion a moment to
	// be written before A's client goes away.
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
	}
	return r
}

// mxResetCheck is scenario 21's subtest: the host's observations, B's
// SEND, the audit window and the server log since the reset. It returns
// the audit violations of the window for the per-device sum.
func mxResetCheck(t *testing.T, r mxReset, ra, rb *harness.Run, totals map[string]mxAuditTotals, srv *harness.Server) int64 {
	for _, s := range r.steps {
		t.Log(s)
	}
	ready, ok := myripair.Find(ra, "mx:21-ready")
	if !ok {
		if v, ok := myripair.Find(ra, "mx:21-dma-unmap"); ok {
			t.Fatalf("A: %s %s", v.Status, v.Detail)
		}
		t.Fatalf("guest a printed no mx:21-ready line (scenario not reached); host: %v", r.err)
	}
	t.Logf("A: %s", ready.Detail)
	if v, ok := myripair.Find(ra, "mx:21-dma-unmap"); ok {
		t.Errorf("A lived on after the reset point: %s %s", v.Status, v.Detail)
	}
	if r.err != nil {
		t.Fatalf("host: %v", r.err)
	}
	if r.regsBefore < 1 {
		t.Errorf("mxa held %d registrations at A's ready line, want A's receive buffer", r.regsBefore)
	}
	if !r.revokedAndGot {
		t.Errorf("the reset did not empty mxa's table")
	}
	// A's region, retired by the device with the reason it gives.
	var reason string
	for _, x := range r.retired {
		if fmt.Sprint(x.Endpoint) == myripair.Field(ready.Detail, "ep") && fmt.Sprint(x.ID) == myripair.Field(ready.Detail, "region") &&
			fmt.Sprint(x.Generation) == myripair.Field(ready.Detail, "gen") {
			reason = x.Reason
		}
	}
	t.Logf("A's region retired by mxa with reason %q", reason)
	if reason != "reset" && reason != "dma-unmap" {
		t.Errorf("A's region (%s) not retired by the reset or a DMA_UNMAP: %+v", ready.Detail, r.retired)
	}

	// B's SEND waited at A's endpoint; the reset must end it without a byte.
	p, ok := myripair.Find(rb, "mx:21-peer-send")
	t.Logf("B: %v %s %s", ok, p.Status, p.Detail)
	st := myripair.Field(p.Detail, "status")
	if !ok || p.Status == result.Fail || (st != "ENDPOINT_CLOSED" && st != "REGION_INVALIDATED") {
		t.Errorf("B's SEND toward A's endpoint across the reset: %v %s", ok, p.Detail)
	}
	if x := myripair.Field(p.Detail, "xfer"); x != "0" {
		t.Errorf("B's SEND moved %s bytes into A across the reset", x)
	}

	// The audit: nothing since A's ready line, no A1 at all.
	before, err := parseInt(myripair.Field(ready.Detail, "audit_before"))
	if err != nil {
		t.Fatalf("no audit_before in A's ready line: %s", ready.Detail)
	}
	delta := int64(totals["mxa"].Violations) - before
	t.Logf("device mxa audit window [%d,%d): %d violations; A1 over the run: mxa %d, mxe %d",
		before, totals["mxa"].Violations, delta, totals["mxa"].PerCheck["A1-mapping"], totals["mxe"].PerCheck["A1-mapping"])
	if delta != 0 {
		t.Errorf("device mxa: %d audit violations across the reset", delta)
	}
	for _, dev := range []string{"mxa", "mxe"} {
		if n := totals[dev].PerCheck["A1-mapping"]; n != 0 {
			t.Errorf("device %s: %d A1 violations (DMA into RAM QEMU did not map)", dev, n)
		}
	}

	// The server said nothing alarming about it.
	log := srv.Log()
	if r.logFrom <= len(log) {
		for _, line := range strings.Split(log[r.logFrom:], "\n") {
			ll, ok := myripair.ParseLogLine(line)
			if strings.Contains(line, "panic") || ok && ll["level"] != "info" && ll["level"] != "debug" {
				t.Errorf("server log after the reset: %s", line)
			}
		}
	}
	return delta
}

// mxResetSkip runs after mxResetCheck: if no DMA_UNMAP reached the device,
// the scenario's DMA_UNMAP half is not shown and the subtest says so.
func mxResetSkip(t *testing.T, r mxReset) {
	if r.unmapsAfter == r.unmapsBefore && !t.Failed() {
		t.Skipf("the DMA_UNMAP half is not shown: query-dma-audit counts %d unmaps for mxa; the registration was revoked by the reboot's DEVICE_RESET. "+
			"Under myriemu serve the device's dma.Space is wrapped (cmd/myriemu/control.go observedSpace over dma.WithFaults), so dma.WatchUnmap and "+
			"dma.NewAudit find no *dma.Map: neither the revocation on DMA_UNMAP (REGION_REVOKED) nor A1's unmap epoch is active there", r.unmapsAfter)
	}
}

func parseInt(s string) (int64, error) {
	var n int64
	_, err := fmt.Sscan(s, &n)
	return n, err
}
