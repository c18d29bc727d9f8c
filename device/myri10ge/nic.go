// Package myri10ge emulates a Myricom Myri-10G PCIe NIC (14c1:0008) for the
// unmodified Linux myri10ge driver: the SRAM image the driver adopts as
// running firmware, the command mailbox, send and receive rings, the
// interrupt block with its token protocol, and the wire through a fabric
// port.
//
// The reference for everything here is
// shared/reference/myri10ge-device-interface.md; comments cite its sections
// as §N. The driver's source is the final word.
package myri10ge

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
)

// PCI identity (§1.1).
const (
	classEthNIC = 0x020000
	revision    = 0x01 // "Myri10G-PCIE-8B"
)

const (
	// BAR2 holds the MSI-X table (at 0) and PBA (at msixPBAOff), as on real
	// boards; never in the write-combined BAR0.
	msixBARSize = 8 << 10
	msixPBAOff  = 0x1000

	// MaxSlices is the most slices (RSS queues, MSI-X vectors) a NIC
	// offers; the driver's own limit (MYRI10GE_MAX_SLICES).
	MaxSlices = 32
)

// Config describes one emulated NIC.
type Config struct {
	Name   string           // for logs, e.g. "myri0"
	MAC    net.HardwareAddr // permanent address in the EEPROM; unicast
	Serial uint32           // EEPROM serial number
	// Slices is what GET_MAX_RSS_QUEUES answers and the MSI-X table size
	// (1..MaxSlices). The driver only uses more than one slice when
	// loaded with myri10ge_max_slices != 1 and a firmware file present.
	Slices int
	// PIO is how BAR0's rings are reached: PIOMmap (pio.go; ParseOptions'
	// default) or PIOTrap (the zero value, every store a message).
	PIO  PIOMode
	Port fabric.Port
	Log  *logrus.Entry
}

func (c Config) validate() error {
	if err := c.validateOptions(); err != nil {
		return err
	}
	if c.Port == nil {
		return errors.New("myri10ge: no fabric port")
	}
	return nil
}

// NIC is one emulated Myri-10G. It implements pci.Device.
//
// All firmware state lives under mu: BAR writes (the protocol reader),
// received frames (the port's delivery goroutine) and coalescing timers
// take it in turn, as the single-threaded firmware of the real card would.
type NIC struct {
	cfg  Config
	log  *logrus.Entry
	warn *ratelog.Limiter

	mu       sync.Mutex
	bar0     []byte   // the SRAM and PIO windows, big-endian structures
	host     pci.Host // pci.DetachedHost() while no client is attached
	attached bool
	epoch    uint64 // bumped by every reset and detach; stale timers compare it
	fw       fwState
	slices   []*slice
	stats    Stats
	drops    dropCounters
	vendor   vendorWindow
	pio      pioState
	slow     slowResponse     // fw.cmd.slow (faults.go)
	errSink  func(ErrorEvent) // DEVICE_ERROR (counters.go)
}

var _ pci.Device = (*NIC)(nil)

// New returns a NIC in its power-on state.
func New(cfg Config) (*NIC, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	n := &NIC{
		cfg:  cfg,
		log:  cfg.Log.WithField("component", "myri10ge"),
		warn: ratelog.New(),
		host: pci.DetachedHost(),
	}
	if cfg.PIO == PIOMmap {
		w, err := newPIOWindow(cfg)
		if err != nil {
			return nil, err
		}
		n.pio.win = w
		n.bar0 = w.Bytes()
	} else {
		n.bar0 = make([]byte, abi.BAR0Size)
	}
	n.slices = make([]*slice, cfg.Slices)
	for i := range n.slices {
		n.slices[i] = newSlice(i)
	}
	n.mu.Lock()
	n.powerOnLocked()
	n.mu.Unlock()
	return n, nil
}

