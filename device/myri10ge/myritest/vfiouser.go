package myritest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/msi/msitest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// VFIOUser is a Bus and Interrupts over a vfio-user connection, making
// the messages QEMU's vfio-user-pci makes for a guest running the driver:
// BAR0 stores as posted REGION_WRITEs (NO_REPLY), loads as REGION_READs,
// config space as region 7, and interrupts through eventfds handed over
// with SET_IRQS (MSI and MSI-X capability writes are QEMU's business and
// never reach the device). The client checks every reply; see c.Err.
type VFIOUser struct {
	c *vfiousertest.Client
	eventIRQ
}

var (
	_ Bus        = (*VFIOUser)(nil)
	_ Flusher    = (*VFIOUser)(nil)
	_ Interrupts = (*VFIOUser)(nil)
	_ EOIer      = (*VFIOUser)(nil)
)

// NewVFIOUser returns the adapter for a negotiated client. Eventfds it
// creates are closed by tb.Cleanup at the latest.
func NewVFIOUser(tb testing.TB, c *vfiousertest.Client) *VFIOUser {
	v := &VFIOUser{c: c}
	v.tb = tb
	v.setIRQs = func(index, flags, start, count uint32, fds []int) error {
		return c.SetIRQs(index, flags, start, count, fds, nil)
	}
	v.closeFDs = true // the client sends duplicates; ours stay ours
	return v
}

func (v *VFIOUser) WriteBAR0(off uint64, p []byte) error { return v.c.PostWriteRegion(0, off, p) }
func (v *VFIOUser) ReadBAR0(off uint64, p []byte) error  { return v.c.ReadRegion(0, off, p) }
func (v *VFIOUser) ReadConfig(off uint64, p []byte) error {
	return v.c.ReadRegion(vfiousertest.RegionConfig, off, p)
}
func (v *VFIOUser) WriteConfig(off uint64, p []byte) error {
	return v.c.WriteRegion(vfiousertest.RegionConfig, off, p)
}

// Flush is a synchronous request: the server handles messages in order,
// so its reply comes after every earlier posted store was handled.
func (v *VFIOUser) Flush() error { return v.c.Sync() }

// NewVFIOUserMemory maps size bytes of fresh memfd RAM into the client at
// iova (DMA_MAP with the fd, as QEMU maps shared guest RAM) and returns
// the driver's allocator over it.
func NewVFIOUserMemory(tb testing.TB, c *vfiousertest.Client, size int, iova uint64) (*Memory, error) {
	tb.Helper()
	ram := dmatest.NewRAM(tb, size)
	if err := c.MapRAM(ram, iova); err != nil {
		return nil, fmt.Errorf("myritest: map %d bytes of RAM at %#x: %w", size, iova, err)
	}
	return NewMemory(ram.Bytes(), iova), nil
}

// Function is a Bus and Interrupts over a pci.Function in the same
// process, called as vfiouser.Server would call it for QEMU: every store
// is handled before WriteBAR0 returns, with no socket in between.
type Function struct {
	f *pci.Function
	eventIRQ
}

var (
	_ Bus        = (*Function)(nil)
	_ Interrupts = (*Function)(nil)
	_ EOIer      = (*Function)(nil)
)

// NewFunction returns the adapter for f. Attach guest memory with
// AttachRAM first.
func NewFunction(tb testing.TB, f *pci.Function) *Function {
	a := &Function{f: f}
	a.tb = tb
	a.setIRQs = func(index, flags, start, count uint32, fds []int) error {
		return f.SetIRQs(index, flags, start, count, fds, nil) // takes the fds
	}
	return a
}

func (a *Function) WriteBAR0(off uint64, p []byte) error { return a.f.WriteRegion(0, off, p) }
func (a *Function) ReadBAR0(off uint64, p []byte) error  { return a.f.ReadRegion(0, off, p) }
func (a *Function) ReadConfig(off uint64, p []byte) error {
	return a.f.ReadRegion(pci.RegionConfig, off, p)
}
func (a *Function) WriteConfig(off uint64, p []byte) error {
	return a.f.WriteRegion(pci.RegionConfig, off, p)
}

