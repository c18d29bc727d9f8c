package main

import (
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
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

// TestObservedSpaceRuns: serve's chain over guest memory (the fault door,
// then the observer) gets a dma.Run of its own, not the fallback that
// locks per access, and a failed access inside the run is still reported.
func TestObservedSpaceRuns(t *testing.T) {
	m := dma.NewMap(nil)
	m.SetBusMaster(true)
	defer m.Close()
	ram := dmatest.NewRAM(t, 0x1000)
	if err := m.Add(dma.Mapping{IOVA: 0x10000, Size: 0x1000, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		t.Fatal(err)
	}
	var reported []error
	obs := &observedSpace{Space: dma.WithFaults(m, nil, "myri0"), report: func(err error) { reported = append(reported, err) }}
	var run dma.Run
	mem := run.Begin(obs)
	defer run.End()
	if mem == dma.Space(obs) {
		t.Fatal("Begin handed back the chain itself: no run under serve's observer")
	}
	if err := mem.Store32(0x10004, 0x11223344); err != nil {
		t.Fatalf("Store32 in the run: %v", err)
	}
	if _, err := mem.ReadAt(make([]byte, 4), 0x20000); err == nil || len(reported) != 1 {
		t.Errorf("read outside the maps: %v, %d reported; want an error, reported once", err, len(reported))
	}
}
