// Package msitest provides eventfds that count interrupt signals, for tests
// of code that delivers interrupts through package msi.
package msitest

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// EventFD is a non-blocking eventfd standing in for the one QEMU (or KVM)
// would listen on, with a running total of the signals read from it.
type EventFD struct {
	tb     testing.TB
	total  atomic.Uint64
	mu     sync.Mutex // guards fd against Close; also serialises Wait
	fd     int        // -1 once closed
	cancel int        // eventfd that wakes a Wait when its context ends
}

// NewEventFD returns an eventfd with counter 0, closed by tb.Cleanup.
func NewEventFD(tb testing.TB) *EventFD {
	tb.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		tb.Fatalf("msitest: eventfd: %v", err)
	}
	cancel, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		tb.Fatalf("msitest: eventfd: %v", err)
	}
	e := &EventFD{tb: tb, fd: fd, cancel: cancel}
	tb.Cleanup(e.Close)
	return e
}

// Fd returns a new duplicate of the eventfd (close-on-exec) that the caller
// owns: hand it to msi.Table.SetIRQs or send it in a SET_IRQS message.
func (e *EventFD) Fd() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd < 0 {
		e.tb.Fatalf("msitest: Fd of closed EventFD")
	}
	fd, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		e.tb.Fatalf("msitest: dup eventfd: %v", err)
	}
	return fd
}

// Count reads whatever the eventfd holds (without blocking), adds it to the
// total and returns the total: the number of signals seen so far.
func (e *EventFD) Count() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.drainLocked()
	return e.total.Load()
}

// drainLocked reads the counter into total; reports whether it was non-zero.
func (e *EventFD) drainLocked() bool {
	if e.fd < 0 {
		return false
	}
	var b [8]byte
	n, err := unix.Read(e.fd, b[:])
	if err != nil || n != 8 {
		return false // EAGAIN: nothing signalled
	}
	e.total.Add(binary.NativeEndian.Uint64(b[:]))
	return true
}

// Wait blocks until a signal not yet seen by Count or Wait arrives (or is
// already there), adds it to the total and returns nil; or returns
// ctx.Err() when ctx ends first. Count and Close wait while a Wait blocks.
func (e *EventFD) Wait(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(e.cancel, one[:])
	})
	defer stop()
	for {
		if e.fd < 0 {
			return unix.EBADF
		}
		if e.drainLocked() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}, {Fd: int32(e.cancel), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return err
		}
		if fds[1].Revents&unix.POLLIN != 0 {
			// Our context's wake-up, or a late one from an earlier Wait:
			// consume it, ctx.Err tells which.
			var b [8]byte
			unix.Read(e.cancel, b[:])
		}
	}
}

// Close closes the eventfd (duplicates from Fd stay open). Idempotent.
func (e *EventFD) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd < 0 {
		return
	}
	unix.Close(e.fd)
	unix.Close(e.cancel)
	e.fd, e.cancel = -1, -1
}
