package dma

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/myriemu/myriemu/dma/dmatest"
)

// fakeSource is a device's table for the audit tests: one endpoint (0)
// with regions by id, control areas and a page-table root.
type fakeSource struct {
	mu      sync.Mutex
	regs    map[uint32]RegView
	areas   map[TagKind][2]uint64
	root    PTRoot
	inReset bool
}

func (s *fakeSource) Registration(ep int, id uint32) (RegView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.regs[id]
	return r, ok && ep == 0
}

func (s *fakeSource) ControlArea(ep int, k TagKind) (uint64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.areas[k]
	return a[0], a[1]
}

func (s *fakeSource) ValidCovers(addr uint64, n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.regs {
		for _, p := range r.Pages {
			if r.Valid && p <= addr && addr+uint64(n) <= p+1<<r.PageShift {
				return true
			}
		}
	}
	return false
}

func (s *fakeSource) PTRoot(int) PTRoot { s.mu.Lock(); defer s.mu.Unlock(); return s.root }
func (s *fakeSource) InReset() bool     { s.mu.Lock(); defer s.mu.Unlock(); return s.inReset }

const (
	auditBase = 0x1000_0000
	auditSize = 4 << 20
	// Guest pages of the fixture.
	pgData  = auditBase + 0x10000 // region 1: two pages, RECV_DST and SEND_SRC
	pgData2 = auditBase + 0x20000
	pgEQ    = auditBase + 0x30000 // the endpoint's event queue (one page)
	pgSB    = auditBase + 0x31000 // its status block
	pgOther = auditBase + 0x40000
	userVA  = 0x7f00_1234_0000
)

type auditFixture struct {
	m      *Map
	ram    *dmatest.RAM
	src    *fakeSource
	a      *Audit
	events []AuditEvent
	next   uint64 // page allocator for page tables
	base   uint64 // guest address of ram's first byte
}

func newAuditFixture(t *testing.T, mode AuditMode) *auditFixture {
	t.Helper()
	f := &auditFixture{m: NewMap(nil), ram: dmatest.NewRAM(t, auditSize), next: auditBase + 0x100000, base: auditBase}
	t.Cleanup(func() { f.m.Close() })
	if err := f.m.Add(Mapping{IOVA: auditBase, Size: auditSize, Fd: f.ram.Fd(), Prot: ProtRead | ProtWrite}); err != nil {
		t.Fatal(err)
	}
	f.m.SetBusMaster(true)
	f.src = &fakeSource{
		regs: map[uint32]RegView{1: {Valid: true, Gen: 7, Read: true, Write: true, PageShift: 12, Length: 8192,
			UserVA: userVA, Pages: []uint64{pgData, pgData2}}},
		areas: map[TagKind][2]uint64{TagEventQ: {pgEQ, 4096}, TagStatus: {pgSB, 64}},
	}
	f.a = NewAudit(f.m, mode, f.src, func(ev AuditEvent) { f.events = append(f.events, ev) })
	t.Cleanup(f.a.Close)
	return f
}

func (f *auditFixture) allocPage() uint64 {
	p := f.next
	f.next += 4096
	return p
}

func (f *auditFixture) bytes(addr uint64, n int) []byte {
	return f.ram.Bytes()[addr-f.base : addr-f.base+uint64(n)]
}

var dataTag = Tag{Kind: TagData, Endpoint: 0, Region: 1, Gen: 7, Cookie: 0xc0}

// expectViolation runs access in both modes: observe lets it through
// (the bytes land, unless the door itself refuses: doorErr) and reports;
// enforce refuses it with ErrAudit, nothing lands, and reports. Both
// report exactly one violation of check with the event's fields.
func expectViolation(t *testing.T, check Check, doorErr error, setup func(*auditFixture) (Tag, uint64)) {
	t.Helper()
	for _, mode := range []AuditMode{AuditObserve, AuditEnforce} {
		f := newAuditFixture(t, mode)
		tag, addr := setup(f)
		p := []byte("violation")
		before := bytes.Clone(f.bytes(addr, len(p)))
		_, err := f.a.WriteAt(tag, p, addr)
		c := f.a.Counters()
		if c.Violations != 1 || c.PerCheck[check.String()] != 1 {
			t.Errorf("%s %s: counters %+v, want one %s", check, mode, c, check)
		}
		if len(f.events) != 1 || f.events[0].Check != check || f.events[0].Addr != addr || f.events[0].Len != len(p) ||
			f.events[0].Op != Write || f.events[0].Tag != tag || f.events[0].Mode != mode {
			t.Errorf("%s %s: events %+v", check, mode, f.events)
		}
		got := f.bytes(addr, len(p))
		switch {
		case mode == AuditEnforce:
			if !errors.Is(err, ErrAudit) || c.Refused != 1 || !bytes.Equal(got, before) {
				t.Errorf("%s enforce: err %v, refused %d, memory changed %v", check, err, c.Refused, !bytes.Equal(got, before))
			}
		case doorErr != nil:
			if !errors.Is(err, doorErr) {
				t.Errorf("%s observe: err %v, want the door's %v", check, err, doorErr)
			}
		default:
			if err != nil || !bytes.Equal(got, p) {
				t.Errorf("%s observe: err %v, bytes %q: the access should go through", check, err, got)
			}
		}
	}
}