// Spec implements pci.Device (§1).
func (n *NIC) Spec() pci.Spec {
	var s pci.Spec
	s.VendorID, s.DeviceID = abi.VendorID, abi.DeviceID
	s.SubsystemVendorID, s.SubsystemID = abi.VendorID, abi.DeviceID
	s.Revision = revision
	s.Class = classEthNIC
	s.BARs[0] = pci.BAR{Size: abi.BAR0Size, Flags: pci.BARMem64 | pci.BARPrefetch}
	if n.pio.win != nil {
		s.BARs[0].Window = n.pio.win
	}
	s.BARs[2] = pci.BAR{Size: msixBARSize, Flags: pci.BARMem64}
	s.InterruptPin = 1 // INTx is the driver's fallback when MSI fails
	s.PM = &pci.PMCap{}
	s.MSI = &pci.MSICap{Vectors: 1, Addr64: true}
	s.Vendor = &pci.VendorCap{Length: vendorCapLen, Handler: &n.vendor}
	// A x4 link keeps the driver on its simple firmware selection path
	// (width < 8: no UNALIGNED_TEST, §3.4).
	s.PCIe = &pci.PCIeCap{MaxPayload: 256, LinkWidth: 4, LinkSpeed: 2}
	s.MSIX = &pci.MSIXCap{
		Vectors:  n.cfg.Slices,
		TableBAR: 2, TableOffset: 0,
		PBABAR: 2, PBAOffset: msixPBAOff,
	}
	return s
}

// ReadBAR implements pci.Device. BAR0 reads have memory semantics; the
// data path never reads it (§2.3).
func (n *NIC) ReadBAR(bar int, off uint64, p []byte) error {
	if err := checkBAR(bar, "read", off, len(p)); err != nil {
		return err
	}
	if bar == 2 {
		clear(p) // BAR2 outside the MSI-X table and PBA reads as zero
		return nil
	}
	n.mu.Lock()
	copy(p, n.bar0[off:])
	n.mu.Unlock()
	return nil
}

// WriteBAR implements pci.Device: the bytes are stored, then a write that
// completes a trigger runs it (§2.4).
func (n *NIC) WriteBAR(bar int, off uint64, p []byte) error {
	if err := checkBAR(bar, "write", off, len(p)); err != nil {
		return err
	}
	if bar == 2 {
		return nil // nothing but the MSI-X table lives in BAR2
	}
	n.mu.Lock()
	copy(n.bar0[off:], p)
	if n.pio.win != nil {
		n.pioTrappedLocked(off, len(p))
	} else {
		n.bar0WrittenLocked(off, len(p))
	}
	n.mu.Unlock()
	return nil
}

// checkBAR fails an access of n bytes at off that is not in BAR0 or BAR2
// (the MSI-X BAR: what the table and PBA do not claim reaches the device).
func checkBAR(bar int, op string, off uint64, n int) error {
	switch {
	case bar == 2:
		return nil
	case bar != 0:
		return fmt.Errorf("myri10ge: %s of absent BAR %d", op, bar)
	case off > abi.BAR0Size || uint64(n) > abi.BAR0Size-off:
		return fmt.Errorf("myri10ge: BAR0 %s %d@%#x: out of range", op, n, off)
	}
	return nil
}

// Attach implements pci.Device: the NIC joins the wire.
func (n *NIC) Attach(h pci.Host) error {
	n.mu.Lock()
	n.host = h
	if h.Log != nil {
		n.log = h.Log.WithField("component", "myri10ge")
	}
	n.attached = true
	n.epoch++
	if h.Fault.Armed(fault.FW) {
		n.headerFaultLocked()
	}
	n.startPollerLocked()
	n.mu.Unlock()
	n.cfg.Port.Attach(n)
	n.log.Info("NIC attached")
	return nil
}

// Detach implements pci.Device: off the wire, timers void, host forgotten.
func (n *NIC) Detach() {
	n.cfg.Port.Detach() // waits for a Deliver in flight
	n.stopPoller()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.attached {
		return
	}
	n.attached = false
	n.epoch++
	for _, s := range n.slices {
		s.stopTimer()
		n.discardHeldLocked(s)
	}
	n.stopSlowLocked()
	n.host = pci.DetachedHost()
	n.log.WithFields(n.stats.fields()).WithFields(n.drops.fields()).Info("NIC detached")
}

