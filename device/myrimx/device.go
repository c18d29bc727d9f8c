package myrimx

import (
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
)

// Config describes one myrimx NIC.
type Config struct {
	Name      string
	Hub       *Hub // the process's myrimx NICs; sends reach any endpoint of its NICs
	Endpoints int  // 1..MaxEndpoints; 0 means DefaultEndpoints
	Audit     dma.AuditMode
	// NICID is the 48-bit MX nic id; 0 derives one from Name.
	NICID uint64
	Log   *logrus.Entry
}

// DefaultEndpoints is the endpoint count when Config.Endpoints is 0.
const DefaultEndpoints = 4

// Device is one myrimx NIC. It implements pci.Device.
//
// Goroutines: runWorker runs from Attach to Detach; it processes the
// endpoints' command rings and moves the transfers its commands matched,
// one chunk of each in turn. Register accesses, DMA_UNMAP revocations and
// resets run on the caller's goroutine (the protocol reader).
//
// Locks, in the order they may be taken: cmdMu, Hub.mu, endpoint.mu.
// endpoint.eqMu and the dma map's locks are leaves; region.mu (read by a
// chunk, written by an invalidation) is never waited for under Hub.mu.
type Device struct {
	name  string
	hub   *Hub
	nicID uint64
	nEP   int
	log   *logrus.Entry
	warn  *ratelog.Limiter

	auditMode atomic.Uint32
	sink      atomic.Pointer[func(AuditEvent)]

	eps []*endpoint

	// cmdMu serialises command processing with what the reader does to the
	// same state: endpoint open/close, INV_SYNC, DMA_UNMAP, reset.
	cmdMu sync.Mutex

	// hostMu guards the attachment; event and status writers hold it for
	// reading so that Detach cannot pull the memory from under them.
	hostMu   sync.RWMutex
	host     pci.Host
	audit    *dma.Audit
	attached bool
	unwatch  func()
	kick     chan struct{}
	quit     chan struct{}
	wg       sync.WaitGroup

	inReset atomic.Bool

	// Owned by runWorker.
	active []*transfer
	buf    []byte

	devStatus atomic.Uint32
	errInfo   atomic.Uint32
	stats     stats
	retired   retiredLog
}

// stats are the device's counters (Counters).
type stats struct {
	commands, badCommands, chunks, bytes, sends, recvs atomic.Uint64
	regs, deregs, revoked, eqOverflows, dmaFaults      atomic.Uint64
	fences                                             atomic.Uint64
	deregsByReason                                     [reasonSlots]atomic.Uint64
}

var _ pci.Device = (*Device)(nil)

