//go:build e2e

package e2e

// Issue 15, acceptance 1: with QEMU's default vfio-user-pci properties the
// driver's atomic commands (promisc, allmulti, multicast joins) answer in
// time, and the multicast groups the guest joined reach the NIC's filter.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// cmdCheckStep prints cmds.clean: fail with the lines if the driver's
// kernel log has a command that timed out or a "Failed MXGEFW_" line (its
// words for a command the NIC refused or never answered), pass otherwise.
const cmdCheckStep = `bad=$(dmesg | grep myri10ge | grep -E 'timed out|Failed MXGEFW_')
if [ -z "$bad" ]; then
	echo "E2E-RESULT name=cmds.clean status=pass detail=no 'timed out' or 'Failed MXGEFW_' line in dmesg"
else
	echo "$bad"
	echo "E2E-RESULT name=cmds.clean status=fail detail=$(echo "$bad" | wc -l) 'timed out' or 'Failed MXGEFW_' lines in dmesg"
	rc=1
fi`

// maddrStep prints maddr: the link-layer multicast groups of eth0 as
// "ip maddr show dev eth0" lists them (busybox has no maddr; both read
// /proc/net/dev_mcast), and the IPv4 and IPv6 groups behind them.
const maddrStep = `groups=$(awk '$2 == "eth0" { print $5 }' /proc/net/dev_mcast | sort | tr '\n' ',' | sed 's/,$//')
inet=$(awk '/eth0/ { dev = 1; next } /^[0-9]/ { dev = 0 } dev { print $1 }' /proc/net/igmp | sort | tr '\n' ',' | sed 's/,$//')
inet6=$(awk '$2 == "eth0" { print $3 }' /proc/net/igmp6 | sort | tr '\n' ',' | sed 's/,$//')
if [ -n "$groups" ]; then st=pass; else st=fail; rc=1; fi
echo "E2E-RESULT name=maddr status=$st detail=groups=$groups igmp=$inet igmp6=$inet6"`

// wantGroups are the link-layer groups every Myri-10G guest joins once
// eth0 is up with an IPv4 address: 224.0.0.1 (all hosts), ff02::1 (all
// nodes) and the solicited-node group of its link-local address, whose
// last three bytes are the MAC's.
func wantGroups(mac string) []string {
	return []string{"01:00:5e:00:00:01", "33:33:00:00:00:01", "33:33:ff:" + mac[9:]}
}

// guestGroups returns the groups of a guest's maddr result, as MACs.
func guestGroups(h *harness.T, r *harness.Run) []string {
	h.Helper()
	res := mustFind(h, r, "maddr")
	var out []string
	for _, g := range strings.Split(myripair.Field(res.Detail, "groups"), ",") {
		if len(g) != 12 {
			continue
		}
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(g[i : i+2])
		}
		out = append(out, b.String())
	}
	return out
}

// checkCommands fails the test for a guest whose kernel log shows a
// command that timed out or failed, read both from its cmds.clean result
// and from the driver's lines on its whole console.
func checkCommands(h *harness.T, r *harness.Run) {
	h.Helper()
	if res := mustFind(h, r, "cmds.clean"); res.Status != result.Pass {
		h.Errorf("%s: %s", r.Guest, res.Detail)
	} else {
		h.Logf("%s cmds.clean: %s", r.Guest, res.Detail)
	}
	for _, l := range strings.Split(r.ConsoleText, "\n") {
		if strings.Contains(l, "E2E-RESULT") {
			continue
		}
		if strings.Contains(l, "myri10ge") && (strings.Contains(l, "timed out") || strings.Contains(l, "Failed MXGEFW_")) {
			h.Errorf("%s console: %s", r.Guest, strings.TrimSpace(l))
		}
	}
}

// filterWatch polls the control socket's query-rx-filter while guests
// run, keeping every distinct multicast table a NIC showed with ALLMULTI
// off (the driver turns ALLMULTI on while it rewrites the table).
type filterWatch struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu     sync.Mutex
	tables map[string][][]string // NIC: distinct tables, in order seen
	polls  int
	err    error
}

// watchFilters starts polling the control socket at path once a second,
// until Stop or the end of the test (before its servers stop).
func watchFilters(h *harness.T, path string) *filterWatch {
	w := &filterWatch{stop: make(chan struct{}), tables: map[string][][]string{}}
	h.Cleanup(func() { w.Stop() })
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		mon, err := monitor(path)
		if err != nil {
			w.fail(err)
			return
		}
		defer mon.Disconnect()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			out, err := mon.Run([]byte(`{"execute":"query-rx-filter"}`))
			if err != nil {
				w.fail(err)
				return
			}
			var r struct {
				Return []struct {
					Name      string   `json:"name"`
					Multicast string   `json:"multicast"`
					Table     []string `json:"multicast-table"`
				}
			}
			if err := json.Unmarshal(out, &r); err != nil {
				w.fail(fmt.Errorf("query-rx-filter: %s: %w", out, err))
				return
			}
			w.mu.Lock()
			w.polls++
			for _, f := range r.Return {
				if f.Multicast == "normal" && !slices.ContainsFunc(w.tables[f.Name], func(t []string) bool { return slices.Equal(t, f.Table) }) {
					w.tables[f.Name] = append(w.tables[f.Name], f.Table)
				}
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *filterWatch) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// Stop ends the polling, joins it and returns what it saw.
func (w *filterWatch) Stop() (tables map[string][][]string, polls int, err error) {
	w.stopOnce.Do(func() { close(w.stop) })
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tables, w.polls, w.err
}

// checkFilter fails the test unless some table the NIC showed with
// ALLMULTI off held every group in want and every group the guest listed.
func checkFilter(h *harness.T, nic string, tables [][]string, want, guest []string) {
	h.Helper()
	all := append(slices.Clone(want), guest...)
	for _, t := range tables {
		if !slices.ContainsFunc(all, func(g string) bool { return !slices.Contains(t, g) }) {
			h.Logf("%s: the NIC's multicast filter (ALLMULTI off) held %s", nic, strings.Join(t, " "))
			return
		}
	}
	h.Errorf("%s: no multicast table with ALLMULTI off held %v (the guest's groups %v); tables seen: %v", nic, want, guest, tables)
}
