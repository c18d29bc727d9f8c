package myritest

import (
	"errors"
	"testing"
)

func TestMemory(t *testing.T) {
	const base = 0x7_0000_0000
	m := NewMemory(make([]byte, 64<<10), base)
	a, err := m.Alloc(100, 4096)
	if err != nil || a != base {
		t.Fatalf("first alloc: %#x, %v", a, err)
	}
	b, err := m.Alloc(8, 64)
	if err != nil || b%64 != 0 || b < a+100 {
		t.Fatalf("second alloc %#x, %v: want 64-aligned after the first", b, err)
	}
	c, err := m.Alloc(4096, 4096)
	if err != nil || c != base+4096 {
		t.Fatalf("page alloc %#x, %v: want %#x", c, err, base+4096)
	}
	if got := m.InUse(); got != 104+8+4096 {
		t.Errorf("InUse %d, want %d (sizes rounded to 8)", got, 104+8+4096)
	}
	// Blocks come zeroed, even when reused.
	buf, _ := m.Bytes(a, 100)
	buf[0] = 1
	if err := m.Free(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(a); err == nil {
		t.Error("double free accepted")
	}
	a2, err := m.Alloc(100, 4096)
	if err != nil || a2 != a {
		t.Fatalf("realloc %#x, %v: want %#x", a2, err, a)
	}
	if buf, _ := m.Bytes(a2, 1); buf[0] != 0 {
		t.Error("reused block not zeroed")
	}
	for _, x := range []uint64{a2, b, c} {
		if err := m.Free(x); err != nil {
			t.Fatal(err)
		}
	}
	// Everything coalesced: the whole memory is one block again.
	if all, err := m.Alloc(64<<10, 4096); err != nil || all != base {
		t.Errorf("alloc of all memory after frees: %#x, %v", all, err)
	}
	if _, err := m.Alloc(8, 8); !errors.Is(err, ErrNoMemory) {
		t.Errorf("alloc from full memory: %v, want ErrNoMemory", err)
	}
	for _, r := range []struct {
		addr uint64
		n    int
	}{{base - 1, 1}, {base + 64<<10, 1}, {base + 64<<10 - 4, 8}, {base, -1}} {
		if _, err := m.Bytes(r.addr, r.n); err == nil {
			t.Errorf("Bytes(%#x, %d) outside memory accepted", r.addr, r.n)
		}
	}
	if _, err := m.Alloc(0, 8); err == nil {
		t.Error("alloc of 0 bytes accepted")
	}
	if _, err := m.Alloc(8, 24); err == nil {
		t.Error("alignment 24 accepted")
	}
}

func TestChecksum(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want uint16
	}{
		{[]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0xddf2}, // RFC 1071 section 3
		{[]byte{0xff}, 0xff00},
		{[]byte{0xff, 0xff, 0x00, 0x01}, 0x0001},
		{nil, 0},
	} {
		if got := Checksum(tc.in); got != tc.want {
			t.Errorf("Checksum(% x) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	if !csumEqual(0, 0xffff) || csumEqual(1, 2) {
		t.Error("csumEqual: 0 and 0xffff are the same ones'-complement zero")
	}
}
