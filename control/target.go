// Package control is a QMP-compatible control socket: clients query and
// change the devices of a running server, arm faults and receive events,
// speaking QEMU's QMP wire protocol (docs/interop/qmp-spec.rst).
package control

import "errors"

// Target is one device as the control socket sees it. Methods are called
// from client goroutines, possibly concurrently; they must be quick.
type Target interface {
	// Name is the device's name (myri0), the key of every command.
	Name() string
	// Info describes the device now.
	Info() DeviceInfo
	// Counters returns every counter the device keeps, as a JSON-encodable
	// value (per slice where the device has slices).
	Counters() any
	// SetLink sets the link state as pulling or plugging the cable would:
	// the guest sees carrier go and come back. ErrNotSupported if the
	// device has no link.
	SetLink(up bool) error
	// Reset resets the function as DEVICE_RESET would.
	Reset() error
	// Disconnect drops the device's vfio-user client as if the server had
	// crashed for this device only. ErrNotActive if no client is attached.
	Disconnect() error
}

// DeviceInfo is one element of query-devices.
type DeviceInfo struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Socket    string `json:"socket"`
	Connected bool   `json:"client-connected"`
	BusMaster bool   `json:"bus-master"`
	IRQMode   string `json:"irq-mode"` // none, INTx, MSI, MSI-X
	MSI       bool   `json:"msi-enabled"`
	MSIX      bool   `json:"msix-enabled"`
	Link      *bool  `json:"link,omitempty"` // nil: the device has no link
}

// Errors a Target returns that map to QMP error classes.
var (
	ErrNotSupported = errors.New("not supported by this device")
	ErrNotActive    = errors.New("device not active") // DeviceNotActive
)

// Auditor is a Target whose DMA is audited (the myrimx device): what
// query-dma-audit and query-registrations read. A Target need not be one;
// its methods answer ErrNotSupported when this device has no audit.
type Auditor interface {
	// DMAAudit returns the audit's counters as a JSON object.
	DMAAudit() (map[string]any, error)
	// Registrations returns the live registration table.
	Registrations() (any, error)
}

// Ports is the switch's ports to other networks (serve's --port flags):
// what port-add, port-del and query-ports act on.
type Ports interface {
	// AddPort opens and starts the port spec describes (a --port value)
	// and returns its name.
	AddPort(spec string) (name string, err error)
	// RemovePort closes the port called name and takes it off the switch.
	RemovePort(name string) error
	// QueryPorts reports every port, with its counters.
	QueryPorts() any
}
