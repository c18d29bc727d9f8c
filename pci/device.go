// Package pci is one PCI function as a vfio-user client sees it: config
// space with its capabilities, the BAR table, the MSI-X table, and the
// Device interface every device model implements.
package pci

import (
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/wcbar"
	"github.com/sirupsen/logrus"
)

// Device is a device model. A Function wraps it with config space and
// answers the protocol; the model sees only its BARs and the Host doors.
//
// ReadBAR and WriteBAR are called from the protocol reader, strictly in the
// client's order, with off+len(p) inside the BAR and 1 <= len(p). They must
// be quick (the client waits; 5 s kills the device) and must not perform
// message DMA. A returned error becomes an error reply to the client; a
// guest mistake is not an error but device state (see ARCHITECTURE.md).
type Device interface {
	// Spec describes the function. It is read once, by NewFunction.
	Spec() Spec
	ReadBAR(bar int, off uint64, p []byte) error
	WriteBAR(bar int, off uint64, p []byte) error
	// Attach is called when a client connects; the device may start its
	// workers. Every call to Attach is followed by exactly one Detach.
	Attach(h Host) error
	// Detach stops the device's workers and waits for them. After it
	// returns the device does not touch h.Mem or h.IRQ. Idempotent.
	Detach()
	// Reset returns the device to its power-on state (DEVICE_RESET, FLR, a
	// new client). DMA maps survive a reset. It must be fast.
	Reset()
}

// Host is what a device reaches the outside world through while a client
// is attached: guest memory, interrupts and a logger. While none is, a
// device holds DetachedHost().
type Host struct {
	Mem dma.Space
	IRQ msi.Raiser
	Log *logrus.Entry
}

// Spec is a function's fixed description: identity, BARs and capabilities.
type Spec struct {
	VendorID, DeviceID             uint16
	SubsystemVendorID, SubsystemID uint16
	Revision                       uint8
	Class                          uint32 // 24-bit class code, e.g. 0x020000 Ethernet

	BARs [6]BAR
	// InterruptPin is config byte 0x3d: 0 (no INTx) or 1..4 (INTA..INTD).
	InterruptPin uint8

	// Capabilities; nil means absent. They are laid out in the order
	// PM, MSI, vendor-specific, PCIe, MSI-X.
	PM     *PMCap
	MSI    *MSICap
	Vendor *VendorCap
	PCIe   *PCIeCap
	MSIX   *MSIXCap
}

// BARFlags are the type bits of a BAR register.
type BARFlags uint8

const (
	BARMem64    BARFlags = 1 << iota // 64-bit memory BAR; the next BAR is its upper half
	BARPrefetch                      // prefetchable: reads have no side effects
	BARIO                            // I/O space BAR
)

// BAR describes one base address register. Size 0 means the BAR is absent.
// A present BAR's size is a power of two (QEMU aborts otherwise), at least
// 4 KiB for memory BARs.
type BAR struct {
	Size  uint64
	Flags BARFlags
	// Window, if non-nil, is memory behind the BAR that the client may
	// mmap into the guest (its Areas; the rest traps). Its size equals
	// Size. Accesses outside its areas, and every access while the client
	// has the mmap switched off, still arrive through ReadBAR/WriteBAR and
	// must be served from the same memory (Window.ReadAt/WriteAt).
	Window *wcbar.Window
}

// Area is a range of a BAR (a sparse-mmap area in RegionInfo).
type Area struct{ Offset, Size uint64 }

// PMCap is the power-management capability: D0 and D3hot (D1/D2 writes
// are ignored), no PME, No_Soft_Reset set. The power state is stored
// only; the function keeps working in D3hot.
type PMCap struct{}

// MSICap is the MSI capability.
type MSICap struct {
	Vectors       int  // 1, 2, 4, 8, 16 or 32
	Addr64        bool // 64-bit message address
	PerVectorMask bool
}

// MSIXCap is the MSI-X capability. The table and PBA live in BARs of this
// function, which must be large enough and must not be mmappable over them.
type MSIXCap struct {
	Vectors     int // 1..2048
	TableBAR    int
	TableOffset uint32 // 8-byte aligned
	PBABAR      int
	PBAOffset   uint32 // 8-byte aligned
}

// PCIeCap is a PCI Express v2 Endpoint capability.
type PCIeCap struct {
	MaxPayload int // bytes: 128..4096
	LinkWidth  int // negotiated and maximum link width, lanes (1..32)
	LinkSpeed  int // 1 = 2.5 GT/s, 2 = 5 GT/s, 3 = 8 GT/s
}

// VendorCap is a vendor-specific capability (ID 0x09) of Length bytes
// (header included). Its body bytes are plain read/write storage; Handler,
// if set, sees accesses to them to give them side effects.
type VendorCap struct {
	Length  uint8
	Handler ConfigHandler
}

// ConfigHandler gives side effects to a range of config space. Offsets are
// relative to the start of the capability. ReadConfig may overwrite p,
// which holds the stored bytes; WriteConfig sees the bytes after they were
// stored.
type ConfigHandler interface {
	ReadConfig(off int, p []byte)
	WriteConfig(off int, p []byte)
}
