package dma

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/dma/dmatest"
)

const rw = ProtRead | ProtWrite

func newMap(t testing.TB) *Map {
	t.Helper()
	m := NewMap(nil)
	m.SetBusMaster(true)
	t.Cleanup(func() { m.Close() })
	return m
}

// fdClosed reports whether fd is no longer open.
func fdClosed(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == unix.EBADF
}

// reopen opens the file behind fd again with flags (O_RDONLY, O_WRONLY):
// the same inode under a new open file description.
func reopen(t *testing.T, fd int, flags int) int {
	t.Helper()
	nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("reopen fd %d: %v", fd, err)
	}
	unix.Close(fd)
	return nfd
}

func pipeReadEnd(t *testing.T) int {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	return p[0]
}

func countFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// countMappings counts the lines of /proc/self/maps that map ram's memfd.
func countMappings(t testing.TB, ram *dmatest.RAM) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "/memfd:"+ram.Name()+" ")
}

func TestAddRemove(t *testing.T) {
	const ramSize = 0x10000
	type step struct {
		remove  bool // else add
		all     bool // RemoveAll
		mp      Mapping
		fd      func(t *testing.T, ram *dmatest.RAM) int // nil: no fd (-1)
		wantErr error                                    // nil: success
	}
	ramFd := func(t *testing.T, ram *dmatest.RAM) int { return ram.Fd() }
	add := func(iova, size, off uint64, prot Prot, wantErr error) step {
		return step{mp: Mapping{IOVA: iova, Size: size, Offset: off, Prot: prot}, fd: ramFd, wantErr: wantErr}
	}
	addMsg := func(iova, size uint64, wantErr error) step {
		return step{mp: Mapping{IOVA: iova, Size: size, Prot: rw}, wantErr: wantErr}
	}
	rm := func(iova, size uint64, wantErr error) step {
		return step{remove: true, mp: Mapping{IOVA: iova, Size: size}, wantErr: wantErr}
	}
	tests := []struct {
		name  string
		steps []step
		want  []RegionInfo
	}{
		{
			name: "adjacent maps of one file",
			steps: []step{
				add(0x2000, 0x1000, 0x1000, rw, nil),
				add(0x1000, 0x1000, 0, rw, nil),
				add(0x3000, 0x2000, 0x8000, ProtRead, nil),
			},
			want: []RegionInfo{
				{IOVA: 0x1000, Size: 0x1000, Prot: rw, Shared: true},
				{IOVA: 0x2000, Size: 0x1000, Prot: rw, Shared: true},
				{IOVA: 0x3000, Size: 0x2000, Prot: ProtRead, Shared: true},
			},
		},
		{
			name: "overlaps refused",
			steps: []step{
				add(0x1000, 0x2000, 0, rw, nil),
				add(0x2000, 0x1000, 0, rw, unix.EEXIST), // inside
				add(0x0, 0x1001, 0, rw, unix.EEXIST),    // last byte overlaps
				add(0x2fff, 0x10, 0, rw, unix.EEXIST),   // first byte overlaps
				add(0x0, 0x10000, 0, rw, unix.EEXIST),   // covers it
				addMsg(0x1800, 0x100, unix.EEXIST),      // message map too
				add(0x3000, 0x1000, 0, rw, nil),         // adjacent after
				add(0x0, 0x1000, 0, rw, nil),            // adjacent before
			},
			want: []RegionInfo{
				{IOVA: 0x0, Size: 0x1000, Prot: rw, Shared: true},
				{IOVA: 0x1000, Size: 0x2000, Prot: rw, Shared: true},
				{IOVA: 0x3000, Size: 0x1000, Prot: rw, Shared: true},
			},
		},
		{
			name: "bad ranges",
			steps: []step{
				add(0x1000, 0, 0, rw, unix.EINVAL),
				add(math.MaxUint64-0xfff, 0x2000, 0, rw, unix.EINVAL),
				addMsg(math.MaxUint64, 2, unix.EINVAL),
				add(0x1000, ramSize+1, 0, rw, unix.EINVAL),
				add(0x1000, 0x1000, ramSize-0xfff, rw, unix.EINVAL),
				add(0x1000, 0x1000, ramSize+0x1000, rw, unix.EINVAL),
				add(0x1000, 0x1000, math.MaxUint64-0x10, rw, unix.EINVAL),
				addMsg(math.MaxUint64-0xfff, 0x1000, nil), // ends at the last address
				addMsg(0, math.MaxUint64, unix.EEXIST),
			},
			want: []RegionInfo{{IOVA: math.MaxUint64 - 0xfff, Size: 0x1000, Prot: rw}},
		},
		{
			name: "fds that cannot back RAM",
			steps: []step{
				{mp: Mapping{IOVA: 0x1000, Size: 0x1000, Prot: rw}, fd: func(t *testing.T, _ *dmatest.RAM) int { return pipeReadEnd(t) }, wantErr: unix.EINVAL},
				{mp: Mapping{IOVA: 0x1000, Size: 0x1000, Prot: rw}, fd: func(t *testing.T, ram *dmatest.RAM) int { return reopen(t, ram.Fd(), unix.O_WRONLY) }, wantErr: unix.EACCES},
				{mp: Mapping{IOVA: 0x1000, Size: 0x1000, Prot: rw}, fd: func(t *testing.T, _ *dmatest.RAM) int { return 1 << 20 }, wantErr: unix.EBADF},
			},
		},
		{
			name: "read-only fd makes a read-only map",
			steps: []step{
				{mp: Mapping{IOVA: 0x1000, Size: 0x1000, Prot: rw}, fd: func(t *testing.T, ram *dmatest.RAM) int { return reopen(t, ram.Fd(), unix.O_RDONLY) }},
			},
			want: []RegionInfo{{IOVA: 0x1000, Size: 0x1000, Prot: ProtRead, Shared: true}},
		},
		{
			name: "unknown prot bits dropped",
			steps: []step{
				addMsg(0x1000, 0x1000, nil),
				{mp: Mapping{IOVA: 0x2000, Size: 0x1000, Prot: 0xfffc | ProtRead}, fd: ramFd},
			},
			want: []RegionInfo{{IOVA: 0x1000, Size: 0x1000, Prot: rw}, {IOVA: 0x2000, Size: 0x1000, Prot: ProtRead, Shared: true}},
		},
		{
			name: "unmap exact, two at once, and a range around",
			steps: []step{
				add(0x1000, 0x1000, 0, rw, nil),
				add(0x2000, 0x1000, 0x1000, rw, nil),
				add(0x5000, 0x1000, 0x2000, rw, nil),
				addMsg(0x8000, 0x1000, nil),
				add(0x10000, 0x1000, 0x3000, rw, nil),
				rm(0x1000, 0x2000, nil), // both adjacent maps
				rm(0x4000, 0x3000, nil), // a range around 0x5000
				rm(0x8000, 0x1000, nil), // message map
				rm(0x8000, 0x1000, unix.ENOENT),
			},
			want: []RegionInfo{{IOVA: 0x10000, Size: 0x1000, Prot: rw, Shared: true}},
		},
		{
			name: "partial unmap refused, nothing changes",
			steps: []step{
				add(0x1000, 0x2000, 0, rw, nil),
				add(0x3000, 0x1000, 0, rw, nil),
				rm(0x1000, 0x1000, unix.EINVAL), // first half
				rm(0x2000, 0x2000, unix.EINVAL), // cuts the first, covers the second
				rm(0x3800, 0x100, unix.EINVAL),  // inside
				rm(0x0, 0x1000, unix.ENOENT),    // adjacent, covers none
				rm(0x0, 0, unix.EINVAL),
				rm(math.MaxUint64, 2, unix.EINVAL),
			},
			want: []RegionInfo{
				{IOVA: 0x1000, Size: 0x2000, Prot: rw, Shared: true},
				{IOVA: 0x3000, Size: 0x1000, Prot: rw, Shared: true},
			},
		},
		{
			name: "unmap all",
			steps: []step{
				add(0x1000, 0x1000, 0, rw, nil),
				addMsg(0x8000, 0x1000, nil),
				{all: true},
				add(0x1000, 0x1000, 0, rw, nil), // usable again
			},
			want: []RegionInfo{{IOVA: 0x1000, Size: 0x1000, Prot: rw, Shared: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ram := dmatest.NewRAM(t, ramSize)
			m := newMap(t)
			for i, s := range tt.steps {
				var err error
				switch {
				case s.all:
					m.RemoveAll()
				case s.remove:
					err = m.Remove(s.mp.IOVA, s.mp.Size)
				default:
					mp := s.mp
					mp.Fd = -1
					if s.fd != nil {
						mp.Fd = s.fd(t, ram)
					}
					err = m.Add(mp)
					if mp.Fd >= 0 && mp.Fd < 1<<20 && !fdClosed(mp.Fd) {
						t.Errorf("step %d: Add left fd %d open", i, mp.Fd)
					}
				}
				if (err != nil) != (s.wantErr != nil) || (s.wantErr != nil && !errors.Is(err, s.wantErr)) {
					t.Errorf("step %d: err = %v, want %v", i, err, s.wantErr)
				}
			}
			if diff := cmp.Diff(tt.want, m.Regions(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Regions() -want +got:\n%s", diff)
			}
		})
	}
}

// fakeMessenger serves message DMA from its own memory, by IOVA.
type fakeMessenger struct {
	mu    sync.Mutex
	base  uint64
	mem   []byte
	calls []string
	err   error
}

func (f *fakeMessenger) span(addr uint64, n int) []byte {
	if addr < f.base || addr-f.base+uint64(n) > uint64(len(f.mem)) {
		return nil
	}
	return f.mem[addr-f.base : addr-f.base+uint64(n)]
}

func (f *fakeMessenger) ReadDMA(addr uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("read %d@%#x", len(p), addr))
	if f.err != nil {
		return f.err
	}
	s := f.span(addr, len(p))
	if s == nil {
		return fmt.Errorf("fake messenger: read outside its memory")
	}
	copy(p, s)
	return nil
}

func (f *fakeMessenger) WriteDMA(addr uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("write %d@%#x", len(p), addr))
	if f.err != nil {
		return f.err
	}
	s := f.span(addr, len(p))
	if s == nil {
		return fmt.Errorf("fake messenger: write outside its memory")
	}
	copy(s, p)
	return nil
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// accessFixture maps, from one 64 KiB RAM:
//
//	0x10000-0x13fff  rw  file 0x0000      \ adjacent, different file offsets
//	0x14000-0x17fff  rw  file 0x8000      /
//	0x18000-0x1ffff  unmapped
//	0x20000-0x20fff  r-  file 0x4000      read-only
//	0x21000-0x21fff  rw  message          (fake messenger)
//	0x22000-0x22fff  -w  file 0xc000      not readable
func accessFixture(t *testing.T) (*Map, *dmatest.RAM, *fakeMessenger) {
	t.Helper()
	ram := dmatest.NewRAM(t, 0x10000)
	copy(ram.Bytes(), pattern(0x10000, 1))
	m := newMap(t)
	for _, mp := range []Mapping{
		{IOVA: 0x10000, Size: 0x4000, Offset: 0, Fd: ram.Fd(), Prot: rw},
		{IOVA: 0x14000, Size: 0x4000, Offset: 0x8000, Fd: ram.Fd(), Prot: rw},
		{IOVA: 0x20000, Size: 0x1000, Offset: 0x4000, Fd: ram.Fd(), Prot: ProtRead},
		{IOVA: 0x21000, Size: 0x1000, Fd: -1, Prot: rw},
		{IOVA: 0x22000, Size: 0x1000, Offset: 0xc000, Fd: ram.Fd(), Prot: ProtWrite},
	} {
		if err := m.Add(mp); err != nil {
			t.Fatal(err)
		}
	}
	ms := &fakeMessenger{base: 0x21000, mem: pattern(0x1000, 100)}
	m.SetMessenger(ms)
	return m, ram, ms
}

func TestAccess(t *testing.T) {
	tests := []struct {
		name     string
		op       Op
		addr     uint64
		n, wantN int    // bytes asked for, bytes done
		wantErr  error  // nil: success
		wantAddr uint64 // *Error.Addr
		// where the bytes live, as (file offset, length) pieces; -1 offset:
		// the messenger's memory at 0x21000.
		pieces [][2]int
		calls  []string
	}{
		{name: "read inside one map", op: Read, addr: 0x10010, n: 64, wantN: 64, pieces: [][2]int{{0x10, 64}}},
		{name: "read across adjacent maps", op: Read, addr: 0x13ff0, n: 0x20, wantN: 0x20, pieces: [][2]int{{0x3ff0, 0x10}, {0x8000, 0x10}}},
		{name: "write across adjacent maps", op: Write, addr: 0x13ff0, n: 0x20, wantN: 0x20, pieces: [][2]int{{0x3ff0, 0x10}, {0x8000, 0x10}}},
		{name: "read runs into a hole", op: Read, addr: 0x17ff8, n: 0x10, wantN: 8, wantErr: ErrUnmapped, wantAddr: 0x18000, pieces: [][2]int{{0xbff8, 8}}},
		{name: "write runs into a hole", op: Write, addr: 0x17ff8, n: 0x10, wantN: 8, wantErr: ErrUnmapped, wantAddr: 0x18000, pieces: [][2]int{{0xbff8, 8}}},
		{name: "read starts in a hole", op: Read, addr: 0x1fff0, n: 0x20, wantErr: ErrUnmapped, wantAddr: 0x1fff0},
		{name: "unmapped address", op: Write, addr: 0x5000, n: 4, wantErr: ErrUnmapped, wantAddr: 0x5000},
		{name: "wraps past 2^64", op: Read, addr: math.MaxUint64 - 1, n: 4, wantErr: ErrUnmapped, wantAddr: math.MaxUint64 - 1},
		{name: "read of read-only map", op: Read, addr: 0x20000, n: 16, wantN: 16, pieces: [][2]int{{0x4000, 16}}},
		{name: "write to read-only map", op: Write, addr: 0x20ff0, n: 4, wantErr: ErrReadOnly, wantAddr: 0x20ff0},
		{
			name: "read from message map runs into write-only map", op: Read, addr: 0x21ff8, n: 16, wantN: 8,
			wantErr: ErrNotReadable, wantAddr: 0x22000, pieces: [][2]int{{-1, 8}}, calls: []string{"read 8@0x21ff8"},
		},
		{name: "read of write-only map", op: Read, addr: 0x22000, n: 4, wantErr: ErrNotReadable, wantAddr: 0x22000},
		{name: "write to write-only map", op: Write, addr: 0x22000, n: 4, wantN: 4, pieces: [][2]int{{0xc000, 4}}},
		{
			name: "read from shared into message map", op: Read, addr: 0x20ff8, n: 0x10, wantN: 0x10,
			pieces: [][2]int{{0x4ff8, 8}, {-1, 8}}, calls: []string{"read 8@0x21000"},
		},
		{
			name: "write from message into write-only map", op: Write, addr: 0x21ffc, n: 8, wantN: 8,
			pieces: [][2]int{{-1, 4}, {0xc000, 4}}, calls: []string{"write 4@0x21ffc"},
		},
		{name: "write from a hole into the read-only map", op: Write, addr: 0x1fff8, n: 0x10, wantErr: ErrUnmapped, wantAddr: 0x1fff8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ram, ms := accessFixture(t)
			before := bytes.Clone(ram.Bytes())
			msgBefore := bytes.Clone(ms.mem)
			p := make([]byte, tt.n)
			if tt.op == Write {
				p = pattern(tt.n, 200)
			}
			var n int
			var err error
			if tt.op == Read {
				n, err = m.ReadAt(p, tt.addr)
			} else {
				n, err = m.WriteAt(p, tt.addr)
			}
			if n != tt.wantN {
				t.Errorf("n = %d, want %d", n, tt.wantN)
			}
			if tt.wantErr == nil && err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			if tt.wantErr != nil {
				var de *Error
				if !errors.As(err, &de) || !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want *Error wrapping %v", err, tt.wantErr)
				}
				want := Error{Op: tt.op, Addr: tt.wantAddr, Len: tt.n - tt.wantN, Err: de.Err}
				if diff := cmp.Diff(want, *de, cmp.Comparer(func(a, b error) bool { return a == b })); diff != "" {
					t.Errorf("*Error -want +got:\n%s", diff)
				}
			}
			// Build the expected memory: the pieces hold p's bytes in order.
			wantRAM, wantMsg := bytes.Clone(before), bytes.Clone(msgBefore)
			pos := 0
			for i, pc := range tt.pieces {
				off, l := pc[0], pc[1]
				var src []byte
				if off < 0 {
					mo := int(tt.addr+uint64(pos)) - 0x21000
					src = msgBefore[mo : mo+l]
					if tt.op == Write {
						copy(wantMsg[mo:], p[pos:pos+l])
					}
				} else {
					src = before[off : off+l]
					if tt.op == Write {
						copy(wantRAM[off:], p[pos:pos+l])
					}
				}
				if tt.op == Read && !bytes.Equal(p[pos:pos+l], src) {
					t.Errorf("piece %d: read %x, want %x", i, p[pos:pos+l], src)
				}
				pos += l
			}
			if tt.op == Read && !bytes.Equal(p[pos:], make([]byte, len(p)-pos)) {
				t.Errorf("read wrote past n: %x", p[pos:])
			}
			if !bytes.Equal(ram.Bytes(), wantRAM) {
				for i := range wantRAM {
					if ram.Bytes()[i] != wantRAM[i] {
						t.Fatalf("RAM differs first at file offset %#x: %#x, want %#x", i, ram.Bytes()[i], wantRAM[i])
					}
				}
			}
			if !bytes.Equal(ms.mem, wantMsg) {
				t.Errorf("messenger memory changed unexpectedly")
			}
			if diff := cmp.Diff(tt.calls, ms.calls); diff != "" {
				t.Errorf("messenger calls -want +got:\n%s", diff)
			}
		})
	}
}

