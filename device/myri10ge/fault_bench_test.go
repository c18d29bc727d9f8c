package myri10ge_test

import (
	"testing"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/fault/faulttest"
)

// BenchmarkSendTakeFaultDoor: Take of a 1514-byte offload packet straight
// from the map (baseline), through the dma fault door with nothing armed,
// and with one armed rule that does not match, in the same run.
func BenchmarkSendTakeFaultDoor(b *testing.B) {
	e, posted, size := benchEnv(b, frameSpec{}, 1460, 0, []piece{{0x1000, -1}})
	nomatch := faulttest.Set(b, 1, "r: dma.read=fail; device=other")
	for _, c := range []struct {
		name string
		mem  dma.Space
	}{
		{"baseline", e.mem},
		{"door-idle", dma.WithFaults(e.mem, fault.NewSet(1, nil), "myri0")},
		{"door-armed-nomatch", dma.WithFaults(e.mem, nomatch, "myri0")},
	} {
		b.Run("case=cksum-1514/impl="+c.name, func(b *testing.B) { benchTake(b, e, posted, size, c.mem) })
	}
}
