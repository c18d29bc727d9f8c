package dma

import (
	"testing"

	"github.com/myriemu/myriemu/fault"
)

// wrapped is a Space that forwards to another, as serve's observer does.
type wrapped struct{ Space }

func (w wrapped) Unwrap() Space { return w.Space }

// The doors serve puts in front of a device's memory must not hide the Map:
// the device's unmap watcher and the audit's mapping checks need it (they
// once found nothing under serve and silently watched no DMA_UNMAP).
func TestMapOfLooksThroughDoors(t *testing.T) {
	m, _, _ := accessFixture(t)
	set := fault.NewSet(1, nil)
	mem := wrapped{WithFaults(m, set, "dev0")}
	if got := MapOf(mem); got != m {
		t.Fatalf("MapOf(observer(fault door(map))) = %p, want %p", got, m)
	}
	if MapOf(wrapped{nil}) != nil || MapOf(nil) != nil {
		t.Error("MapOf of a Space without a Map is not nil")
	}

	var unmapped [][2]uint64
	stop := WatchUnmap(mem, func(iova, last uint64) { unmapped = append(unmapped, [2]uint64{iova, last}) })
	if stop == nil {
		t.Fatal("WatchUnmap through the doors installed nothing")
	}
	defer stop()
	a := NewAudit(mem, AuditObserve, nil, nil)
	defer a.Close()
	if err := m.Remove(0x10000, 0x4000); err != nil {
		t.Fatal(err)
	}
	if len(unmapped) != 1 || unmapped[0] != [2]uint64{0x10000, 0x13fff} {
		t.Errorf("unmap watcher saw %x, want one unmap of [0x10000, 0x13fff]", unmapped)
	}
	if a.Epoch() != 1 {
		t.Errorf("audit epoch %d after one unmap, want 1", a.Epoch())
	}
	if !a.BusMaster() {
		t.Error("the audit does not see the map's bus master bit")
	}
	m.SetBusMaster(false)
	if a.BusMaster() {
		t.Error("the audit missed bus mastering going off behind the doors")
	}
}