func TestMessageErrors(t *testing.T) {
	m, _, ms := accessFixture(t)
	m.SetMessenger(nil)
	if _, err := m.ReadAt(make([]byte, 4), 0x21000); !errors.Is(err, ErrUnmapped) {
		t.Errorf("no messenger: err = %v, want ErrUnmapped", err)
	}
	m.SetMessenger(ms)
	ms.err = ErrInHandler
	n, err := m.WriteAt(make([]byte, 0x10), 0x20ff8+0x8) // all in the message map
	var de *Error
	if n != 0 || !errors.As(err, &de) || !errors.Is(err, ErrInHandler) || de.Addr != 0x21000 {
		t.Errorf("messenger error: n=%d err=%v, want 0 and *Error at 0x21000 wrapping ErrInHandler", n, err)
	}
}

func TestGates(t *testing.T) {
	type access struct {
		name string
		do   func(m *Map) error
	}
	accesses := []access{
		{"ReadAt", func(m *Map) error { _, err := m.ReadAt(make([]byte, 8), 0x10000); return err }},
		{"WriteAt", func(m *Map) error { _, err := m.WriteAt(make([]byte, 8), 0x10000); return err }},
		{"Store32", func(m *Map) error { return m.Store32(0x10000, 1) }},
		{"message", func(m *Map) error { _, err := m.ReadAt(make([]byte, 8), 0x21000); return err }},
	}
	for _, a := range accesses {
		t.Run(a.name, func(t *testing.T) {
			m, ram, ms := accessFixture(t)
			before := bytes.Clone(ram.Bytes())

			m.SetBusMaster(false)
			if err := a.do(m); !errors.Is(err, ErrBusMasterOff) {
				t.Errorf("bus master off: err = %v, want ErrBusMasterOff", err)
			}
			m.SetBusMaster(true)

			var seen []string
			hookErr := errors.New("injected")
			m.AddHook(HookFunc(func(op Op, addr uint64, n int) error {
				seen = append(seen, fmt.Sprintf("1:%s %d@%#x", op, n, addr))
				return nil
			}))
			fail := true
			m.AddHook(HookFunc(func(op Op, addr uint64, n int) error {
				seen = append(seen, "2")
				if fail {
					return hookErr
				}
				return nil
			}))
			if err := a.do(m); !errors.Is(err, hookErr) {
				t.Errorf("failing hook: err = %v, want the hook's error", err)
			}
			if len(seen) != 2 || seen[1] != "2" {
				t.Errorf("hooks ran %q, want both in order", seen)
			}
			if !bytes.Equal(ram.Bytes(), before) || len(ms.calls) != 0 {
				t.Errorf("an access refused by a hook touched memory")
			}
			fail = false
			if err := a.do(m); err != nil {
				t.Errorf("passing hooks: err = %v", err)
			}

			m.Close()
			if err := a.do(m); !errors.Is(err, ErrClosed) {
				t.Errorf("closed: err = %v, want ErrClosed", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestClosedMap(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x1000)
	m := newMap(t)
	if err := m.Add(Mapping{IOVA: 0x1000, Size: 0x1000, Fd: ram.Fd(), Prot: rw}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if got := m.mappedFiles(); got != 0 {
		t.Errorf("mapped files after Close = %d, want 0", got)
	}
	if got := countMappings(t, ram); got != 1 {
		t.Errorf("mappings of the memfd after Close = %d, want 1 (the RAM's own)", got)
	}
	fd := ram.Fd()
	if err := m.Add(Mapping{IOVA: 0x1000, Size: 0x1000, Fd: fd, Prot: rw}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: err = %v, want ErrClosed", err)
	}
	if !fdClosed(fd) {
		t.Errorf("Add after Close left its fd open")
	}
	if err := m.Remove(0x1000, 0x1000); !errors.Is(err, ErrClosed) {
		t.Errorf("Remove after Close: err = %v, want ErrClosed", err)
	}
	if len(m.Regions()) != 0 {
		t.Errorf("Regions after Close = %v, want none", m.Regions())
	}
}

func TestStore32(t *testing.T) {
	tests := []struct {
		name    string
		addr    uint64
		wantErr error
		fileOff int // where the 4 bytes land, if no error
		split   int // bytes at fileOff before jumping to 0x8000 (adjacent map)
	}{
		{name: "aligned", addr: 0x10100, fileOff: 0x100},
		{name: "unaligned", addr: 0x10101, fileOff: 0x101},
		{name: "across adjacent maps", addr: 0x13ffe, fileOff: 0x3ffe, split: 2},
		{name: "into a hole", addr: 0x17ffe, wantErr: ErrUnmapped},
		{name: "read-only", addr: 0x20000, wantErr: ErrReadOnly},
		{name: "message map", addr: 0x21000, fileOff: -1},
	}
	const v = 0xa1b2c3d4
	var vb [4]byte
	nativePut(vb[:], v)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ram, ms := accessFixture(t)
			err := m.Store32(tt.addr, v)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			var got []byte
			switch {
			case tt.fileOff < 0:
				got = ms.mem[tt.addr-0x21000:][:4]
			case tt.split > 0:
				got = append(bytes.Clone(ram.Bytes()[tt.fileOff:tt.fileOff+tt.split]), ram.Bytes()[0x8000:0x8000+4-tt.split]...)
			default:
				got = ram.Bytes()[tt.fileOff : tt.fileOff+4]
			}
			if !bytes.Equal(got, vb[:]) {
				t.Errorf("stored bytes %x, want %x (host order)", got, vb)
			}
		})
	}
}

// A map whose file offset is not 4-aligned makes an aligned IOVA an
// unaligned host address: Store32 must still store the right bytes.
func TestStore32MisalignedOffset(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x2000)
	m := newMap(t)
	if err := m.Add(Mapping{IOVA: 0x1000, Size: 0x1000, Offset: 1, Fd: ram.Fd(), Prot: rw}); err != nil {
		t.Fatal(err)
	}
	if err := m.Store32(0x1000, 0x01020304); err != nil {
		t.Fatal(err)
	}
	var want [4]byte
	nativePut(want[:], 0x01020304)
	if got := ram.Bytes()[1:5]; !bytes.Equal(got, want[:]) {
		t.Errorf("stored %x, want %x", got, want)
	}
}

func nativePut(b []byte, v uint32) { binary.NativeEndian.PutUint32(b, v) }

// Each map with an fd maps only its own page-rounded range of the file,
// never the whole file (issue 8, case 1); its mmap goes with it, PAM churn
// leaves nothing behind, and files are counted by inode.
func TestMapsOnlyTheirRange(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x100000)
	ram2 := dmatest.NewRAM(t, 0x1000)
	copy(ram.Bytes()[0x80000:], "upper")
	copy(ram.Bytes()[0x80800:], "mid")
	m := newMap(t)
	check := func(step string, wantFiles int, wantRAM, wantRAM2 uint64) {
		t.Helper()
		if got := m.mappedFiles(); got != wantFiles {
			t.Errorf("%s: mapped files = %d, want %d", step, got, wantFiles)
		}
		// Each RAM maps itself whole once; the rest is the Map's.
		if got := mappedBytes(t, ram.Name()) - uint64(ram.Size()); got != wantRAM {
			t.Errorf("%s: Map's bytes of ram = %#x, want %#x", step, got, wantRAM)
		}
		if got := mappedBytes(t, ram2.Name()) - uint64(ram2.Size()); got != wantRAM2 {
			t.Errorf("%s: Map's bytes of ram2 = %#x, want %#x", step, got, wantRAM2)
		}
		if u := m.Usage(); u.Bytes != wantRAM+wantRAM2 {
			t.Errorf("%s: Usage().Bytes = %#x, want %#x", step, u.Bytes, wantRAM+wantRAM2)
		}
	}
	check("empty", 0, 0, 0)
	mustAdd(t, m, Mapping{IOVA: 0, Size: 0x80000, Offset: 0, Fd: ram.Fd(), Prot: rw})
	mustAdd(t, m, Mapping{IOVA: 0x100000, Size: 0x1000, Offset: 0x80000, Fd: ram.Fd(), Prot: rw})
	check("two maps of one memfd", 1, 0x81000, 0)
	// An unaligned offset and size are rounded out to the page.
	mustAdd(t, m, Mapping{IOVA: 0x200800, Size: 0x800, Offset: 0x80800, Fd: ram.Fd(), Prot: rw})
	check("unaligned map", 1, 0x82000, 0)
	got := make([]byte, 3)
	if _, err := m.ReadAt(got, 0x200800); err != nil || string(got) != "mid" {
		t.Errorf("read of the unaligned map = %q, %v", got, err)
	}
	mustRemove(t, m, 0x200800, 0x800)
	// PAM churn: the low map goes and comes back with new fds, many times.
	for i := range 100 {
		if err := m.Remove(0, 0x80000); err != nil {
			t.Fatalf("churn %d: %v", i, err)
		}
		mustAdd(t, m, Mapping{IOVA: 0, Size: 0x80000, Offset: 0, Fd: ram.Fd(), Prot: rw})
	}
	check("after churn", 1, 0x81000, 0)
	mustAdd(t, m, Mapping{IOVA: 0x200000, Size: 0x1000, Fd: ram2.Fd(), Prot: rw})
	check("second memfd", 2, 0x81000, 0x1000)
	got = make([]byte, 5)
	if _, err := m.ReadAt(got, 0x100000); err != nil || string(got) != "upper" {
		t.Errorf("read through the second map = %q, %v", got, err)
	}
	mustRemove(t, m, 0, 0x80000)
	check("one map of the memfd left", 2, 0x1000, 0x1000)
	mustRemove(t, m, 0x100000, 0x1000)
	check("memfd unmapped", 1, 0, 0x1000)
	m.RemoveAll()
	check("all removed", 0, 0, 0)
}

// mappedBytes sums the sizes of this process's mappings of the memfd name.
func mappedBytes(t testing.TB, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "/memfd:"+name+" ") {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err != nil {
			t.Fatalf("maps line %q: %v", line, err)
		}
		sum += hi - lo
	}
	return sum
}

