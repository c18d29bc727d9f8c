package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/myriemu/myriemu/control"
	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/fabric/link"
)

// The control socket's view of the myrimx DMA audit (query-dma-audit,
// query-registrations, DMA_AUDIT) and of the switch's ports to other
// networks (port-add, port-del, query-ports).

// auditEventsPerSecond bounds DMA_AUDIT events per process: a buggy guest
// in observe mode can violate on every 64 KiB chunk. The rest are counted
// into the next event's "suppressed" (the counters of query-dma-audit
// stay exact).
const auditEventsPerSecond = 50

// DMAAudit serves query-dma-audit (as control.Auditor).
func (t *target) DMAAudit() (map[string]any, error) {
	mx, ok := t.dev.(*myrimx.Device)
	if !ok {
		return nil, control.ErrNotSupported
	}
	c := mx.AuditCounters()
	perCheck := map[string]uint64{}
	for k, v := range c.PerCheck {
		perCheck[k] = v
	}
	return map[string]any{"mode": c.Mode.String(), "checked": c.Checked, "violations": c.Violations,
		"refused": c.Refused, "per-check": perCheck, "unmaps": c.Unmaps}, nil
}

// registrationInfo is one element of query-registrations.
type registrationInfo struct {
	Endpoint     int    `json:"endpoint"`
	ID           uint32 `json:"id"`
	Generation   uint32 `json:"generation"`
	State        string `json:"state"`
	Access       uint32 `json:"access"`
	PageShift    uint8  `json:"page-shift"`
	Pages        int    `json:"pages"`
	FirstOffset  uint64 `json:"first-offset"`
	Length       uint64 `json:"length"`
	UserVA       uint64 `json:"user-va"`
	Registered   string `json:"registered"` // RFC 3339, UTC
	Ops          uint64 `json:"ops"`
	BytesRead    uint64 `json:"bytes-read"`
	BytesWritten uint64 `json:"bytes-written"`
}

// Registrations serves query-registrations (as control.Auditor).
func (t *target) Registrations() (any, error) {
	mx, ok := t.dev.(*myrimx.Device)
	if !ok {
		return nil, control.ErrNotSupported
	}
	out := []registrationInfo{}
	for _, r := range mx.Registrations() {
		out = append(out, registrationInfo{Endpoint: r.Endpoint, ID: r.ID, Generation: r.Gen, State: r.State,
			Access: r.Access, PageShift: r.PageShift, Pages: r.Pages, FirstOffset: r.FirstOff, Length: r.Length,
			UserVA: r.UserVA, Registered: r.Registered.UTC().Format(time.RFC3339Nano), Ops: r.Ops,
			BytesRead: r.BytesRead, BytesWritten: r.BytesWritten})
	}
	return out, nil
}

// watchAudit sends dev's audit violations to the control socket as
// DMA_AUDIT events, if dev has an audit.
func (d *doors) watchAudit(dev device) {
	if mx, ok := dev.(*myrimx.Device); ok {
		mx.SetAuditSink(d.audit.event)
	}
}

// auditEvents turns audit violations into DMA_AUDIT events, at most
// auditEventsPerSecond a second. event runs on the device's DMA goroutine:
// it takes one short lock and hands the line to control.Server.Emit, which
// never blocks (bounded per-client queues).
type auditEvents struct {
	d          *doors
	mu         sync.Mutex
	window     time.Time
	inWindow   int
	suppressed uint64
}

func (a *auditEvents) event(ev myrimx.AuditEvent) {
	if a.d.ctl == nil {
		return
	}
	a.mu.Lock()
	now := time.Now()
	if now.Sub(a.window) >= time.Second {
		a.window, a.inWindow = now, 0
	}
	if a.inWindow >= auditEventsPerSecond {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	a.inWindow++
	suppressed := a.suppressed
	a.suppressed = 0
	a.mu.Unlock()
	a.d.emit("DMA_AUDIT", auditData(ev, suppressed))
}

// auditData is a DMA_AUDIT event's data: the fields §6.9 of the zero-copy
// design lists.
func auditData(ev myrimx.AuditEvent, suppressed uint64) map[string]any {
	data := map[string]any{
		"device": ev.Device, "kind": ev.Check.String(), "mode": ev.Mode.String(), "tag": ev.Tag.Kind.String(),
		"endpoint": ev.Tag.Endpoint, "region": ev.Tag.Region, "generation": ev.Tag.Gen, "cookie": ev.Tag.Cookie,
		"address": ev.Addr, "length": ev.Len, "direction": ev.Op.String(), "detail": ev.Detail,
	}
	if ev.LastReason >= 0 {
		data["last-reason"] = reasonName(ev.LastReason)
	}
	if ev.SinceDereg >= 0 {
		data["since-dereg-us"] = ev.SinceDereg.Microseconds()
	}
	if suppressed > 0 {
		data["suppressed"] = suppressed
	}
	return data
}

// reasonNames are the invalidation reasons of the ABI (myrimx.Reason).
var reasonNames = map[myrimx.Reason]string{
	myrimx.ReasonUnmap: "unmap", myrimx.ReasonClear: "clear", myrimx.ReasonProtectionVMA: "protection-vma",
	myrimx.ReasonProtectionPage: "protection-page", myrimx.ReasonSoftDirty: "soft-dirty",
	myrimx.ReasonRelease: "release", myrimx.ReasonMigrate: "migrate", myrimx.ReasonExclusive: "exclusive",
	myrimx.ReasonUser: "user", myrimx.ReasonDMAUnmap: "dma-unmap", myrimx.ReasonReset: "reset",
	myrimx.ReasonInvSync: "inv-sync",
}

func reasonName(r int) string {
	if n, ok := reasonNames[myrimx.Reason(r)]; ok {
		return n
	}
	return fmt.Sprintf("reason-%d", r)
}

// linkPorts is serve's set of links as the control socket sees it.
type linkPorts struct{ set *link.Set }

func (p linkPorts) AddPort(spec string) (string, error) {
	l, err := p.set.Add(spec)
	if err != nil {
		return "", err
	}
	return l.Config().Name, nil
}

func (p linkPorts) RemovePort(name string) error { return p.set.Remove(name) }
func (p linkPorts) QueryPorts() any              { return p.set.Query() }

// controlPorts is the Ports of the control socket: nil when serve has no
// set of links (then the port commands say so).
func (d *doors) controlPorts() control.Ports {
	if d.ports == nil {
		return nil
	}
	return linkPorts{d.ports}
}
