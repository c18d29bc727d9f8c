package dma

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/dma/dmatest"
)

// Fuzz op codes: each op is a code byte and then argument bytes.
const (
	fzAdd = iota
	fzRemove
	fzRead
	fzWrite
	fzStore32
	fzRemoveAll
	fzBusMaster
	fzRegions
	fzOps
)

const (
	fzFileSize = 0x1000
	fzHigh     = math.MaxUint64 - 0x7fff // base of the "top of the address space" window
)

// modelMap is the reference model's view of one map.
type modelMap struct {
	iova, last uint64
	off        uint64
	file       int // 0, 1: a RAM; -1: message map
	prot       Prot
}

// fuzzModel is a deliberately simple reference: a list of maps searched
// byte by byte, and its own copy of every byte of guest memory.
type fuzzModel struct {
	maps      []modelMap
	files     [2][]byte
	msg       map[uint64]byte // message maps' memory, by IOVA
	busMaster bool
}

func (fm *fuzzModel) at(a uint64) *modelMap {
	for i := range fm.maps {
		if fm.maps[i].iova <= a && a <= fm.maps[i].last {
			return &fm.maps[i]
		}
	}
	return nil
}

// byteCursor hands out the fuzz input a byte at a time (0 once exhausted).
type byteCursor struct{ b []byte }

func (c *byteCursor) u8() byte {
	if len(c.b) == 0 {
		return 0
	}
	v := c.b[0]
	c.b = c.b[1:]
	return v
}

// addr decodes an address: mostly a low window with unaligned offsets,
// sometimes the top of the address space where ranges wrap.
func (c *byteCursor) addr() uint64 {
	hi, lo, fine := c.u8(), c.u8(), c.u8()
	base := uint64(0)
	if hi&0x80 != 0 {
		base = fzHigh
	}
	return base + uint64(hi&0x7f)<<8 + uint64(lo&0xc0|fine&0x3f)
}

// fuzzMessenger serves message DMA from the model's memory and fails the
// test if asked for a byte outside the model's message maps.
type fuzzMessenger struct {
	t  *testing.T
	fm *fuzzModel
}

func (f fuzzMessenger) check(addr uint64, n int) {
	for i := range uint64(n) {
		if mm := f.fm.at(addr + i); mm == nil || mm.file >= 0 {
			f.t.Fatalf("messenger asked for %d@%#x: byte %#x is not in a message map", n, addr, addr+i)
		}
	}
}

func (f fuzzMessenger) ReadDMA(addr uint64, p []byte) error {
	f.check(addr, len(p))
	for i := range p {
		p[i] = f.fm.msg[addr+uint64(i)]
	}
	return nil
}

func (f fuzzMessenger) WriteDMA(addr uint64, p []byte) error {
	f.check(addr, len(p))
	for i, b := range p {
		f.fm.msg[addr+uint64(i)] = b
	}
	return nil
}