// A read-only fd gives a read-only map; a file that grew since an earlier
// map can back a later map of the grown part, and the earlier map keeps
// working.
func TestReadOnlyFdAndGrownFile(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x2000)
	copy(ram.Bytes(), "first")
	m := newMap(t)
	mustAdd(t, m, Mapping{IOVA: 0x1000, Size: 0x1000, Fd: reopen(t, ram.Fd(), unix.O_RDONLY), Prot: ProtRead})
	if _, err := m.WriteAt([]byte("x"), 0x1000); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to read-only map: %v", err)
	}
	fd := ram.Fd()
	if err := unix.Ftruncate(fd, 0x4000); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, m, Mapping{IOVA: 0x10000, Size: 0x1000, Offset: 0x3000, Fd: fd, Prot: rw})
	if got := m.mappedFiles(); got != 1 {
		t.Errorf("mapped files = %d, want 1", got)
	}
	got := make([]byte, 5)
	if _, err := m.ReadAt(got, 0x1000); err != nil || string(got) != "first" {
		t.Errorf("old map reads %q, %v", got, err)
	}
	if _, err := m.WriteAt([]byte("grown"), 0x10000); err != nil {
		t.Errorf("write to the grown part: %v", err)
	}
	want := []RegionInfo{{IOVA: 0x1000, Size: 0x1000, Prot: ProtRead, Shared: true}, {IOVA: 0x10000, Size: 0x1000, Prot: rw, Shared: true}}
	if diff := cmp.Diff(want, m.Regions()); diff != "" {
		t.Errorf("Regions -want +got:\n%s", diff)
	}
}

