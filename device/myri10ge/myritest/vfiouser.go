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

// endpoint is the side of vfio-user the adapters drive: region reads and
// writes and SET_IRQS, made over a socket by a vfiousertest.Client or
// answered in the same process by a pci.Function (both have these methods).
type endpoint interface {
	ReadRegion(index uint32, off uint64, p []byte) error
	WriteRegion(index uint32, off uint64, p []byte) error
	SetIRQs(index, flags, start, count uint32, fds []int, data []byte) error
}

// card is a Bus and Interrupts over an endpoint: BAR0 is region 0, config
// space region 7 (pci.RegionConfig), and interrupts are eventfds handed to
// the device by SET_IRQS, one per vector (MSI and MSI-X capability writes
// are QEMU's business and never reach the device).
type card struct {
	ep       endpoint
	tb       testing.TB
	closeFDs bool // SET_IRQS does not take ownership of the fds

	mu    sync.Mutex
	index uint32
	evs   []*msitest.EventFD
}

var _ interface {
	Bus
	Interrupts
	EOIer
} = (*card)(nil)

func (c *card) WriteBAR0(off uint64, p []byte) error { return c.ep.WriteRegion(0, off, p) }
func (c *card) ReadBAR0(off uint64, p []byte) error  { return c.ep.ReadRegion(0, off, p) }
func (c *card) ReadConfig(off uint64, p []byte) error {
	return c.ep.ReadRegion(pci.RegionConfig, off, p)
}
func (c *card) WriteConfig(off uint64, p []byte) error {
	return c.ep.WriteRegion(pci.RegionConfig, off, p)
}

// VFIOUser is a Bus and Interrupts over a vfio-user connection, making
// the messages QEMU's vfio-user-pci makes for a guest running the driver:
// BAR0 stores as posted REGION_WRITEs (NO_REPLY), loads as REGION_READs,
// config space as region 7, and interrupts through eventfds handed over
// with SET_IRQS. The client checks every reply; see c.Err.
type VFIOUser struct {
	card
	c *vfiousertest.Client
}

var _ Flusher = (*VFIOUser)(nil)

// NewVFIOUser returns the adapter for a negotiated client. Eventfds it
// creates are closed by tb.Cleanup at the latest.
func NewVFIOUser(tb testing.TB, c *vfiousertest.Client) *VFIOUser {
	// The client sends duplicates of the fds; ours stay ours.
	return &VFIOUser{card: card{ep: c, tb: tb, closeFDs: true}, c: c}
}

// WriteBAR0 is a posted REGION_WRITE, as QEMU sends a guest's MMIO store.
func (v *VFIOUser) WriteBAR0(off uint64, p []byte) error { return v.c.PostWriteRegion(0, off, p) }

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
type Function struct{ card }

// NewFunction returns the adapter for f. Attach guest memory with
// AttachRAM first.
func NewFunction(tb testing.TB, f *pci.Function) *Function {
	return &Function{card{ep: f, tb: tb}} // f.SetIRQs takes the fds
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

// maxFDsPerMsg is QEMU's limit of fds in one SET_IRQS.
const maxFDsPerMsg = 16

func (c *card) Enable(mode IRQMode, vectors int) error {
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
		evs[i] = msitest.NewEventFD(c.tb)
	}
	for start := 0; start < vectors; start += maxFDsPerMsg {
		n := min(maxFDsPerMsg, vectors-start)
		fds := make([]int, n)
		for i := range fds {
			fds[i] = evs[start+i].Fd()
		}
		err := c.ep.SetIRQs(uint32(index), msi.DataEventfd|msi.ActionTrigger, uint32(start), uint32(n), fds, nil)
		if c.closeFDs {
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
	c.mu.Lock()
	c.index, c.evs = uint32(index), evs
	c.mu.Unlock()
	return nil
}

func (c *card) Disable() error {
	c.mu.Lock()
	index, evs := c.index, c.evs
	c.evs = nil
	c.mu.Unlock()
	if evs == nil {
		return nil
	}
	err := c.ep.SetIRQs(index, msi.DataNone|msi.ActionTrigger, 0, 0, nil, nil)
	for _, ev := range evs {
		ev.Close()
	}
	return err
}

func (c *card) Wait(ctx context.Context, vector int) error {
	c.mu.Lock()
	evs := c.evs
	c.mu.Unlock()
	if vector < 0 || vector >= len(evs) {
		return fmt.Errorf("myritest: wait for vector %d: %d enabled", vector, len(evs))
	}
	return evs[vector].Wait(ctx)
}

// EOI unmasks INTx after the handler ran (VFIO automasks it).
func (c *card) EOI() error {
	c.mu.Lock()
	index := c.index
	c.mu.Unlock()
	if index != uint32(msi.INTx) {
		return nil
	}
	return c.ep.SetIRQs(index, msi.DataNone|msi.ActionUnmask, 0, 1, nil, nil)
}
