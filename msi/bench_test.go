package msi

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkRaise compares Raise on an assigned MSI-X vector with the raw
// eventfd write it wraps, in the same run. The "+read" variants drain the
// eventfd after each signal, as the interrupt's consumer would: a
// write+read ping-pong with and without the table in between.
func BenchmarkRaise(b *testing.B) {
	efd := func(b *testing.B) int {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			b.Fatal(err)
		}
		return fd
	}
	var one, buf [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)

	b.Run("op=signal/impl=eventfd", func(b *testing.B) {
		fd := efd(b)
		defer unix.Close(fd)
		for b.Loop() {
			unix.Write(fd, one[:])
		}
	})
	b.Run("op=signal/impl=msi", func(b *testing.B) {
		tb := NewTable(testCounts, nil)
		defer tb.Reset()
		fd := efd(b)
		tb.SetIRQs(MSIX, DataEventfd|ActionTrigger, 0, 1, []int{fd}, nil)
		for b.Loop() {
			tb.Raise(0)
		}
	})
	b.Run("op=signal+read/impl=eventfd", func(b *testing.B) {
		fd := efd(b)
		defer unix.Close(fd)
		for b.Loop() {
			unix.Write(fd, one[:])
			unix.Read(fd, buf[:])
		}
	})
	b.Run("op=signal+read/impl=msi", func(b *testing.B) {
		tb := NewTable(testCounts, nil)
		defer tb.Reset()
		fd := efd(b)
		reader, _ := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		defer unix.Close(reader)
		tb.SetIRQs(MSIX, DataEventfd|ActionTrigger, 0, 1, []int{fd}, nil)
		for b.Loop() {
			tb.Raise(0)
			unix.Read(reader, buf[:])
		}
	})
	b.Run("Raise-pending", func(b *testing.B) { // de-assigned: no syscall
		tb := NewTable(testCounts, nil)
		tb.SetIRQs(MSIX, DataEventfd|ActionTrigger, 0, 1, nil, nil)
		for b.Loop() {
			tb.Raise(0)
		}
	})
	b.Run("Raise-parallel", func(b *testing.B) { // several queues raising at once
		tb := NewTable(testCounts, nil)
		defer tb.Reset()
		tb.SetIRQs(MSIX, DataEventfd|ActionTrigger, 0, 4, []int{efd(b), efd(b), efd(b), efd(b)}, nil)
		b.RunParallel(func(pb *testing.PB) {
			v := 0
			for pb.Next() {
				tb.Raise(v % 4)
				v++
			}
		})
	})
}