func mustAdd(t *testing.T, m *Map, mp Mapping) {
	t.Helper()
	if err := m.Add(mp); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, m *Map, iova, size uint64) {
	t.Helper()
	if err := m.Remove(iova, size); err != nil {
		t.Fatal(err)
	}
}

// Every fd handed to Add is closed exactly once, whatever happens to it.
func TestNoFdLeak(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x10000)
	before := countFds(t)
	m := NewMap(nil)
	m.SetBusMaster(true)
	for i := range 50 {
		iova := uint64(i) * 0x10000
		mustAdd(t, m, Mapping{IOVA: iova, Size: 0x1000, Offset: uint64(i%16) * 0x1000, Fd: ram.Fd(), Prot: rw})
		m.Add(Mapping{IOVA: iova, Size: 0x1000, Fd: ram.Fd(), Prot: rw})                // overlap
		m.Add(Mapping{IOVA: iova + 0x1000, Size: 0x20000, Fd: ram.Fd(), Prot: rw})      // past EOF
		m.Add(Mapping{IOVA: iova + 0x2000, Size: 0, Fd: ram.Fd(), Prot: rw})            // empty
		m.Add(Mapping{IOVA: iova + 0x3000, Size: 0x1000, Fd: pipeReadEnd(t), Prot: rw}) // not a file
		m.Add(Mapping{IOVA: iova + 0x4000, Size: 0x1000, Fd: reopen(t, ram.Fd(), unix.O_WRONLY), Prot: rw})
		if i%2 == 0 {
			mustRemove(t, m, iova, 0x1000)
		}
	}
	if got := countFds(t); got != before {
		t.Errorf("open fds with maps live = %d, want %d (Add keeps no fd)", got, before)
	}
	m.Close()
	m.Add(Mapping{IOVA: 0, Size: 0x1000, Fd: ram.Fd(), Prot: rw}) // after Close
	if got := countFds(t); got != before {
		t.Errorf("open fds after Close = %d, want %d", got, before)
	}
	if got := countMappings(t, ram); got != 1 {
		t.Errorf("mappings after Close = %d, want 1", got)
	}
}