// AttachRAM attaches f to size bytes of fresh memfd RAM at iova, as a
// vfio-user client's DMA_MAP would, and returns the driver's allocator
// over it. tb.Cleanup detaches f and closes the map.
func AttachRAM(tb testing.TB, f *pci.Function, size int, iova uint64) (*Memory, error) {
	tb.Helper()
	ram := dmatest.NewRAM(tb, size)
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	m := dma.NewMap(logrus.NewEntry(log).WithField("component", "dma"))
	if err := m.Add(dma.Mapping{IOVA: iova, Size: uint64(size), Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		return nil, fmt.Errorf("myritest: map %d bytes at %#x: %w", size, iova, err)
	}
	if err := f.Attach(m); err != nil {
		m.Close()
		return nil, err
	}
	tb.Cleanup(func() {
		f.Detach()
		m.Close()
	})
	return NewMemory(ram.Bytes(), iova), nil
}

// eventIRQ implements Interrupts with one eventfd per vector, handed to
// the device by SET_IRQS.
type eventIRQ struct {
	tb       testing.TB
	setIRQs  func(index, flags, start, count uint32, fds []int) error
	closeFDs bool // setIRQs does not take ownership of the fds

	mu    sync.Mutex
	index uint32
	evs   []*msitest.EventFD
}

// maxFDsPerMsg is QEMU's limit of fds in one SET_IRQS.
const maxFDsPerMsg = 16

func (e *eventIRQ) Enable(mode IRQMode, vectors int) error {
	var index msi.Index
	switch mode {
	case ModeINTx:
		index = msi.INTx
	case ModeMSI:
		index = msi.MSI
	case ModeMSIX:
		index = msi.MSIX
	default:
		return fmt.Errorf("myritest: enable %s: %w", mode, unix.EINVAL)
	}
	if vectors < 1 || (mode != ModeMSIX && vectors != 1) {
		return fmt.Errorf("myritest: enable %s with %d vectors: %w", mode, vectors, unix.EINVAL)
	}
	evs := make([]*msitest.EventFD, vectors)
	for i := range evs {
		evs[i] = msitest.NewEventFD(e.tb)
	}
	for start := 0; start < vectors; start += maxFDsPerMsg {
		n := min(maxFDsPerMsg, vectors-start)
		fds := make([]int, n)
		for i := range fds {
			fds[i] = evs[start+i].Fd()
		}
		err := e.setIRQs(uint32(index), msi.DataEventfd|msi.ActionTrigger, uint32(start), uint32(n), fds)
		if e.closeFDs {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		if err != nil {
			for _, ev := range evs {
				ev.Close()
			}
			return err
		}
	}
	e.mu.Lock()
	e.index, e.evs = uint32(index), evs
	e.mu.Unlock()
	return nil
}

func (e *eventIRQ) Disable() error {
	e.mu.Lock()
	index, evs := e.index, e.evs
	e.evs = nil
	e.mu.Unlock()
	if evs == nil {
		return nil
	}
	err := e.setIRQs(index, msi.DataNone|msi.ActionTrigger, 0, 0, nil)
	for _, ev := range evs {
		ev.Close()
	}
	return err
}

func (e *eventIRQ) Wait(ctx context.Context, vector int) error {
	e.mu.Lock()
	evs := e.evs
	e.mu.Unlock()
	if vector < 0 || vector >= len(evs) {
		return fmt.Errorf("myritest: wait for vector %d: %d enabled", vector, len(evs))
	}
	return evs[vector].Wait(ctx)
}

// EOI unmasks INTx after the handler ran (VFIO automasks it).
func (e *eventIRQ) EOI() error {
	e.mu.Lock()
	index := e.index
	e.mu.Unlock()
	if index != uint32(msi.INTx) {
		return nil
	}
	return e.setIRQs(index, msi.DataNone|msi.ActionUnmask, 0, 1, nil)
}
