package main

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/leaktest"
)

// TestControlDeregReasons: a myrimx NIC served through serve's control
// wiring; a REG, a DEREG with reason CLEAR and a FENCE show in
// query-counters (the myrimx member) and in query-registrations
// {retired: true}, which a go-qemu client reads.
func TestControlDeregReasons(t *testing.T) {
	leaktest.Check(t)
	hub := myrimx.NewHub()
	a := mxtest.NewNIC(t, hub, mxtest.Options{Name: "mxa", Audit: dma.AuditObserve})
	ea := a.Open(0, 8, 10)

	_, mon := startControl(t, "", func(d *doors, _ *fabric.Switch) {
		d.targets = append(d.targets, &target{d: d, cfg: deviceConfig{Name: "mxa", Kind: "myrimx"}, dev: a.Dev, fn: a.Func})
	})

	buf := a.AllocBuffer(2*4096, false)
	if _, ev, err := ea.Register(3, 9, myrimx.AccessSendSrc, buf); err != nil || ev.Status != myrimx.StatusSuccess {
		t.Fatalf("REG: %v %v", ev, err)
	}
	if ev, err := ea.Do(mxtest.DeregCmd(3, 9, myrimx.ReasonClear)); err != nil || ev.Status != myrimx.StatusSuccess {
		t.Fatalf("DEREG: %v %v", ev, err)
	}
	if err := ea.Fence(1); err != nil {
		t.Fatal(err)
	}

	c := mon.run(t, `{"execute":"query-counters","arguments":{"name":"mxa"}}`)["return"].(map[string]any)
	mx, ok := c["myrimx"].(map[string]any)
	if !ok {
		t.Fatalf("query-counters mxa without myrimx: %v", c)
	}
	reasons, _ := mx["deregs_by_reason"].(map[string]any)
	if mx["regs"] != 1.0 || mx["deregs"] != 1.0 || mx["fences"] != 1.0 || mx["retired_total"] != 1.0 ||
		reasons["clear"] != 1.0 || reasons["unmap"] != 0.0 || reasons["migrate"] != 0.0 {
		t.Errorf("query-counters mxa: myrimx %v", mx)
	}
	eps, _ := mx["endpoints"].([]any)
	if len(eps) == 0 {
		t.Fatalf("no endpoints: %v", mx)
	}
	if e := eps[0].(map[string]any); e["endpoint"] != 0.0 || e["state"] != "open" || e["regs"] != 1.0 ||
		e["deregs"] != 1.0 || e["fences"] != 1.0 || e["live"] != 0.0 {
		t.Errorf("endpoint 0: %v", e)
	}

	if live := mon.run(t, `{"execute":"query-registrations","arguments":{"name":"mxa"}}`)["return"].([]any); len(live) != 0 {
		t.Errorf("live registrations after DEREG: %v", live)
	}
	ret := mon.run(t, `{"execute":"query-registrations","arguments":{"name":"mxa","retired":true}}`)["return"].([]any)
	if len(ret) != 1 {
		t.Fatalf("retired: %v", ret)
	}
	r := ret[0].(map[string]any)
	if r["seq"] != 1.0 || r["endpoint"] != 0.0 || r["id"] != 3.0 || r["generation"] != 9.0 || r["reason"] != "clear" ||
		r["pages"] != 2.0 || r["length"] != 8192.0 || r["retired"] == "" || r["registered"] == "" {
		t.Errorf("retired registration: %v", r)
	}
}

// TestRetiredReplyFitsGoQemu: a full log of retirements with the widest
// values encodes to a reply line go-qemu's client can read (its scanner
// stops at 64 KiB).
func TestRetiredReplyFitsGoQemu(t *testing.T) {
	wide := retiredInfo{Seq: math.MaxUint64, Endpoint: myrimx.MaxEndpoints - 1, ID: math.MaxUint32, Generation: math.MaxUint32,
		Reason: myrimx.ReasonProtectionPage.String(), Pages: math.MaxInt32, Length: math.MaxUint64, UserVA: math.MaxUint64,
		Registered: "2026-12-02T09:07:18.687123456Z", Retired: "2026-12-02T09:07:18.687123456Z",
		Ops: math.MaxUint64, BytesRead: math.MaxUint64, BytesWritten: math.MaxUint64}
	list := make([]retiredInfo, myrimx.RetiredLogSize)
	for i := range list {
		list[i] = wide
	}
	b, err := json.Marshal(map[string]any{"return": list, "id": "a-long-client-id-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= 64<<10-1 {
		t.Errorf("a full retired log is a %d-byte reply: go-qemu reads at most 64 KiB a line", len(b))
	}
	t.Logf("widest reply %d bytes", len(b))
}