// A client that shrinks its file under a live map would make the access
// fault; the access fails instead and the process lives.
func TestTruncatedFile(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x4000)
	m := newMap(t)
	mustAdd(t, m, Mapping{IOVA: 0x10000, Size: 0x4000, Fd: ram.Fd(), Prot: rw})
	fd := ram.Fd()
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 0x1000); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAt(make([]byte, 8), 0x10000); err != nil {
		t.Errorf("read of the part still in the file: %v", err)
	}
	n, err := m.ReadAt(make([]byte, 8), 0x12000)
	if n != 0 || !errors.Is(err, ErrUnmapped) {
		t.Errorf("read past the truncated end: n=%d err=%v, want 0, ErrUnmapped", n, err)
	}
	if _, err := m.WriteAt(make([]byte, 8), 0x13000); !errors.Is(err, ErrUnmapped) {
		t.Errorf("write past the truncated end: %v, want ErrUnmapped", err)
	}
	if err := m.Store32(0x13000, 1); !errors.Is(err, ErrUnmapped) {
		t.Errorf("Store32 past the truncated end: %v, want ErrUnmapped", err)
	}
	if got := m.Faults(); got != 3 {
		t.Errorf("Faults() = %d, want 3 (one per faulting access)", got)
	}
}

// Remove must wait for an access that is copying from the map it removes.
// Every shared copy runs under the map's read lock (copyShared), so the
// test holds that lock as an access in flight does; that accesses racing
// Remove never touch unmapped memory is TestConcurrentAccessAndRemove's.
func TestRemoveWaitsForInflightAccess(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x1000)
	m := newMap(t)
	mustAdd(t, m, Mapping{IOVA: 0x1000, Size: 0x1000, Fd: ram.Fd(), Prot: rw})
	m.mu.RLock() // an access copying from the map
	removed := make(chan error, 1)
	go func() { removed <- m.Remove(0x1000, 0x1000) }()
	select {
	case err := <-removed:
		m.mu.RUnlock()
		t.Fatalf("Remove returned (%v) while an access was copying from the map", err)
	case <-time.After(50 * time.Millisecond):
	}
	m.mu.RUnlock()
	if err := <-removed; err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := m.ReadAt(make([]byte, 4), 0x1000); !errors.Is(err, ErrUnmapped) {
		t.Errorf("read after Remove: %v, want ErrUnmapped", err)
	}
}

