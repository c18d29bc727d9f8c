// Package dma is the guest memory a device reaches by DMA: the map of IOVA
// ranges the client registered, bounds-checked copies in and out of it, and
// the hooks where audit and fault injection attach.
package dma

import (
	"errors"
	"fmt"
)

// Space is the one door from a device model to guest memory.
//
// ReadAt and WriteAt follow io.ReaderAt/io.WriterAt: n < len(p) implies a
// non-nil error, which is a *Error. Calls may run in parallel (WriteAt only on
// ranges that do not overlap). Implementations must not retain p.
//
// A range that crosses several client maps is copied piecewise; any unmapped
// byte fails the access (as a PCIe master abort would) and nothing is
// copied past it.
type Space interface {
	ReadAt(p []byte, addr uint64) (n int, err error)
	WriteAt(p []byte, addr uint64) (n int, err error)
	// Store32 writes v (already in the byte order the guest expects, i.e.
	// the four bytes of v in host order land at addr..addr+3) as one
	// indivisible 4-byte store when addr is 4-aligned: what a device does
	// for completion words the guest polls.
	Store32(addr uint64, v uint32) error
}

// Op names a DMA direction, from the device's point of view.
type Op uint8

const (
	Read  Op = iota + 1 // device reads guest memory
	Write               // device writes guest memory
)

var opNames = [...]string{Read: "read", Write: "write"}

func (o Op) String() string {
	if o >= Read && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Sentinel causes wrapped by *Error; test them with errors.Is.
var (
	// ErrUnmapped: some byte of the access lies outside every client map.
	ErrUnmapped = errors.New("address not mapped")
	// ErrBusMasterOff: the function's COMMAND.MASTER bit is clear.
	ErrBusMasterOff = errors.New("bus mastering disabled")
	// ErrReadOnly: a device write into a map the client gave without write permission.
	ErrReadOnly = errors.New("mapping is read-only")
	// ErrNotRegistered: the audit found no registration covering the access.
	ErrNotRegistered = errors.New("memory not registered with the device")
	// ErrInHandler: message DMA (a region without an fd) was attempted from
	// the goroutine that owes the client a reply; it would deadlock.
	ErrInHandler = errors.New("message DMA from the protocol reader would deadlock")
	// ErrClosed: the map was closed (client gone).
	ErrClosed = errors.New("guest memory map closed")
)

// Error describes a failed DMA.
type Error struct {
	Op   Op
	Addr uint64
	Len  int
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("dma %s %d@%#x: %v", e.Op, e.Len, e.Addr, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Hook sees every DMA before it touches memory. A non-nil error aborts the
// access and is wrapped in the *Error the caller gets. Audit (registration
// checks) and fault injection attach here. Hooks run on the DMA's goroutine
// and must be fast and must not call back into the map.
type Hook interface {
	BeforeDMA(op Op, addr uint64, n int) error
}

// HookFunc adapts a function to Hook.
type HookFunc func(op Op, addr uint64, n int) error

func (f HookFunc) BeforeDMA(op Op, addr uint64, n int) error { return f(op, addr, n) }

// Messenger carries DMA to regions the client mapped without an fd, as
// protocol messages (vfio-user DMA_READ / DMA_WRITE). Implementations split
// p as the transport requires and return ErrInHandler rather than deadlock.
type Messenger interface {
	ReadDMA(addr uint64, p []byte) error
	WriteDMA(addr uint64, p []byte) error
}
