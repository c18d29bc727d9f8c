package dmatest

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// What a test writes through Bytes is what a mapping of Fd sees, and the
// reverse; Fd hands out independent duplicates that outlive Close.
func TestRAM(t *testing.T) {
	r := NewRAM(t, 8192)
	if r.Size() != 8192 || len(r.Bytes()) != 8192 {
		t.Fatalf("Size %d, len(Bytes) %d, want 8192", r.Size(), len(r.Bytes()))
	}
	fd1, fd2 := r.Fd(), r.Fd()
	defer unix.Close(fd1)
	defer unix.Close(fd2)
	if fd1 == fd2 {
		t.Fatalf("Fd returned the same descriptor twice")
	}
	if fl, _ := unix.FcntlInt(uintptr(fd1), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("Fd duplicate is not close-on-exec")
	}
	other, err := unix.Mmap(fd1, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(other)
	copy(r.Bytes()[100:], "guest")
	if !bytes.Equal(other[100:105], []byte("guest")) {
		t.Errorf("a mapping of Fd does not see writes to Bytes")
	}
	copy(other[4000:], "device")
	if !bytes.Equal(r.Bytes()[4000:4006], []byte("device")) {
		t.Errorf("Bytes does not see writes through a mapping of Fd")
	}
	r.Close()
	r.Close()
	if r.Bytes() != nil {
		t.Errorf("Bytes after Close is not nil")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd2, &st); err != nil || st.Size != 8192 {
		t.Errorf("duplicate after Close: size %d, %v", st.Size, err)
	}
}
