package msi

import (
	"errors"
	"fmt"
	"math/bits"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/msi/msitest"
)

// fzVec is the model of one vector: the EventFD its fd duplicates (nil:
// de-assigned), its pending bit, and how many signals that EventFD should
// have seen.
type fzVec struct {
	ev      *msitest.EventFD
	want    uint64
	pending bool
	intx    bool // INTx's level semantics are tested elsewhere: not counted
}

type fzModel struct {
	enabled [NumIndexes]bool
	vecs    [NumIndexes][]fzVec
	retired []fzVec // vectors' former EventFDs, still checked
}

func (fm *fzModel) mode() Mode {
	switch {
	case fm.enabled[MSIX]:
		return ModeMSIX
	case fm.enabled[MSI]:
		return ModeMSI
	case fm.enabled[INTx]:
		return ModeINTx
	}
	return ModeNone
}

func (fm *fzModel) deassign(i Index, v int) {
	if fm.vecs[i][v].ev != nil {
		fm.retired = append(fm.retired, fm.vecs[i][v])
	}
	fm.vecs[i][v] = fzVec{pending: fm.vecs[i][v].pending}
}

func (fm *fzModel) disable(i Index) {
	for v := range fm.vecs[i] {
		fm.deassign(i, v)
		fm.vecs[i][v].pending = false
	}
	fm.enabled[i] = false
}

// setIRQs applies a request to the model; it returns the error the table
// must give (nil or EINVAL). evs are the EventFDs behind the fds.
func (fm *fzModel) setIRQs(i Index, flags, start, count uint32, evs []*msitest.EventFD, data []byte) error {
	dt, act := flags&dataFlags, flags&actionFlags
	switch {
	case flags&^(dataFlags|actionFlags) != 0, bits.OnesCount32(dt) != 1, bits.OnesCount32(act) != 1,
		i >= NumIndexes, len(evs) > 0 && dt != DataEventfd:
		return unix.EINVAL
	}
	if count == 0 {
		if dt == DataNone && act == ActionTrigger {
			fm.disable(i)
			return nil
		}
		return unix.EINVAL
	}
	n := len(fm.vecs[i])
	if uint64(start)+uint64(count) > uint64(n) || (dt == DataBool && len(data) < int(count)) {
		return unix.EINVAL
	}
	switch act {
	case ActionTrigger:
		switch dt {
		case DataEventfd:
			if len(evs) > int(count) {
				return unix.EINVAL
			}
			for k := range int(count) {
				v := int(start) + k
				fm.deassign(i, v)
				if k < len(evs) {
					fm.vecs[i][v].ev = evs[k]
					fm.vecs[i][v].intx = i == INTx
					if i != INTx && fm.vecs[i][v].pending {
						fm.vecs[i][v].pending = false
						fm.vecs[i][v].want++
					}
				}
			}
			fm.enabled[i] = true
		default:
			if !fm.enabled[i] {
				return unix.EINVAL
			}
			for k := range int(count) {
				if vec := &fm.vecs[i][int(start)+k]; vec.ev != nil && (dt == DataNone || data[k] != 0) {
					vec.want++
				}
			}
		}
	default:
		if i != INTx || (dt == DataEventfd && act == ActionMask) {
			return unix.EINVAL
		}
		if dt == DataEventfd {
			for _, ev := range evs {
				fm.retired = append(fm.retired, fzVec{ev: ev}) // resample fd: never written
			}
		}
	}
	return nil
}

func (fm *fzModel) raise(v int) {
	var i Index
	switch fm.mode() {
	case ModeMSIX:
		i = MSIX
	case ModeMSI:
		i = MSI
	default:
		return // INTx's level semantics have their own test
	}
	if v < 0 || v >= len(fm.vecs[i]) {
		return
	}
	if vec := &fm.vecs[i][v]; vec.ev != nil {
		vec.want++
	} else {
		vec.pending = true
	}
}

