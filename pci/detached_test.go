package pci

import (
	"errors"
	"testing"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/msi"
)

func TestDetachedHost(t *testing.T) {
	h := DetachedHost()
	p := make([]byte, 8)
	if n, err := h.Mem.ReadAt(p, 0x1000); n != 0 || !errors.Is(err, dma.ErrClosed) {
		t.Errorf("ReadAt = %d, %v; want 0, ErrClosed", n, err)
	}
	if n, err := h.Mem.WriteAt(p, 0x1000); n != 0 || !errors.Is(err, dma.ErrClosed) {
		t.Errorf("WriteAt = %d, %v; want 0, ErrClosed", n, err)
	}
	err := h.Mem.Store32(0x2000, 1)
	var de *dma.Error
	if !errors.As(err, &de) || de.Op != dma.Write || de.Addr != 0x2000 || de.Len != 4 {
		t.Errorf("Store32 = %v; want a *dma.Error for the 4-byte write at 0x2000", err)
	}
	h.IRQ.Raise(0)
	h.IRQ.Raise(3)
	h.IRQ.Lower()
	if m := h.IRQ.Mode(); m != msi.ModeNone {
		t.Errorf("Mode = %v, want none", m)
	}
	if n := h.IRQ.(*DroppedIRQs).Raised(); n != 2 {
		t.Errorf("Raised = %d, want 2", n)
	}
	if DetachedHost().IRQ.(*DroppedIRQs) == h.IRQ.(*DroppedIRQs) {
		t.Error("two detached hosts share one counter")
	}
}
