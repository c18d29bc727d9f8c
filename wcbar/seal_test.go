package wcbar

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// A client holds a duplicate of the window's memfd. It cannot add a seal
// (F_SEAL_FUTURE_WRITE would make every later client's writable mmap fail
// with EPERM), nor grow or shrink it; it can still map it writable.
func TestClientCannotSeal(t *testing.T) {
	w, err := New("seal", 1<<16, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fd, err := unix.FcntlInt(uintptr(w.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := unix.F_SEAL_SEAL | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK; seals != want {
		t.Errorf("seals %#x, want %#x (SEAL|GROW|SHRINK)", seals, want)
	}
	for _, s := range []int{unix.F_SEAL_FUTURE_WRITE, unix.F_SEAL_WRITE} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, s); !errors.Is(err, unix.EPERM) {
			t.Errorf("client F_ADD_SEALS %#x: %v, want EPERM", s, err)
		}
	}
	if err := unix.Ftruncate(fd, 1<<20); !errors.Is(err, unix.EPERM) {
		t.Errorf("client ftruncate: %v, want EPERM", err)
	}
	mem, err := unix.Mmap(fd, 0, 1<<16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("writable mmap after the attempts: %v", err)
	}
	mem[0] = 1
	unix.Munmap(mem)
}
