package dma

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/fault/faulttest"
)

func faultMap(tb testing.TB) (*Map, []byte) {
	tb.Helper()
	ram := dmatest.NewRAM(tb, 2<<20)
	m := NewMap(nil)
	m.SetBusMaster(true)
	tb.Cleanup(func() { m.Close() })
	if err := m.Add(Mapping{IOVA: 0x10000, Size: 2 << 20, Fd: ram.Fd(), Prot: rw}); err != nil {
		tb.Fatal(err)
	}
	return m, ram.Bytes()
}

func TestFaultDoor(t *testing.T) {
	pattern := []byte("0123456789abcdef")
	t.Run("nil set is the space itself", func(t *testing.T) {
		m, _ := faultMap(t)
		if WithFaults(m, nil, "d") != Space(m) {
			t.Error("wrapped with no set")
		}
	})
	t.Run("read.fail", func(t *testing.T) {
		m, _ := faultMap(t)
		s := WithFaults(m, faulttest.Set(t, 1, "r: dma.read=fail; once"), "d")
		p := make([]byte, 16)
		_, err := s.ReadAt(p, 0x10000)
		var de *Error
		if !errors.As(err, &de) || !errors.Is(err, ErrInjected) || de.Op != Read {
			t.Errorf("first read: %v", err)
		}
		if _, err := s.ReadAt(p, 0x10000); err != nil {
			t.Errorf("second read: %v", err)
		}
	})
	t.Run("iova.unmapped only in range", func(t *testing.T) {
		m, _ := faultMap(t)
		s := WithFaults(m, faulttest.Set(t, 1, "r: dma.iova=unmapped; iova=0x20000..0x20fff"), "d")
		p := make([]byte, 16)
		if _, err := s.ReadAt(p, 0x10000); err != nil {
			t.Errorf("outside: %v", err)
		}
		if _, err := s.WriteAt(p, 0x20010); !errors.Is(err, ErrUnmapped) {
			t.Errorf("inside: %v", err)
		}
	})
	t.Run("read.short and read.poison", func(t *testing.T) {
		m, guest := faultMap(t)
		copy(guest, pattern)
		p := make([]byte, 16)
		if _, err := WithFaults(m, faulttest.Set(t, 1, "r: dma.read=short(bytes=4)"), "d").ReadAt(p, 0x10000); err != nil || !bytes.Equal(p, append([]byte("0123"), make([]byte, 12)...)) {
			t.Errorf("short: %q %v", p, err)
		}
		if _, err := WithFaults(m, faulttest.Set(t, 1, "r: dma.read=poison(mask=0x20, offset=10)"), "d").ReadAt(p, 0x10000); err != nil || string(p) != "0123456789Abcdef" {
			t.Errorf("poison: %q %v", p, err)
		}
	})
	t.Run("write.drop, torn", func(t *testing.T) {
		m, guest := faultMap(t)
		if n, err := WithFaults(m, faulttest.Set(t, 1, "r: dma.write=drop"), "d").WriteAt(pattern, 0x10000); n != 16 || err != nil || guest[0] != 0 {
			t.Errorf("drop: %d %v %q", n, err, guest[:16])
		}
		if n, err := WithFaults(m, faulttest.Set(t, 1, "r: dma.write=torn(bytes=3)"), "d").WriteAt(pattern, 0x10000); n != 16 || err != nil || string(guest[:4]) != "012\x00" {
			t.Errorf("torn: %d %v %q", n, err, guest[:16])
		}
		if err := WithFaults(m, faulttest.Set(t, 1, "r: dma.write=drop"), "d").Store32(0x10100, 0xdeadbeef); err != nil || guest[0x100] != 0 {
			t.Errorf("store32 drop: %v", err)
		}
	})
	t.Run("write.reorder lands after the next write", func(t *testing.T) {
		m, guest := faultMap(t)
		s := WithFaults(m, faulttest.Set(t, 1, "r: dma.write=reorder; once"), "d")
		s.WriteAt([]byte("data"), 0x10000)
		if string(guest[:4]) != "\x00\x00\x00\x00" {
			t.Fatalf("held write landed early: %q", guest[:4])
		}
		s.Store32(0x10100, 1) // the completion overtakes the data
		if string(guest[:4]) != "data" || guest[0x100] != 1 {
			t.Errorf("after the next write: %q %d", guest[:4], guest[0x100])
		}
	})
}

// BenchmarkCopyFaultDoor: Copy through the door with no rule armed against
// the bare map in the same run, and the cost of one armed rule that does
// not match.
func BenchmarkCopyFaultDoor(b *testing.B) {
	m, _ := faultMap(b)
	idle := fault.NewSet(1, nil)
	nomatch := faulttest.Set(b, 1, "r: dma.read=fail; device=other")
	for _, size := range []int{64, 1500} {
		p := make([]byte, size)
		for _, c := range []struct {
			name string
			s    Space
		}{
			{"baseline", m},
			{"door-idle", WithFaults(m, idle, "d")},
			{"door-armed-nomatch", WithFaults(m, nomatch, "d")},
		} {
			b.Run(fmt.Sprintf("size=%d/impl=%s", size, c.name), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := c.s.ReadAt(p, 0x11000); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// A labelled store carries its region and slice to the door; an unlabelled
// access matches no region= or slice= clause.
func TestFaultDoorRegion(t *testing.T) {
	m, guest := faultMap(t)
	set := faulttest.Set(t, 1, "r: dma.write=drop; region=rx_done; slice=1")
	s := WithFaults(m, set, "d")
	for _, c := range []struct {
		r    *Region
		addr uint64
		drop bool
	}{
		{nil, 0x10000, false},
		{&Region{Name: "rx_done", Slice: 0}, 0x10004, false},
		{&Region{Name: "stats", Slice: 1}, 0x10008, false},
		{&Region{Name: "rx_done", Slice: 1}, 0x1000c, true},
	} {
		var err error
		if c.r == nil {
			err = s.Store32(c.addr, 0x01010101)
		} else {
			err = Store32In(s, *c.r, c.addr, 0x01010101)
		}
		off := c.addr - 0x10000
		if landed := guest[off] == 1; err != nil || landed == c.drop {
			t.Errorf("store %+v: err %v, landed %v, want dropped %v", c.r, err, landed, c.drop)
		}
	}
	// A Space that is no RegionStorer gets a plain store.
	if err := Store32In(m, Region{Name: "rx_done", Slice: 1}, 0x10010, 0x01010101); err != nil || guest[0x10] != 1 {
		t.Errorf("plain space: %v", err)
	}
	if _, err := fault.Parse("r: dma.read=fail; slice=0"); err != nil {
		t.Errorf("slice= at the dma door: %v", err)
	}
}

// BenchmarkStore32FaultDoor: the labelled completion store (the rx_done
// slot's) through the door with no rule armed against the bare map's
// Store32 in the same run, and with one armed rule that does not match.
func BenchmarkStore32FaultDoor(b *testing.B) {
	m, _ := faultMap(b)
	idle := fault.NewSet(1, nil)
	nomatch := faulttest.Set(b, 1, "r: dma.write=drop; region=rx_done; slice=1")
	region := Region{Name: "rx_done", Slice: 0}
	for _, c := range []struct {
		name string
		s    Space
	}{
		{"baseline", m},
		{"door-idle", WithFaults(m, idle, "d")},
		{"door-armed-nomatch", WithFaults(m, nomatch, "d")},
	} {
		b.Run("impl="+c.name, func(b *testing.B) {
			for b.Loop() {
				if err := Store32In(c.s, region, 0x11000, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