// FuzzMapOps runs a sequence of map, unmap and access ops decoded from the
// input against Map and a reference model. Invariants: every result (error
// class, n, *Error address, bytes read) matches the model; no byte of
// either backing file changes except where the model wrote; the messenger
// is only asked for bytes of message maps; Regions matches; closing leaves
// no mmap behind.
func FuzzMapOps(f *testing.F) {
	// Seeds: a map then accesses inside, across and past it; adjacent maps
	// of both files; a message map; unmaps that cut and that fit.
	f.Add([]byte{fzAdd, 0, 0x40, 0, 8, 0, 0, 3, 0, fzRead, 0, 0x40, 4, 64, fzWrite, 0, 0x40, 0x3c, 200, fzRead, 0, 0x41, 0, 255})
	f.Add([]byte{fzAdd, 0, 0x40, 0, 16, 0, 0, 3, 0, fzAdd, 1, 0x40, 0, 16, 0, 0, 3, 1, fzWrite, 1, 0, 0x38, 32, fzStore32, 1, 0, 0x3e, fzRegions})
	f.Add([]byte{fzAdd, 0, 0, 0, 16, 0, 0, 3, 2, fzAdd, 1, 0, 0, 16, 0, 0, 1, 0, fzRead, 0, 0xc0, 0x30, 32, fzWrite, 0, 0xc0, 0x30, 32})
	f.Add([]byte{fzAdd, 0, 0x20, 0, 32, 0, 0, 3, 0, fzRemove, 0, 0x20, 0, 16, fzRemove, 0, 0x20, 0, 32, fzRemove, 0, 0x20, 0, 32, fzRead, 0, 0x20, 0, 4})
	f.Add([]byte{fzAdd, 0xff, 0xc0, 0, 63, 0, 0, 3, 2, fzAdd, 0xfc, 0, 0, 0x40, 0, 0, 3, 2, fzRead, 0xff, 0xff, 0x3c, 8, fzStore32, 0xff, 0xff, 0x3e, fzRegions})
	f.Add([]byte{fzAdd, 0, 0x40, 0, 8, 0, 0x3f, 3, 0, fzBusMaster, fzRead, 0, 0x40, 0, 8, fzBusMaster, fzRemoveAll, fzRead, 0, 0x40, 0, 8})

	f.Fuzz(func(t *testing.T, data []byte) {
		rams := [2]*dmatest.RAM{dmatest.NewRAM(t, fzFileSize), dmatest.NewRAM(t, fzFileSize)}
		fm := &fuzzModel{msg: make(map[uint64]byte), busMaster: true}
		for i, r := range rams {
			copy(r.Bytes(), pattern(fzFileSize, byte(i*100)))
			fm.files[i] = bytes.Clone(r.Bytes())
		}
		m := NewMap(nil)
		m.SetBusMaster(true)
		m.SetMessenger(fuzzMessenger{t: t, fm: fm})
		c := &byteCursor{b: data}
		fill := byte(0)
		// Accesses of steps 3-5, 9-11, ... go through a Run, begun at the
		// first of them and ended before anything else: the held paths and
		// the run's region memo must do what the Map does.
		var run Run
		defer run.End()
		for step := 0; len(c.b) > 0 && step < 200; step++ {
			op := c.u8() % fzOps
			var mem Space = m
			if (op == fzRead || op == fzWrite || op == fzStore32) && (step/3)%2 == 1 {
				mem = run.Begin(m)
			} else {
				run.End()
			}
			switch op {
			case fzAdd:
				iova := c.addr()
				size := uint64(c.u8()) * 0x10
				off := uint64(c.u8())<<6 | uint64(c.u8()&0x3f)
				prot := Prot(c.u8() & 3)
				file := int(c.u8() % 3) // 0, 1: a RAM; 2: message map
				if file == 2 {
					file = -1
				}
				fuzzAdd(t, m, fm, rams, modelMap{iova: iova, last: iova + size - 1, off: off, file: file, prot: prot}, size)
			case fzRemove:
				iova := c.addr()
				size := uint64(c.u8()) * 0x10
				fuzzRemove(t, m, fm, iova, size)
			case fzRead, fzWrite:
				addr := c.addr()
				n := int(c.u8()) * 2
				p := make([]byte, n)
				if op == fzWrite {
					for i := range p {
						fill++
						p[i] = fill
					}
				}
				fuzzAccess(t, mem, fm, Op(op-fzRead+1), p, addr, false)
			case fzStore32:
				addr := c.addr()
				fill++
				p := []byte{fill, fill + 1, fill + 2, fill + 3}
				fuzzAccess(t, mem, fm, Write, p, addr, true)
			case fzRemoveAll:
				m.RemoveAll()
				fm.maps = nil
			case fzBusMaster:
				fm.busMaster = !fm.busMaster
				m.SetBusMaster(fm.busMaster)
			case fzRegions:
				checkRegions(t, m, fm)
			}
			for i, r := range rams {
				if !bytes.Equal(r.Bytes(), fm.files[i]) {
					t.Fatalf("step %d: file %d differs from the model", step, i)
				}
			}
		}
		run.End()
		checkRegions(t, m, fm)
		m.Close()
		if n := m.mappedFiles(); n != 0 {
			t.Fatalf("%d files still mapped after Close", n)
		}
	})
}

func fuzzAdd(t *testing.T, m *Map, fm *fuzzModel, rams [2]*dmatest.RAM, mm modelMap, size uint64) {
	t.Helper()
	mp := Mapping{IOVA: mm.iova, Size: size, Offset: mm.off, Prot: mm.prot, Fd: -1}
	if mm.file >= 0 {
		mp.Fd = rams[mm.file].Fd()
	} else {
		mp.Offset = 0
	}
	var want error
	switch {
	case size == 0 || mm.iova > math.MaxUint64-(size-1):
		want = unix.EINVAL
	case slices.ContainsFunc(fm.maps, func(o modelMap) bool { return o.iova <= mm.last && mm.iova <= o.last }):
		want = unix.EEXIST
	case mm.file >= 0 && mm.off+size > fzFileSize:
		want = unix.EINVAL
	}
	err := m.Add(mp)
	if mp.Fd >= 0 && !fdClosed(mp.Fd) {
		t.Fatalf("Add(%+v) left its fd open", mp)
	}
	if (err == nil) != (want == nil) || !errors.Is(err, want) {
		t.Fatalf("Add(%+v) = %v, model says %v", mp, err, want)
	}
	if err == nil {
		fm.maps = append(fm.maps, mm)
	}
}

