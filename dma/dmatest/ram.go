// Package dmatest provides memfd-backed guest RAM for tests of code that
// reaches guest memory through package dma.
package dmatest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// RAM is a memfd of fixed size, mapped shared into the test process: what
// QEMU's memory-backend-memfd,share=on gives a vfio-user server.
type RAM struct {
	tb   testing.TB
	name string

	mu  sync.Mutex
	fd  int // -1 once closed
	mem []byte
}

// NewRAM returns size bytes of zeroed RAM, closed by tb.Cleanup. It fails
// the test if the memfd cannot be created or mapped.
func NewRAM(tb testing.TB, size int) *RAM {
	tb.Helper()
	if size <= 0 {
		tb.Fatalf("dmatest: RAM size %d, want > 0", size)
	}
	// A unique name lets a test find this RAM's mappings in /proc/self/maps.
	name := fmt.Sprintf("dmatest-ram-%016x", rand.Uint64())
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		tb.Fatalf("dmatest: memfd_create: %v", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		tb.Fatalf("dmatest: ftruncate %d: %v", size, err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		tb.Fatalf("dmatest: mmap %d: %v", size, err)
	}
	r := &RAM{tb: tb, name: name, fd: fd, mem: mem}
	tb.Cleanup(r.Close)
	return r
}

// Fd returns a new duplicate of the memfd (close-on-exec); the caller owns
// it, e.g. hands it to dma.Map.Add or sends it in a DMA_MAP.
func (r *RAM) Fd() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		r.tb.Fatalf("dmatest: Fd of closed RAM")
	}
	fd, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		r.tb.Fatalf("dmatest: dup memfd: %v", err)
	}
	return fd
}

// Bytes returns the test's own mapping of the RAM: what the guest sees.
func (r *RAM) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mem
}

// Size returns the RAM's size in bytes.
func (r *RAM) Size() int { return len(r.mem) }

// Name is the memfd's name; /proc/self/maps shows its mappings as
// "/memfd:NAME (deleted)".
func (r *RAM) Name() string { return r.name }

// Close unmaps the RAM and closes the memfd. Duplicates handed out by Fd
// stay valid. Idempotent.
func (r *RAM) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return
	}
	if err := unix.Munmap(r.mem); err != nil {
		r.tb.Errorf("dmatest: munmap: %v", err)
	}
	unix.Close(r.fd)
	r.fd, r.mem = -1, nil
}
