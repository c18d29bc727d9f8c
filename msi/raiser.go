// Package msi delivers a PCI function's interrupts (INTx, MSI, MSI-X) to
// the eventfds its client assigned, with VFIO's semantics for masked,
// disabled and de-assigned vectors.
package msi

import "fmt"

// Index is a VFIO IRQ index (the vfio-user SET_IRQS/GET_IRQ_INFO index).
type Index uint32

const (
	INTx Index = 0
	MSI  Index = 1
	MSIX Index = 2
	ERR  Index = 3
	REQ  Index = 4

	NumIndexes = 5
)

func (i Index) String() string {
	switch i {
	case INTx:
		return "INTx"
	case MSI:
		return "MSI"
	case MSIX:
		return "MSI-X"
	case ERR:
		return "ERR"
	case REQ:
		return "REQ"
	}
	return fmt.Sprintf("Index(%d)", uint32(i))
}

// Mode is the interrupt mechanism currently enabled by the client.
type Mode uint8

const (
	ModeNone Mode = iota // nothing enabled: raises are counted and dropped
	ModeINTx
	ModeMSI
	ModeMSIX
)

func (m Mode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeINTx:
		return "INTx"
	case ModeMSI:
		return "MSI"
	case ModeMSIX:
		return "MSI-X"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Raiser is the one door from a device model to its interrupts.
type Raiser interface {
	// Raise signals vector: an MSI-X or MSI message when one of those is
	// enabled, else it asserts INTx (vector is then ignored). It never
	// blocks and is never an error: a vector that is masked or has no
	// eventfd is recorded as pending and counted; one beyond the enabled
	// range, or a raise with nothing enabled, is only counted.
	Raise(vector int)
	// Lower deasserts INTx. MSI and MSI-X are edge-triggered and ignore it.
	Lower()
	// Mode reports the mechanism currently enabled.
	Mode() Mode
}