func fuzzRemove(t *testing.T, m *Map, fm *fuzzModel, iova, size uint64) {
	t.Helper()
	var want error
	var keep []modelMap
	if size == 0 || iova > math.MaxUint64-(size-1) {
		want = unix.EINVAL
	} else {
		last := iova + size - 1
		hit := 0
		for _, o := range fm.maps {
			switch {
			case o.last < iova || o.iova > last:
				keep = append(keep, o)
			case o.iova < iova || o.last > last:
				want = unix.EINVAL
			default:
				hit++
			}
		}
		if want == nil && hit == 0 {
			want = unix.ENOENT
		}
	}
	err := m.Remove(iova, size)
	if (err == nil) != (want == nil) || !errors.Is(err, want) {
		t.Fatalf("Remove(%#x, %#x) = %v, model says %v", iova, size, err, want)
	}
	if err == nil {
		fm.maps = keep
	}
}

// fuzzAccess does one access on m and checks it against the model.
func fuzzAccess(t *testing.T, m Space, fm *fuzzModel, op Op, p []byte, addr uint64, store32 bool) {
	t.Helper()
	// The model: how many leading bytes are accessible, and why it stops.
	wantN, want := 0, error(nil)
	if !fm.busMaster && len(p) > 0 {
		want = ErrBusMasterOff
	} else {
		for wantN < len(p) {
			a := addr + uint64(wantN)
			if a < addr {
				want = ErrUnmapped // wrapped past 2^64
				break
			}
			mm := fm.at(a)
			switch {
			case mm == nil:
				want = ErrUnmapped
			case op == Read && mm.prot&ProtRead == 0:
				want = ErrNotReadable
			case op == Write && mm.prot&ProtWrite == 0:
				want = ErrReadOnly
			}
			if want != nil {
				break
			}
			wantN++
		}
	}
	var n int
	var err error
	switch {
	case store32:
		err = m.Store32(addr, binary.NativeEndian.Uint32(p))
		n = wantN // Store32 reports no count; the memory check covers it
	case op == Read:
		n, err = m.ReadAt(p, addr)
	default:
		n, err = m.WriteAt(p, addr)
	}
	what := fmt.Sprintf("%s %d@%#x", op, len(p), addr)
	if n != wantN || !errors.Is(err, want) || (err == nil) != (want == nil) {
		t.Fatalf("%s = %d, %v; model says %d, %v", what, n, err, wantN, want)
	}
	if want != nil {
		var de *Error
		if !errors.As(err, &de) {
			t.Fatalf("%s: error %v is not a *Error", what, err)
		}
		if wantAddr := addr + uint64(wantN); want != ErrBusMasterOff && (de.Addr != wantAddr || de.Len != len(p)-wantN) {
			t.Fatalf("%s: *Error at %d@%#x, want %d@%#x", what, de.Len, de.Addr, len(p)-wantN, wantAddr)
		}
	}
	// Replay the accessible prefix on the model.
	for i := range wantN {
		a := addr + uint64(i)
		mm := fm.at(a)
		var b *byte
		if mm.file < 0 {
			v := fm.msg[a]
			b = &v
			if op == Write {
				fm.msg[a] = p[i]
			}
		} else {
			b = &fm.files[mm.file][mm.off+(a-mm.iova)]
			if op == Write {
				*b = p[i]
			}
		}
		if op == Read && p[i] != *b {
			t.Fatalf("%s: byte %d = %#x, model has %#x", what, i, p[i], *b)
		}
	}
	if op == Read {
		for i := wantN; i < len(p); i++ {
			if p[i] != 0 {
				t.Fatalf("%s: byte %d past n was written", what, i)
			}
		}
	}
}

func checkRegions(t *testing.T, m *Map, fm *fuzzModel) {
	t.Helper()
	var want []RegionInfo
	for _, o := range fm.maps {
		want = append(want, RegionInfo{IOVA: o.iova, Size: o.last - o.iova + 1, Prot: o.prot, Shared: o.file >= 0})
	}
	slices.SortFunc(want, func(a, b RegionInfo) int {
		if a.IOVA < b.IOVA {
			return -1
		}
		return 1
	})
	if diff := cmp.Diff(want, m.Regions(), cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("Regions -model +got:\n%s", diff)
	}
}