// Reset implements pci.Device: back to power-on (the SRAM image reloads,
// as after a board reset).
func (n *NIC) Reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.powerOnLocked()
}

// powerOnLocked puts BAR0 and the firmware in their power-on state.
func (n *NIC) powerOnLocked() {
	clear(n.bar0)
	putSRAMImage(n.bar0, n.cfg.MAC, n.cfg.Serial)
	if n.host.Fault.Armed(fault.FW) {
		n.headerFaultLocked()
	}
	n.vendor.reset()
	n.resetFirmwareLocked()
}

// Close takes the NIC off the wire for good. Call it after the last
// Detach; the NIC cannot be attached again.
func (n *NIC) Close() error {
	n.cfg.Port.Detach()
	n.stopPoller()
	if n.pio.win != nil {
		if err := n.pio.win.Close(); err != nil {
			return fmt.Errorf("myri10ge: %s: close BAR0 window: %w", n.cfg.Name, err)
		}
	}
	return nil
}

// Stats returns a snapshot of the NIC's counters.
func (n *NIC) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// fields renders the counters for the log line a detach ends with, so
// that a supervisor (the e2e tests) can read them from the log.
func (s Stats) fields() logrus.Fields {
	return logrus.Fields{
		"commands": s.Commands, "unknown_cmds": s.UnknownCmds, "failed_cmds": s.FailedCmds,
		"tx_packets": s.TxPackets, "tx_frames": s.TxFrames, "tx_bytes": s.TxBytes, "tx_dropped": s.TxDropped,
		"rx_frames": s.RxFrames, "rx_bytes": s.RxBytes, "rx_dropped": s.RxDropped, "rx_held": s.RxHeld,
		"interrupts": s.Interrupts, "guest_errors": s.GuestErrors, "dma_errors": s.DMAErrors,
		"unclaimed_writes": s.UnclaimedWrites, "handoffs": s.Handoffs, "link_up_events": s.LinkUpEvents, "link_down_events": s.LinkDownEvents,
	}
}

// Stats are the NIC's counters, for tests, the control socket and logs.
type Stats struct {
	Commands    uint64 // mailbox commands executed
	UnknownCmds uint64 // answered UNKNOWN
	FailedCmds  uint64 // answered with an error status
	TxPackets   uint64 // packets (or TSO chains) taken from send rings
	TxFrames    uint64 // frames put on the wire
	TxBytes     uint64
	TxDropped   uint64 // taken but not sent: link down, not running, malformed
	RxFrames    uint64 // frames written to guest buffers
	RxBytes     uint64
	RxDropped   uint64 // every receive drop, whatever the cause
	RxHeld      uint64 // frames that waited in a slice's FIFO for buffers (rxhold.go)
	Interrupts  uint64 // interrupt blocks written and vectors raised
	GuestErrors uint64 // protocol violations by the guest driver
	DMAErrors   uint64 // DMA that failed (unmapped, bus master off, ...)
	Handoffs    uint64 // firmware files loaded
	// UnclaimedWrites counts BAR0 stores outside every window of the BAR0
	// map (bar0.go), such as into the ring of a slice the NIC lacks.
	UnclaimedWrites uint64
	LinkUpEvents    uint64
	LinkDownEvents  uint64
}

// guestErrorLocked counts and logs a driver protocol violation
// (rate-limited per message).
func (n *NIC) guestErrorLocked(msg string, key string, val any) {
	n.stats.GuestErrors++
	n.warn.Warn(n.log.WithField(key, val), msg, msg)
	n.reportGuestErrorLocked(msg, key, val)
}

// macString formats a MAC address for logs.
func macString(a [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3], a[4], a[5])
}
