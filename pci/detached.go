package pci

import (
	"sync/atomic"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/msi"
)

// DetachedHost returns the Host a device model holds while no client is
// attached: every DMA fails with a *dma.Error wrapping dma.ErrClosed (as
// after the client closed its map) and interrupts are only counted. A
// model starts with it and goes back to it in Detach, so that its code
// never needs to ask whether a client is there: with no client its DMA
// aborts and its interrupts go nowhere, as a card's would on a bus nobody
// listens to.
func DetachedHost() Host {
	return Host{Mem: closedSpace{}, IRQ: &DroppedIRQs{}}
}

// closedSpace is guest memory after the client left.
type closedSpace struct{}

var _ dma.Space = closedSpace{}

func (closedSpace) ReadAt(p []byte, addr uint64) (int, error) {
	return 0, &dma.Error{Op: dma.Read, Addr: addr, Len: len(p), Err: dma.ErrClosed}
}

func (closedSpace) WriteAt(p []byte, addr uint64) (int, error) {
	return 0, &dma.Error{Op: dma.Write, Addr: addr, Len: len(p), Err: dma.ErrClosed}
}

func (closedSpace) Store32(addr uint64, _ uint32) error {
	return &dma.Error{Op: dma.Write, Addr: addr, Len: 4, Err: dma.ErrClosed}
}

// DroppedIRQs is the interrupt door of a detached device: it counts
// raises and reports that no mechanism is enabled.
type DroppedIRQs struct{ raised atomic.Uint64 }

var _ msi.Raiser = (*DroppedIRQs)(nil)

// Raise counts the interrupt and drops it.
func (d *DroppedIRQs) Raise(int) { d.raised.Add(1) }

// Lower does nothing: no line is asserted.
func (d *DroppedIRQs) Lower() {}

// Mode is always msi.ModeNone.
func (d *DroppedIRQs) Mode() msi.Mode { return msi.ModeNone }

// Raised reports how many interrupts were dropped.
func (d *DroppedIRQs) Raised() uint64 { return d.raised.Load() }
