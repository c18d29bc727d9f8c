package msitest

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func signal(t *testing.T, fd int, n uint64) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], n)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatal(err)
	}
}

func TestEventFD(t *testing.T) {
	e := NewEventFD(t)
	fd := e.Fd()
	defer unix.Close(fd)
	if e.Count() != 0 {
		t.Fatalf("fresh Count = %d", e.Count())
	}
	signal(t, fd, 1)
	signal(t, fd, 2)
	if got := e.Count(); got != 3 {
		t.Errorf("Count = %d, want 3", got)
	}
	if got := e.Count(); got != 3 {
		t.Errorf("Count again = %d, want 3 (a running total)", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait() // before fd's cleanup closes it
	wg.Go(func() {
		time.Sleep(5 * time.Millisecond)
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], 1)
		unix.Write(fd, b[:])
	})
	if err := e.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if got := e.Count(); got != 4 {
		t.Errorf("Count after Wait = %d, want 4", got)
	}

	// A cancelled Wait returns, and its wake-up does not satisfy the next.
	short, cancel2 := context.WithCancel(context.Background())
	wg.Go(func() {
		time.Sleep(5 * time.Millisecond)
		cancel2()
	})
	if err := e.Wait(short); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Wait = %v, want Canceled", err)
	}
	timeout, cancel3 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel3()
	if err := e.Wait(timeout); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with nothing signalled = %v, want DeadlineExceeded", err)
	}

	e.Close()
	e.Close()
	if err := e.Wait(ctx); err == nil {
		t.Errorf("Wait after Close returned nil")
	}
}
