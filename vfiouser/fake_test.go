package vfiouser

import (
	"errors"
	"fmt"
	"sync"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/pci"
	"golang.org/x/sys/unix"
)

// FakeFunction is a Function for tests (exported to vfiouser_test): BAR0
// 4 KiB trapped registers, BAR2 16 KiB memfd-backed and mmappable with a
// sparse layout (first page trapped), BAR4 4 KiB read-only, config 256
// bytes, ROM/VGA absent. IRQs: INTx 1, MSI 1, MSI-X 4 (NORESIZE), ERR 0,
// REQ refused. Hooks let tests inject errors, panics and DMA from the
// reader.
type FakeFunction struct {
	mu       sync.Mutex
	regions  [pci.NumRegions][]byte
	bar2fd   int
	bar2     []byte
	irqFDs   map[[2]uint32]int
	attached bool
	mem      *dma.Map

	Attaches, Detaches, Resets int
	SetIRQCalls                []SetIRQCall

	// OnWrite, if set, runs for every WriteRegion before it is stored;
	// its error is returned.
	OnWrite func(index uint32, off uint64, p []byte) error
	// AttachErr is returned by Attach.
	AttachErr error
	// injectPanics enables the panic at FakePanicOffset.
	injectPanics bool
}

// InjectPanics makes a BAR0 write at FakePanicOffset panic.
func (f *FakeFunction) InjectPanics() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.injectPanics = true
}

// SetOnWrite sets OnWrite safely while a client is connected.
func (f *FakeFunction) SetOnWrite(fn func(index uint32, off uint64, p []byte) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.OnWrite = fn
}

// SetIRQCall records one SetIRQs.
type SetIRQCall struct {
	Index, Flags, Start, Count uint32
	NumFDs                     int
	Data                       []byte
}

// Magic offsets in BAR0: a write there panics (after InjectPanics) /
// fails with EIO.
const (
	FakePanicOffset = 0xf00
	FakeEIOOffset   = 0xf04
)

// NewFakeFunction returns a fake with its BAR2 memfd; Close releases it.
func NewFakeFunction() (*FakeFunction, error) {
	fd, err := unix.MemfdCreate("fake-bar2", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(fd, 16384); err != nil {
		unix.Close(fd)
		return nil, err
	}
	mem, err := unix.Mmap(fd, 0, 16384, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := &FakeFunction{bar2fd: fd, bar2: mem, irqFDs: make(map[[2]uint32]int)}
	f.regions[0] = make([]byte, 4096)
	f.regions[2] = mem
	f.regions[4] = make([]byte, 4096)
	f.regions[7] = make([]byte, 256)
	copy(f.regions[7], []byte{0x34, 0x12, 0x57, 0x7e}) // vendor/device
	return f, nil
}

// Close releases BAR2 and any eventfds still held.
func (f *FakeFunction) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, fd := range f.irqFDs {
		unix.Close(fd)
		delete(f.irqFDs, k)
	}
	if f.bar2 != nil {
		unix.Munmap(f.bar2)
		unix.Close(f.bar2fd)
		f.bar2 = nil
	}
}

// BAR2Fd is the memfd behind BAR2 (owned by the fake).
func (f *FakeFunction) BAR2Fd() int { return f.bar2fd }

// Mem is the DMA map of the attached client, or nil.
func (f *FakeFunction) Mem() *dma.Map {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mem
}

// Counts returns attach/detach/reset counts.
func (f *FakeFunction) Counts() (attaches, detaches, resets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Attaches, f.Detaches, f.Resets
}

// Calls returns the SetIRQs calls so far.
func (f *FakeFunction) Calls() []SetIRQCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SetIRQCall(nil), f.SetIRQCalls...)
}

// IRQFd returns the eventfd assigned to (index, sub), or -1.
func (f *FakeFunction) IRQFd(index, sub uint32) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fd, ok := f.irqFDs[[2]uint32{index, sub}]; ok {
		return fd
	}
	return -1
}

// Trigger writes 1 to the eventfd of (index, sub) as a device would.
func (f *FakeFunction) Trigger(index, sub uint32) error {
	fd := f.IRQFd(index, sub)
	if fd < 0 {
		return errors.New("no eventfd")
	}
	var b [8]byte
	b[0] = 1
	_, err := unix.Write(fd, b[:])
	return err
}

func (f *FakeFunction) DeviceInfo() (uint32, uint32) { return pci.NumRegions, pci.NumIRQIndexes }