// New creates a NIC and adds it to cfg.Hub. Close removes it.
func New(cfg Config) (*Device, error) {
	if cfg.Hub == nil {
		return nil, errors.New("myrimx: config without a hub")
	}
	if cfg.Endpoints == 0 {
		cfg.Endpoints = DefaultEndpoints
	}
	if cfg.Endpoints < 1 || cfg.Endpoints > MaxEndpoints {
		return nil, fmt.Errorf("myrimx: %s: %d endpoints, want 1..%d", cfg.Name, cfg.Endpoints, MaxEndpoints)
	}
	if cfg.Audit > dma.AuditEnforce {
		return nil, fmt.Errorf("myrimx: %s: audit mode %d", cfg.Name, cfg.Audit)
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.NICID == 0 {
		h := fnv.New32a()
		h.Write([]byte(cfg.Name))
		cfg.NICID = 0x0060dd000000 | uint64(h.Sum32()&0xffffff)
	}
	if cfg.NICID >= 1<<48 {
		return nil, fmt.Errorf("myrimx: %s: nic id %#x wider than 48 bits", cfg.Name, cfg.NICID)
	}
	d := &Device{
		name:  cfg.Name,
		hub:   cfg.Hub,
		nicID: cfg.NICID,
		nEP:   cfg.Endpoints,
		log:   cfg.Log.WithFields(logrus.Fields{"component": "myrimx", "device": cfg.Name}),
		warn:  ratelog.New(),
		buf:   make([]byte, Chunk),
	}
	d.auditMode.Store(uint32(cfg.Audit))
	for i := range d.nEP {
		d.eps = append(d.eps, newEndpoint(d, i))
	}
	if err := cfg.Hub.add(d); err != nil {
		return nil, err
	}
	d.devStatus.Store(DevRunning)
	return d, nil
}

// Close removes the NIC from its hub. Call it after Detach.
func (d *Device) Close() error {
	d.hub.remove(d)
	return nil
}

// NICID returns the NIC's MX nic id.
func (d *Device) NICID() uint64 { return d.nicID }

// Name returns the device's name.
func (d *Device) Name() string { return d.name }

// Spec describes the function: README "Identity and layout".
func (d *Device) Spec() pci.Spec {
	return pci.Spec{
		VendorID:          VendorID,
		DeviceID:          DeviceID,
		SubsystemVendorID: VendorID,
		SubsystemID:       DeviceID,
		Revision:          Revision,
		Class:             Class,
		BARs: [6]pci.BAR{
			RegsBAR: {Size: RegsSize, Flags: pci.BARMem64},
			MSIXBAR: {Size: MSIXSize},
		},
		PM:   &pci.PMCap{},
		PCIe: &pci.PCIeCap{MaxPayload: 256, LinkWidth: 8, LinkSpeed: 2},
		MSIX: &pci.MSIXCap{
			Vectors:     1 + d.nEP,
			TableBAR:    MSIXBAR,
			TableOffset: MSIXTable,
			PBABAR:      MSIXBAR,
			PBAOffset:   MSIXPBA,
		},
	}
}

// Attach starts the worker and watches the client's DMA_UNMAPs.
func (d *Device) Attach(h pci.Host) error {
	if h.Mem == nil || h.IRQ == nil {
		return fmt.Errorf("myrimx: %s: attach: host without memory or interrupts", d.name)
	}
	d.hostMu.Lock()
	defer d.hostMu.Unlock()
	if d.attached {
		return fmt.Errorf("myrimx: %s: attach: already attached", d.name)
	}
	d.host = h
	// The device's watcher first: the audit must record an unmap only
	// after the device revoked what it covers (dma.NewAudit).
	d.unwatch = dma.WatchUnmap(h.Mem, d.dmaUnmap)
	d.audit = dma.NewAudit(h.Mem, dma.AuditMode(d.auditMode.Load()), auditSource{d}, d.auditEvent)
	d.attached = true
	d.kick = make(chan struct{}, 1)
	d.quit = make(chan struct{})
	d.wg.Add(1)
	go d.runWorker(d.kick, d.quit)
	d.log.Debug("attached")
	return nil
}

// Detach aborts every endpoint as a reset does (the peers' operations on
// its regions complete), stops the worker and waits for it. After it
// returns no DMA touches the host's memory. Idempotent.
func (d *Device) Detach() {
	d.hostMu.RLock()
	attached := d.attached
	d.hostMu.RUnlock()
	if !attached {
		return
	}
	d.cmdMu.Lock()
	for _, ep := range d.eps {
		d.closeEndpoint(ep, ReasonReset)
	}
	d.cmdMu.Unlock()

	d.hostMu.Lock()
	d.attached = false
	close(d.quit)
	d.hostMu.Unlock()
	d.wg.Wait()

	d.hostMu.Lock()
	if d.unwatch != nil {
		d.unwatch()
		d.unwatch = nil
	}
	d.audit.Close()
	d.host = pci.Host{}
	d.hostMu.Unlock()
	d.active = nil
	d.log.Debug("detached")
}

// Reset is DEVICE_RESET or FLR: every endpoint is closed, every
// registration dropped after its DMA drained (at most one chunk), and the
// peers' operations on them complete. Once quiesced, the audit sees the
// function in reset until the registers are back (A2).
func (d *Device) Reset() {
	d.cmdMu.Lock()
	defer d.cmdMu.Unlock()
	for _, ep := range d.eps {
		d.closeEndpoint(ep, ReasonReset)
	}
	// Quiesced: from here until the registers are back no DMA of this
	// device is legitimate (A2).
	d.inReset.Store(true)
	defer d.inReset.Store(false)
	for _, ep := range d.eps {
		ep.resetRegs()
	}
	d.devStatus.Store(DevRunning)
	d.errInfo.Store(0)
}

// runWorker processes command rings and moves matched transfers a chunk
// at a time, until quit.
func (d *Device) runWorker(kick <-chan struct{}, quit <-chan struct{}) {
	defer d.wg.Done()
	d.log.Debug("worker started")
	defer d.log.Debug("worker stopped")
	for {
		select {
		case <-quit:
			return
		default:
		}
		busy := false
		for _, ep := range d.eps {
			if d.serviceEndpoint(ep) {
				busy = true
			}
		}
		if len(d.active) > 0 {
			busy = true
			keep := d.active[:0]
			for _, t := range d.active {
				if !d.step(t) {
					keep = append(keep, t)
				}
			}
			clear(d.active[len(keep):])
			d.active = keep
		}
		if !busy {
			select {
			case <-kick:
			case <-quit:
				return
			}
		}
	}
}

// wake makes the worker look at the rings again.
func (d *Device) wake() {
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	if !d.attached {
		return
	}
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// raise signals a vector if attached.
func (d *Device) raise(vector int) {
	d.hostMu.RLock()
	defer d.hostMu.RUnlock()
	if d.attached {
		d.host.IRQ.Raise(vector)
	}
}

// dmaUnmap is the unmap watcher: QEMU is about to unmap [iova, last], so
// every registration with a page there is revoked (its DMA drained, its
// operations completed, REGION_REVOKED posted) before the client's
// DMA_UNMAP is answered (§6.7).
func (d *Device) dmaUnmap(iova, last uint64) {
	d.cmdMu.Lock()
	defer d.cmdMu.Unlock()
	for _, ep := range d.eps {
		for _, r := range ep.liveRegions() {
			if !r.overlaps(iova, last) {
				continue
			}
			if d.invalidate(r, ReasonDMAUnmap) {
				d.stats.revoked.Add(1)
				ep.post(event{typ: EvtRegionRevoked, region: r.id, gen: r.gen, reason: uint8(ReasonDMAUnmap)})
			}
		}
	}
}

func (d *Device) warnf(key, msg string, fields logrus.Fields) {
	d.warn.Warn(d.log.WithFields(fields), key, msg)
}
