package main

import (
	"time"

	"github.com/myriemu/myriemu/control"
	"github.com/myriemu/myriemu/device/myrimx"
)

// The myrimx device's counters in query-counters, and its log of retired
// registrations (query-registrations with retired: true).

// addMyrimxCounters sets the "myrimx" member of query-counters if dev is
// a myrimx device: its counters, its retirements per DEREG reason and
// every endpoint's counters.
func addMyrimxCounters(counters map[string]any, dev device) {
	mx, ok := dev.(*myrimx.Device)
	if !ok {
		return
	}
	out := snakeFields(mx.Counters())
	out["deregs_by_reason"] = mx.DeregsByReason()
	eps := []map[string]any{}
	for _, e := range mx.EndpointCounters() {
		eps = append(eps, snakeFields(e))
	}
	out["endpoints"] = eps
	_, out["retired_total"] = mx.Retired()
	counters["myrimx"] = out
}

// retiredInfo is one element of query-registrations {retired: true}.
type retiredInfo struct {
	Seq          uint64 `json:"seq"`
	Endpoint     int    `json:"endpoint"`
	ID           uint32 `json:"id"`
	Generation   uint32 `json:"generation"`
	Reason       string `json:"reason"`
	Pages        int    `json:"pages"`
	Length       uint64 `json:"length"`
	UserVA       uint64 `json:"user-va"`
	Registered   string `json:"registered"` // RFC 3339, UTC
	Retired      string `json:"retired"`
	Ops          uint64 `json:"ops"`
	BytesRead    uint64 `json:"bytes-read"`
	BytesWritten uint64 `json:"bytes-written"`
}

// RetiredRegistrations serves query-registrations {retired: true} (as
// control.RetiredLister).
func (t *target) RetiredRegistrations() (any, error) {
	mx, ok := t.dev.(*myrimx.Device)
	if !ok {
		return nil, control.ErrNotSupported
	}
	list, _ := mx.Retired()
	out := make([]retiredInfo, 0, len(list))
	for _, r := range list {
		out = append(out, retiredInfo{Seq: r.Seq, Endpoint: r.Endpoint, ID: r.ID, Generation: r.Gen,
			Reason: r.Reason.String(), Pages: r.Pages, Length: r.Length, UserVA: r.UserVA,
			Registered: r.Registered.UTC().Format(time.RFC3339Nano), Retired: r.Retired.UTC().Format(time.RFC3339Nano),
			Ops: r.Ops, BytesRead: r.BytesRead, BytesWritten: r.BytesWritten})
	}
	return out, nil
}
