package testdev

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/myriemu/myriemu/device/testdev/abi"

	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/wcbar"
	"github.com/sirupsen/logrus"
)

// window is what the device needs of its BAR4 memory; *wcbar.Window in
// production, a fake in some tests.
type window interface {
	ReadAt(p []byte, off uint64) (int, error)
	WriteAt(p []byte, off uint64) (int, error)
	Load32(off uint64) uint32
	Store32(off uint64, v uint32)
	Watch(off uint64, fn func(v uint32))
	Start()
	Stop()
}

// Device is the testdev model. It implements pci.Device.
//
// Goroutines: the DMA engine (runEngine) runs from Attach to Detach; the
// window's poller (owned by the window) calls winDoorbell between the
// window's Start and Stop, which Attach and Detach call.
type Device struct {
	name string
	log  *logrus.Entry
	win  window
	bar4 *wcbar.Window // nil in tests with a fake window
	warn *ratelog.Limiter

	// gen is bumped (under mu) by Reset and Detach; the engine compares it
	// between pieces and before completing, so a cancelled op never
	// completes.
	gen atomic.Uint64

	mu      sync.Mutex
	r       regs
	line    bool          // INTx level last signalled
	host    pci.Host      // pci.DetachedHost() while no client is attached
	pending *job          // doorbell accepted, not yet taken by the engine
	kick    chan struct{} // wakes the engine; cap 1; nil while it does not run
	quit    chan struct{} // closed by Detach
	wg      sync.WaitGroup

	winBuf []byte // used only by winDoorbell, on the poller goroutine
}

var _ pci.Device = (*Device)(nil)

// New returns a testdev named name (used in logs and as the window's memfd
// name). log should carry the device field; component=testdev is added.
// Close releases the window once the device is no longer served.
func New(name string, log *logrus.Entry) (*Device, error) {
	w, err := wcbar.New(name+"-bar4", abi.WindowSize, log)
	if err != nil {
		return nil, fmt.Errorf("testdev: %s: window: %w", name, err)
	}
	w.Trap(abi.WinTrapped, abi.WinTrappedSize)
	d := newDevice(name, w, log)
	d.bar4 = w
	return d, nil
}

// newDevice builds the device around win and registers the doorbell watch.
func newDevice(name string, win window, log *logrus.Entry) *Device {
	d := &Device{
		name:   name,
		log:    log.WithFields(logrus.Fields{"component": "testdev", "device": name}),
		win:    win,
		host:   pci.DetachedHost(),
		warn:   ratelog.New(),
		winBuf: make([]byte, winChunk),
	}
	win.Watch(abi.WinDBDoorbell, d.winDoorbell)
	return d
}

// Close releases the window. Call it after the device is detached and no
// longer served.
func (d *Device) Close() error {
	if d.bar4 == nil {
		return nil
	}
	if err := d.bar4.Close(); err != nil {
		return fmt.Errorf("testdev: %s: close window: %w", d.name, err)
	}
	return nil
}

// Spec describes the function: see README.md, "Identity and layout".
func (d *Device) Spec() pci.Spec {
	return pci.Spec{
		VendorID:          abi.VendorID,
		DeviceID:          abi.DeviceID,
		SubsystemVendorID: abi.VendorID,
		SubsystemID:       abi.DeviceID,
		Revision:          abi.Revision,
		Class:             abi.Class,
		BARs: [6]pci.BAR{
			abi.RegsBAR:   {Size: abi.RegsSize},
			abi.MSIXBAR:   {Size: abi.MSIXSize},
			abi.WindowBAR: {Size: abi.WindowSize, Flags: pci.BARMem64 | pci.BARPrefetch, Window: d.bar4},
		},
		InterruptPin: 1,
		PM:           &pci.PMCap{},
		MSI:          &pci.MSICap{Vectors: 1, Addr64: true},
		PCIe:         &pci.PCIeCap{MaxPayload: 256, LinkWidth: 1, LinkSpeed: 1},
		MSIX: &pci.MSIXCap{
			Vectors:     abi.NumVectors,
			TableBAR:    abi.MSIXBAR,
			TableOffset: abi.MSIXTable,
			PBABAR:      abi.MSIXBAR,
			PBAOffset:   abi.MSIXPBA,
		},
	}
}

// Attach starts the DMA engine and the window's doorbell poller.
func (d *Device) Attach(h pci.Host) error {
	if h.Mem == nil || h.IRQ == nil {
		return fmt.Errorf("testdev: %s: attach: host without memory or interrupts", d.name)
	}
	if !d.startEngine(h) {
		return fmt.Errorf("testdev: %s: attach: already attached", d.name)
	}
	d.win.Start()
	return nil
}

// startEngine makes h the host and starts the DMA engine; it reports
// false, changing nothing, if the engine runs already.
func (d *Device) startEngine(h pci.Host) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kick != nil {
		return false
	}
	d.host = h
	d.kick = make(chan struct{}, 1)
	d.quit = make(chan struct{})
	d.wg.Add(1)
	go d.runEngine(h.Mem, d.kick, d.quit)
	return true
}

// Detach cancels any op in flight, stops the engine and the poller and
// waits for them. Idempotent.
func (d *Device) Detach() {
	if !d.stopEngine() {
		return
	}
	d.win.Stop()
	d.wg.Wait()
}

// stopEngine cancels any op in flight, detaches the host and tells the
// engine to stop, without waiting for it; it reports false if the engine
// was not running.
func (d *Device) stopEngine() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kick == nil {
		return false
	}
	d.kick = nil
	d.gen.Add(1)
	d.pending = nil
	d.host = pci.DetachedHost()
	d.line = false
	close(d.quit)
	return true
}

// Reset returns the registers to their reset values and cancels any op in
// flight: no completion of it will ever show. It does not wait for the
// engine (which may be in a message DMA that needs the protocol reader this
// runs on); at most the piece in flight still lands.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen.Add(1)
	d.pending = nil
	d.r = regs{}
	d.lowerLineLocked()
}