// DMA from several goroutines races map churn: run with -race. An access
// either completes on a live map or fails ErrUnmapped; none ever touches
// memory that was unmapped (that would show as a fault).
func TestConcurrentAccessAndRemove(t *testing.T) {
	ram := dmatest.NewRAM(t, 0x10000)
	m := newMap(t)
	mustAdd(t, m, Mapping{IOVA: 0x0, Size: 0x8000, Fd: ram.Fd(), Prot: rw}) // keeps the file mapped
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad sync.Map
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0x1800)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				addr := uint64(0x10000 + (i*0x400+g*0x100)%0x6000)
				var err error
				switch i % 3 {
				case 0:
					_, err = m.ReadAt(buf, addr)
				case 1:
					_, err = m.WriteAt(buf, addr)
				default:
					err = m.Store32(addr&^3, uint32(i))
				}
				if err != nil && !errors.Is(err, ErrUnmapped) {
					bad.Store(err.Error(), true)
				}
			}
		}()
	}
	for i := range 300 {
		mustAdd(t, m, Mapping{IOVA: 0x10000, Size: 0x8000, Offset: 0x8000, Fd: ram.Fd(), Prot: rw})
		if i%2 == 0 {
			// A second, short-lived file: its mmap comes and goes.
			tmp := dmatest.NewRAM(t, 0x8000)
			mustRemove(t, m, 0x10000, 0x8000)
			mustAdd(t, m, Mapping{IOVA: 0x10000, Size: 0x8000, Fd: tmp.Fd(), Prot: rw})
			tmp.Close()
		}
		mustRemove(t, m, 0x10000, 0x8000)
	}
	close(stop)
	wg.Wait()
	bad.Range(func(k, _ any) bool {
		t.Errorf("unexpected access error: %v", k)
		return true
	})
	if f := m.Faults(); f != 0 {
		t.Errorf("%d accesses faulted: an access touched memory after it was unmapped", f)
	}
}
