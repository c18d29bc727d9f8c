//go:build e2e

package e2e

// The myrimx device's own record of the DEREGs (issue #12 acceptance 1,
// "the DEREG reasons logged"): query-counters' myrimx member (retirements
// per reason) and query-registrations {retired: true} (the last 256
// registrations retired, each with its reason). A scenario finds its
// registration there by (id, generation), as the guest printed them.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// mxRetired is one element of query-registrations {retired: true}.
type mxRetired struct {
	Seq          uint64 `json:"seq"`
	Endpoint     int    `json:"endpoint"`
	ID           uint32 `json:"id"`
	Generation   uint32 `json:"generation"`
	Reason       string `json:"reason"`
	Pages        int    `json:"pages"`
	Length       uint64 `json:"length"`
	Ops          uint64 `json:"ops"`
	BytesRead    uint64 `json:"bytes-read"`
	BytesWritten uint64 `json:"bytes-written"`
}

func (r mxRetired) String() string {
	return fmt.Sprintf("#%d ep%d id%d gen%d %s pages=%d ops=%d", r.Seq, r.Endpoint, r.ID, r.Generation, r.Reason, r.Pages, r.Ops)
}

// mxDevSide is what a myrimx device logged of the registrations it retired.
type mxDevSide struct {
	DeregsByReason map[string]uint64 // query-counters: myrimx.deregs_by_reason
	Fences         uint64            // query-counters: myrimx.fences
	RetiredTotal   uint64            // query-counters: myrimx.retired_total
	Retired        []mxRetired       // query-registrations {retired: true}, oldest first
}

// queryMxDevSide reads name's retirement counters and log.
func queryMxDevSide(mon *qmp.SocketMonitor, name string) (mxDevSide, error) {
	var d mxDevSide
	out, err := mon.Run([]byte(fmt.Sprintf(`{"execute":"query-counters","arguments":{"name":%q}}`, name)))
	if err != nil {
		return d, fmt.Errorf("query-counters %s: %w", name, err)
	}
	var c struct {
		Return struct {
			Myrimx *struct {
				DeregsByReason map[string]uint64 `json:"deregs_by_reason"`
				Fences         uint64            `json:"fences"`
				RetiredTotal   uint64            `json:"retired_total"`
			} `json:"myrimx"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &c); err != nil {
		return d, fmt.Errorf("query-counters %s: %w: %s", name, err, out)
	}
	if c.Return.Myrimx == nil {
		return d, fmt.Errorf("query-counters %s: no myrimx counters: %s", name, out)
	}
	d.DeregsByReason, d.Fences, d.RetiredTotal = c.Return.Myrimx.DeregsByReason, c.Return.Myrimx.Fences, c.Return.Myrimx.RetiredTotal
	out, err = mon.Run([]byte(fmt.Sprintf(`{"execute":"query-registrations","arguments":{"name":%q,"retired":true}}`, name)))
	if err != nil {
		return d, fmt.Errorf("query-registrations %s retired: %w", name, err)
	}
	var r struct {
		Return []mxRetired `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return d, fmt.Errorf("query-registrations %s retired: %w: %s", name, err, out)
	}
	d.Retired = r.Return
	return d, nil
}

// find returns the retirements of (id, gen), on any endpoint.
func (d mxDevSide) find(id, gen uint32) []mxRetired {
	var out []mxRetired
	for _, r := range d.Retired {
		if r.ID == id && r.Generation == gen {
			out = append(out, r)
		}
	}
	return out
}

// checkRetired says why the device's log does not show (id, gen) retired
// once with reason, or "" if it does.
func (d mxDevSide) checkRetired(id, gen uint32, reason string) string {
	got := d.find(id, gen)
	if len(got) == 1 && got[0].Reason == reason {
		return ""
	}
	var s []string
	for _, r := range got {
		s = append(s, r.String())
	}
	dropped := ""
	if len(d.Retired) > 0 && d.Retired[0].Seq > 1 {
		dropped = fmt.Sprintf(" (the log starts at #%d: older ones dropped)", d.Retired[0].Seq)
	}
	return fmt.Sprintf("device retired (id %d, gen %d) %d times [%s], want once with reason %s%s",
		id, gen, len(got), strings.Join(s, "; "), reason, dropped)
}

// mxCheckDeregReasons compares, per card of guest A, the invalidations the
// driver counted per reason (the inv_<REASON> facts of each scenario's
// verdict; the module is loaded afresh for every scenario, so they are
// that scenario's) with the retirements the device counted per DEREG
// reason: each invalidation of a VALID registration is one DEREG carrying
// its reason, so the device must count at least as many. Scenarios with
// deliberate bugs (allow_bugs) or a dead device (20) are left out of the
// sum: their DEREGs may not reach the device, which is what they show.
func mxCheckDeregReasons(t *testing.T, ra *harness.Run, devSide map[string]mxDevSide, deviceOf map[string]string) {
	want := map[string]map[string]uint64{} // device -> reason -> driver's invalidations
	for _, s := range mxScenarios {
		if s.skip != "" || strings.Contains(s.params, "allow_bugs") || s.sub == "20-fence-timeout" {
			continue
		}
		v, ok := myripair.Find(ra, "mx:"+s.result)
		if !ok {
			continue // the scenario's subtest reports it
		}
		dev := deviceOf[s.audit]
		if want[dev] == nil {
			want[dev] = map[string]uint64{}
		}
		for _, f := range strings.Fields(v.Detail) {
			k, val, ok := strings.Cut(f, "=")
			name, isInv := strings.CutPrefix(k, "inv_")
			n, err := strconv.ParseUint(val, 10, 64)
			if !ok || !isInv || err != nil {
				continue
			}
			want[dev][strings.ReplaceAll(strings.ToLower(name), "_", "-")] += n
		}
	}
	for dev, reasons := range want {
		d, ok := devSide[dev]
		if !ok {
			t.Errorf("device %s: no counters read", dev)
			continue
		}
		for reason, n := range reasons {
			got := d.DeregsByReason[reason]
			t.Logf("device %s: %s: driver invalidations %d, device retirements %d", dev, reason, n, got)
			if got < n {
				t.Errorf("device %s: %d retirements with reason %s, fewer than the %d invalidations the driver counted", dev, got, reason, n)
			}
		}
	}
	if len(want["mxa"]) == 0 {
		t.Errorf("no inv_<REASON> fact in any verdict of mxa's scenarios: nothing compared")
	}
}
