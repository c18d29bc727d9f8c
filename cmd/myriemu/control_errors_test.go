package main

import (
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/leaktest"
)

// sinkDevice is a device that reports errors, as a Myri-10G does.
type sinkDevice struct{ sink func(myri10ge.ErrorEvent) }

func (s *sinkDevice) SetErrorSink(fn func(myri10ge.ErrorEvent)) { s.sink = fn }

// TestDeviceErrorEvents: a slice halt and a guest protocol error reported
// by a device reach a go-qemu client as DEVICE_ERROR with their details.
func TestDeviceErrorEvents(t *testing.T) {
	leaktest.Check(t)
	dev := &sinkDevice{}
	_, mon := startControl(t, "DEVICE_ERROR", func(d *doors, _ *fabric.Switch) { d.watchErrors(dev, "myri0") })
	mon.run(t, `{"execute":"query-status"}`) // events flow from the first command on
	dev.sink(myri10ge.ErrorEvent{Kind: "slice-halt", Slice: 1, What: "send gather", Detail: "fault injected"})
	dev.sink(myri10ge.ErrorEvent{Kind: "guest-error", Slice: -1, What: "MTU out of range", Detail: "frame=99999"})
	for _, want := range []map[string]any{
		{"device": "myri0", "kind": "slice-halt", "slice": 1.0, "what": "send gather", "detail": "fault injected"},
		{"device": "myri0", "kind": "guest-error", "what": "MTU out of range", "detail": "frame=99999"},
	} {
		select {
		case e := <-mon.kept:
			for k, v := range want {
				if e.Data[k] != v {
					t.Errorf("DEVICE_ERROR %s = %v, want %v (%v)", k, e.Data[k], v, e.Data)
				}
			}
			if _, ok := e.Data["slice"]; ok != (want["slice"] != nil) {
				t.Errorf("DEVICE_ERROR %v: slice present %v", e.Data, ok)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no DEVICE_ERROR %v", want["kind"])
		}
	}
}