func (f *FakeFunction) RegionInfo(index uint32) (pci.RegionInfo, error) {
	ri := pci.RegionInfo{Fd: -1}
	switch index {
	case 0, 7:
		ri.Size, ri.Flags = uint64(len(f.regions[index])), pci.RegionRead|pci.RegionWrite
	case 2:
		ri.Size, ri.Flags, ri.Fd = 16384, pci.RegionRead|pci.RegionWrite|pci.RegionMmap, f.bar2fd
		ri.Sparse = []pci.Area{{Offset: 4096, Size: 12288}}
	case 4:
		ri.Size, ri.Flags = 4096, pci.RegionRead
	case 1, 3, 5, 6, 8:
	default:
		return ri, fmt.Errorf("fake: region %d: %w", index, unix.EINVAL)
	}
	return ri, nil
}

func (f *FakeFunction) IRQInfo(index uint32) (pci.IRQInfo, error) {
	switch index {
	case 0, 1:
		return pci.IRQInfo{Count: 1, Flags: pci.IRQEventfd}, nil
	case 2:
		return pci.IRQInfo{Count: 4, Flags: pci.IRQEventfd | pci.IRQNoResize}, nil
	case 3:
		return pci.IRQInfo{Count: 0, Flags: pci.IRQEventfd}, nil
	}
	return pci.IRQInfo{}, fmt.Errorf("fake: irq index %d: %w", index, unix.EINVAL)
}

func (f *FakeFunction) ReadRegion(index uint32, off uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.regions[index]
	if off+uint64(len(p)) > uint64(len(r)) {
		panic(fmt.Sprintf("fake: read %d@%#x past region %d: the server must have checked", len(p), off, index))
	}
	copy(p, r[off:])
	return nil
}

func (f *FakeFunction) WriteRegion(index uint32, off uint64, p []byte) error {
	f.mu.Lock()
	inject := f.injectPanics
	f.mu.Unlock()
	if inject && index == 0 && off == FakePanicOffset {
		panic("fake: injected panic")
	}
	if index == 0 && off == FakeEIOOffset {
		return fmt.Errorf("fake: injected: %w", unix.EIO)
	}
	f.mu.Lock()
	hook := f.OnWrite
	f.mu.Unlock()
	if hook != nil {
		if err := hook(index, off, p); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.regions[index]
	if off+uint64(len(p)) > uint64(len(r)) {
		panic(fmt.Sprintf("fake: write %d@%#x past region %d: the server must have checked", len(p), off, index))
	}
	copy(r[off:], p)
	return nil
}

func (f *FakeFunction) SetIRQs(index, flags, start, count uint32, fds []int, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.SetIRQCalls = append(f.SetIRQCalls, SetIRQCall{index, flags, start, count, len(fds), append([]byte(nil), data...)})
	info, err := f.IRQInfo(index)
	if err != nil || uint64(start)+uint64(count) > uint64(info.Count) && !(count == 0 && flags&IRQDataNone != 0) {
		closeFDs(fds)
		return fmt.Errorf("fake: set irqs %d %d+%d: %w", index, start, count, unix.EINVAL)
	}
	if count == 0 && flags&IRQDataNone != 0 && flags&IRQActionTrigger != 0 {
		for k, fd := range f.irqFDs {
			if k[0] == index {
				unix.Close(fd)
				delete(f.irqFDs, k)
			}
		}
		return nil
	}
	if flags&IRQDataEventfd != 0 && flags&IRQActionTrigger != 0 {
		for i := range count {
			k := [2]uint32{index, start + i}
			if old, ok := f.irqFDs[k]; ok {
				unix.Close(old)
				delete(f.irqFDs, k)
			}
			if int(i) < len(fds) {
				f.irqFDs[k] = fds[i]
			}
		}
		return nil
	}
	closeFDs(fds)
	return nil
}

func (f *FakeFunction) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Resets++
	clear(f.regions[0])
}

func (f *FakeFunction) Attach(mem *dma.Map) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.AttachErr != nil {
		return f.AttachErr
	}
	if f.attached {
		panic("fake: Attach twice without Detach")
	}
	f.Attaches++
	f.attached = true
	f.mem = mem
	mem.SetBusMaster(true)
	return nil
}

func (f *FakeFunction) Detach() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.attached {
		panic("fake: Detach without Attach")
	}
	f.Detaches++
	f.attached = false
	f.mem = nil
	for k, fd := range f.irqFDs {
		unix.Close(fd)
		delete(f.irqFDs, k)
	}
}

var _ Function = (*FakeFunction)(nil)
var _ Function = (*pci.Function)(nil)