// FuzzSetIRQs drives a Table with SET_IRQS requests (arbitrary flags,
// index, range, fd count and data) mixed with raises, against a model.
// Invariants: the table accepts exactly what VFIO's rules accept; a refused
// request changes nothing and closes its fds; every MSI/MSI-X/ERR signal
// lands on the eventfd the model says, exactly as often; pending bits and
// Mode match; no write ever fails (no write to a closed fd); Reset leaves
// no fd open.
func FuzzSetIRQs(f *testing.F) {
	// Seeds: QEMU's MSI-X enable/unmask/mask/disable; MSI enable; INTx
	// enable, unmask, resample fd; client fire; invalid flag mixes.
	f.Add([]byte{0, 2, 0x24, 0, 1, 0, 1, 3, 0, 2, 0x24, 3, 1, 1, 1, 3, 0, 2, 0x24, 3, 1, 0, 1, 3, 0, 2, 0x21, 0, 0, 0, 1, 3})
	f.Add([]byte{0, 1, 0x24, 0, 2, 2, 1, 1, 1, 2, 0, 1, 0x21, 0, 2, 0, 0, 1, 0x22, 0, 2, 0, 1, 0})
	f.Add([]byte{0, 0, 0x24, 0, 1, 1, 1, 0, 0, 0, 0x11, 0, 1, 0, 0, 0, 0x14, 0, 1, 1, 2, 1, 0, 0, 0x09, 0, 1, 0, 3, 1, 3, 0})
	f.Add([]byte{0, 2, 0x25, 0, 1, 1, 0, 2, 0x2c, 0, 1, 0, 0, 2, 0x64, 0, 1, 1, 0, 5, 0x24, 0, 1, 1, 0, 3, 0x24, 0, 1, 2})
	f.Add([]byte{0, 2, 0x24, 0, 4, 2, 1, 0, 1, 1, 1, 2, 4, 1, 3, 5, 1, 1})

	f.Fuzz(func(t *testing.T, data []byte) {
		before := countFds(t)
		counts := [NumIndexes]int{1, 2, 4, 1, 0}
		tb := NewTable(counts, nil)
		fm := &fzModel{}
		var all []*msitest.EventFD
		for i := range fm.vecs {
			fm.vecs[i] = make([]fzVec, counts[i])
		}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		for step := 0; len(data) > 0 && step < 100; step++ {
			what := ""
			switch next() % 6 {
			case 0:
				index := Index(next() % (NumIndexes + 1))
				flags := uint32(next())
				start, count := uint32(next()%6), uint32(next()%6)
				var evs []*msitest.EventFD
				var fds []int
				for range next() % 4 {
					ev := msitest.NewEventFD(t)
					all = append(all, ev)
					evs = append(evs, ev)
					fds = append(fds, ev.Fd())
				}
				var bools []byte
				if flags&DataBool != 0 {
					for range count {
						bools = append(bools, next()&1)
					}
				}
				what = fmt.Sprintf("SetIRQs(%v, %#x, %d, %d, %d fds, %v)", index, flags, start, count, len(fds), bools)
				snap := stateOf(tb)
				want := fm.setIRQs(index, flags, start, count, evs, bools)
				err := tb.SetIRQs(index, flags, start, count, fds, bools)
				if (err == nil) != (want == nil) || !errors.Is(err, want) {
					t.Fatalf("%s = %v, model says %v", what, err, want)
				}
				if err != nil {
					for _, fd := range fds {
						if !fdClosed(fd) {
							t.Fatalf("%s: refused, but fd %d left open", what, fd)
						}
					}
					if got := stateOf(tb); fmt.Sprint(got) != fmt.Sprint(snap) {
						t.Fatalf("%s: refused, but state changed from %v to %v", what, snap, got)
					}
				}
			case 1:
				v := int(next()%6) - 1
				what = fmt.Sprintf("Raise(%d)", v)
				tb.Raise(v)
				fm.raise(v)
			case 2:
				what = "Lower"
				tb.Lower()
			case 3:
				what = "SetINTxDisabled"
				tb.SetINTxDisabled(next()&1 != 0)
			case 4:
				what = "ClearPending"
				tb.ClearPending()
				for i := range fm.vecs {
					for v := range fm.vecs[i] {
						fm.vecs[i][v].pending = false
					}
				}
			case 5:
				what = "Reset"
				tb.Reset()
				for i := range fm.vecs {
					fm.disable(Index(i))
				}
			}
			checkModel(t, what, tb, fm)
		}
		tb.Reset()
		for _, ev := range all {
			ev.Close()
		}
		if got := countFds(t); got != before {
			t.Fatalf("open fds after Reset = %d, want %d", got, before)
		}
	})
}

func checkModel(t *testing.T, what string, tb *Table, fm *fzModel) {
	t.Helper()
	if got, want := tb.Mode(), fm.mode(); got != want {
		t.Fatalf("after %s: Mode = %v, model says %v", what, got, want)
	}
	for _, s := range tb.Stats() {
		if s.Dropped != 0 {
			t.Fatalf("after %s: %v vector %d had %d failed writes", what, s.Index, s.Vector, s.Dropped)
		}
		if s.Index == INTx {
			continue
		}
		vec := fm.vecs[s.Index][s.Vector]
		if s.Assigned != (vec.ev != nil) || s.Pending != vec.pending {
			t.Fatalf("after %s: %v vector %d assigned %v pending %v, model says %v %v",
				what, s.Index, s.Vector, s.Assigned, s.Pending, vec.ev != nil, vec.pending)
		}
		if vec.ev != nil {
			if got := vec.ev.Count(); got != vec.want {
				t.Fatalf("after %s: %v vector %d signalled %d times, model says %d", what, s.Index, s.Vector, got, vec.want)
			}
		}
	}
	for _, v := range fm.retired {
		if v.intx {
			continue
		}
		if got := v.ev.Count(); got != v.want {
			t.Fatalf("after %s: a retired eventfd signalled %d times, model says %d", what, got, v.want)
		}
	}
}