func TestAuditCorrectAccessesPass(t *testing.T) {
	f := newAuditFixture(t, AuditEnforce)
	pt := dmatest.NewPageTables(f.ram.Bytes(), auditBase, 4, f.allocPage)
	pt.Map(userVA, pgData, 1, true)
	pt.Map(userVA+4096, pgData2, 1, true)
	f.src.root = PTRoot{Addr: pt.Root, Levels: 4}
	tag := dataTag
	tag.Offset = 4000
	// 200 bytes across the page boundary: two pieces, as a device splits.
	if _, err := f.a.WriteAt(tag, make([]byte, 96), pgData+4000); err != nil {
		t.Fatal(err)
	}
	tag.Offset = 4096
	if _, err := f.a.ReadAt(tag, make([]byte, 104), pgData2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.WriteAt(Tag{Kind: TagEventQ}, make([]byte, 64), pgEQ+64); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Store32(Tag{Kind: TagStatus}, pgSB, 1); err != nil {
		t.Fatal(err)
	}
	if c := f.a.Counters(); c.Violations != 0 || c.Checked != 4 {
		t.Errorf("counters %+v, want 4 checked, 0 violations", c)
	}
}

func TestAuditA1Mapping(t *testing.T) {
	// The region's RAM was unmapped and mapped again (a reboot's PAM
	// churn) after REG: the map says yes, the epoch says no.
	expectViolation(t, CheckA1Mapping, nil, func(f *auditFixture) (Tag, uint64) {
		if err := f.m.Remove(auditBase, auditSize); err != nil {
			t.Fatal(err)
		}
		if err := f.m.Add(Mapping{IOVA: auditBase, Size: auditSize, Fd: f.ram.Fd(), Prot: ProtRead | ProtWrite}); err != nil {
			t.Fatal(err)
		}
		return dataTag, pgData
	})
}

func TestAuditA1ReadOnlyMapping(t *testing.T) {
	expectViolation(t, CheckA1Mapping, ErrReadOnly, func(f *auditFixture) (Tag, uint64) {
		ro := dmatest.NewRAM(t, 4096)
		if err := f.m.Add(Mapping{IOVA: 0x5000_0000, Size: 4096, Fd: ro.Fd(), Prot: ProtRead}); err != nil {
			t.Fatal(err)
		}
		f.src.areas[TagEventQ] = [2]uint64{0x5000_0000, 4096}
		// Writing reads back through a mapping of ro for the test.
		f.ram, f.base = ro, 0x5000_0000
		return Tag{Kind: TagEventQ}, 0x5000_0000
	})
}

func TestAuditA2BusMaster(t *testing.T) {
	expectViolation(t, CheckA2BusMaster, ErrBusMasterOff, func(f *auditFixture) (Tag, uint64) {
		f.m.SetBusMaster(false)
		return dataTag, pgData
	})
}

func TestAuditA2Reset(t *testing.T) {
	expectViolation(t, CheckA2BusMaster, nil, func(f *auditFixture) (Tag, uint64) {
		f.src.inReset = true
		return dataTag, pgData
	})
}

func TestAuditA3StaleGeneration(t *testing.T) {
	expectViolation(t, CheckA3DataTag, nil, func(f *auditFixture) (Tag, uint64) {
		tag := dataTag
		tag.Gen = 6
		return tag, pgData
	})
}

func TestAuditA3WrongAddress(t *testing.T) {
	// A model address bug: offset 4096 is the second page, not pgOther.
	expectViolation(t, CheckA3DataTag, nil, func(f *auditFixture) (Tag, uint64) {
		tag := dataTag
		tag.Offset = 4096
		return tag, pgOther
	})
}

func TestAuditA3Access(t *testing.T) {
	expectViolation(t, CheckA3DataTag, nil, func(f *auditFixture) (Tag, uint64) {
		r := f.src.regs[1]
		r.Write = false
		f.src.regs[1] = r
		return dataTag, pgData
	})
}

func TestAuditA4ControlOutsideArea(t *testing.T) {
	// A runaway event queue pointer: one entry past the queue's page.
	expectViolation(t, CheckA4ControlTag, nil, func(f *auditFixture) (Tag, uint64) {
		return Tag{Kind: TagEventQ}, pgEQ + 4096
	})
}

func TestAuditA5AfterDereg(t *testing.T) {
	// DEREG(1, 7) was acknowledged; a late chunk still carries its tag
	// (the region is reused under generation 8 at the same pages).
	expectViolation(t, CheckA5Fence, nil, func(f *auditFixture) (Tag, uint64) {
		f.a.Invalidated(0, 1, 0)
		f.a.Retired(0, 1, 7, []uint64{pgData, pgData2}, 4096)
		r := f.src.regs[1]
		r.Gen = 8
		f.src.regs[1] = r
		return dataTag, pgData
	})
	f := newAuditFixture(t, AuditObserve)
	f.a.Invalidated(0, 1, 2)
	f.a.Retired(0, 1, 7, []uint64{pgData}, 4096)
	f.a.WriteAt(dataTag, []byte{1}, pgData)
	if len(f.events) != 1 || f.events[0].LastReason != 2 || f.events[0].SinceDereg < 0 {
		t.Errorf("A5 event %+v, want the last reason (2) and the time since DEREG", f.events)
	}
}

func TestAuditA6Quarantine(t *testing.T) {
	// A status block write into a page that a DEREG just retired: a device
	// that kept a stale translation.
	expectViolation(t, CheckA6Quarantine, nil, func(f *auditFixture) (Tag, uint64) {
		f.a.Retired(0, 1, 7, []uint64{pgData, pgData2}, 4096)
		delete(f.src.regs, 1)
		f.src.areas[TagStatus] = [2]uint64{pgData2, 64}
		return Tag{Kind: TagStatus}, pgData2
	})
}

func TestAuditA7PageTable(t *testing.T) {
	for _, levels := range []int{4, 5} {
		// The driver skipped invalidation: the process's page now maps
		// pgOther, the device still holds pgData.
		expectViolation(t, CheckA7PageTable, nil, func(f *auditFixture) (Tag, uint64) {
			pt := dmatest.NewPageTables(f.ram.Bytes(), auditBase, levels, f.allocPage)
			pt.Map(userVA, pgOther, 1, true)
			f.src.root = PTRoot{Addr: pt.Root, Levels: levels}
			return dataTag, pgData
		})
	}
	// Unmapped (munmap without invalidation), and read-only (mprotect).
	expectViolation(t, CheckA7PageTable, nil, func(f *auditFixture) (Tag, uint64) {
		pt := dmatest.NewPageTables(f.ram.Bytes(), auditBase, 4, f.allocPage)
		pt.Map(userVA, pgData, 1, true)
		pt.Unmap(userVA)
		f.src.root = PTRoot{Addr: pt.Root, Levels: 4}
		return dataTag, pgData
	})
	expectViolation(t, CheckA7PageTable, nil, func(f *auditFixture) (Tag, uint64) {
		pt := dmatest.NewPageTables(f.ram.Bytes(), auditBase, 4, f.allocPage)
		pt.Map(userVA, pgData, 1, false)
		f.src.root = PTRoot{Addr: pt.Root, Levels: 4}
		return dataTag, pgData
	})
}

// TestAuditPageWalkLeaves: 2 MiB and 1 GiB leaves translate (no
// violation) and the walk reads the level count it is given.
func TestAuditPageWalkLeaves(t *testing.T) {
	for _, c := range []struct {
		levels, leaf int
		va, pa       uint64
	}{{4, 2, 0x7f00_0020_0000, auditBase + 0x20_0000}, {5, 2, 0x00ff_7f00_0020_0000, auditBase + 0x20_0000}, {4, 3, 0x7f00_4000_0000, 0}} {
		f := newAuditFixture(t, AuditEnforce)
		pt := dmatest.NewPageTables(f.ram.Bytes(), auditBase, c.levels, f.allocPage)
		pt.Map(c.va, c.pa, c.leaf, true)
		for _, off := range []uint64{0, 0x1234, 0x1f_f000} {
			got, w, err := f.a.walk(PTRoot{Addr: pt.Root, Levels: c.levels}, c.va+off)
			if err != nil || got != c.pa+off || !w {
				t.Errorf("levels %d leaf %d: walk(%#x) = %#x %v %v, want %#x", c.levels, c.leaf, c.va+off, got, w, err, c.pa+off)
			}
		}
	}
}
