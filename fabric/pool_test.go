package fabric

import "testing"

// The pool recycles small frames through its free list and stash, keeps at
// most poolKeep on the free list, and leaves big frames to their sync.Pool.
func TestFramePoolRecyclesAndBounds(t *testing.T) {
	var fp framePool
	fs := make([]*frame, poolKeep+10)
	given := make(map[*frame]bool)
	for i := range fs {
		fs[i] = fp.get(64)
		if len(fs[i].b) != 64 || cap(fs[i].b) != smallFrame || fs[i].big {
			t.Fatalf("small frame: len %d cap %d big %v", len(fs[i].b), cap(fs[i].b), fs[i].big)
		}
		given[fs[i]] = true
	}
	fp.give(fs)
	if len(fp.free) != poolKeep {
		t.Fatalf("free list holds %d frames, want the bound %d", len(fp.free), poolKeep)
	}
	for i, f := range fs {
		if f != nil {
			t.Fatalf("give left frame %d in the caller's slice", i)
		}
	}
	f := fp.get(100)
	if !given[f] || len(f.b) != 100 {
		t.Errorf("get after give: a frame not given back (%v) or of %d bytes", given[f], len(f.b))
	}
	if len(fp.stash) != poolKeep-1 || len(fp.free) != 0 {
		t.Errorf("after a get: stash %d, free %d; want %d, 0", len(fp.stash), len(fp.free), poolKeep-1)
	}
	fp.unget(f)
	if len(fp.stash) != poolKeep {
		t.Errorf("unget: stash %d, want %d", len(fp.stash), poolKeep)
	}

	big := fp.get(MaxFrame)
	if !big.big || len(big.b) != MaxFrame {
		t.Fatalf("big frame: big %v len %d", big.big, len(big.b))
	}
	var r frameReturns
	r.add(&fp, big)
	r.flush(&fp)
	for _, f := range append(fp.stash, fp.free...) {
		if f.big {
			t.Fatal("a big frame entered the small frames' lists")
		}
	}
}
