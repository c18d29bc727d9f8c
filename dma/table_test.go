package dma

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The chunked table against a plain sorted slice, through random inserts,
// range deletes and lookups, checking its invariants after every step.
func TestRegionTableModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tab regionTable
	var model []uint64 // iovas, sorted
	maxLen := 0
	check := func(step int) {
		t.Helper()
		maxLen = max(maxLen, len(model))
		if tab.len() != len(model) {
			t.Fatalf("step %d: len %d, model %d", step, tab.len(), len(model))
		}
		var got []uint64
		for ci, ch := range tab.chunks {
			if len(ch) == 0 || len(ch) > chunkMax {
				t.Fatalf("step %d: chunk %d has %d regions", step, ci, len(ch))
			}
			for _, r := range ch {
				got = append(got, r.iova)
			}
		}
		if !slices.Equal(got, model) {
			t.Fatalf("step %d: table %v, model %v", step, got, model)
		}
	}
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 6: // insert a 1-unit region at a free slot
			iova := rng.Uint64N(4000) * 2
			i, found := slices.BinarySearch(model, iova)
			if found {
				continue
			}
			p := tab.find(iova)
			if r := tab.at(p); r != nil && r.iova <= iova {
				t.Fatalf("step %d: find(%d) gives a region at %d", step, iova, r.iova)
			}
			tab.insert(p, &region{iova: iova, last: iova})
			model = slices.Insert(model, i, iova)
		case op < 9: // delete the regions in a random range
			lo := rng.Uint64N(8000)
			hi := lo + rng.Uint64N(64)
			i, _ := slices.BinarySearch(model, lo)
			j, _ := slices.BinarySearch(model, hi)
			if i == j {
				continue
			}
			p := tab.find(lo)
			if r := tab.at(p); r == nil || r.iova != model[i] {
				t.Fatalf("step %d: find(%d) = %v, want iova %d", step, lo, r, model[i])
			}
			tab.deleteN(p, j-i)
			model = slices.Delete(model, i, j)
		default: // walk from a lookup to the end
			addr := rng.Uint64N(8000)
			i, _ := slices.BinarySearch(model, addr)
			for p := tab.find(addr); tab.at(p) != nil; p = tab.next(p) {
				if tab.at(p).iova != model[i] {
					t.Fatalf("step %d: walk from %d: %d, want %d", step, addr, tab.at(p).iova, model[i])
				}
				i++
			}
			if i != len(model) {
				t.Fatalf("step %d: walk from %d stopped at %d of %d", step, addr, i, len(model))
			}
		}
		if step%16 == 0 {
			check(step)
		}
	}
	check(-1)
	if maxLen <= 2*chunkMax {
		t.Errorf("the model never grew past %d regions: chunks never split", maxLen)
	}
	tab.reset()
	if tab.len() != 0 || tab.at(tab.find(0)) != nil {
		t.Fatal("reset table not empty")
	}
}
