package dma

import (
	"iter"
	"slices"
	"sort"
)

// regionTable holds the live maps sorted by IOVA, never overlapping, in
// chunks of at most chunkMax. A lookup is two binary searches; an insert
// or a delete moves at most chunkMax pointers, plus one per chunk when a
// chunk splits (every chunkMax/2 inserts into it at least) or empties. One
// flat sorted slice moved all n pointers per insert: 20 times the cost of
// an empty map at the 65535-map limit (issue 8).
type regionTable struct {
	chunks [][]*region // each non-empty and sorted; chunk k's regions precede chunk k+1's
	n      int
}

// chunkMax bounds a chunk: 2 KiB of pointers, a few hundred ns to move.
const chunkMax = 256

// pos is a position in the table: chunk c, index i. The end position is
// {len(chunks), 0}.
type pos struct{ c, i int }

func (t *regionTable) len() int { return t.n }

// find returns the position of the first region whose last byte is at or
// after addr, or the end.
func (t *regionTable) find(addr uint64) pos {
	cs := t.chunks
	c := sort.Search(len(cs), func(k int) bool { ch := cs[k]; return ch[len(ch)-1].last >= addr })
	if c == len(cs) {
		return pos{c, 0}
	}
	ch := cs[c]
	return pos{c, sort.Search(len(ch), func(k int) bool { return ch[k].last >= addr })}
}

// at returns the region at p, nil at the end.
func (t *regionTable) at(p pos) *region {
	if p.c >= len(t.chunks) {
		return nil
	}
	return t.chunks[p.c][p.i]
}

// next returns the position after p, which must not be the end.
func (t *regionTable) next(p pos) pos {
	p.i++
	if p.i == len(t.chunks[p.c]) {
		p.c, p.i = p.c+1, 0
	}
	return p
}

// insert puts r at p, before the region there (at the end: last).
func (t *regionTable) insert(p pos, r *region) {
	t.n++
	if len(t.chunks) == 0 {
		t.chunks = [][]*region{{r}}
		return
	}
	if p.c == len(t.chunks) {
		p.c--
		p.i = len(t.chunks[p.c])
	}
	ch := slices.Insert(t.chunks[p.c], p.i, r)
	if len(ch) <= chunkMax {
		t.chunks[p.c] = ch
		return
	}
	half := len(ch) / 2
	hi := slices.Clone(ch[half:])
	clear(ch[half:]) // the pointers now live in hi only
	t.chunks[p.c] = ch[:half]
	t.chunks = slices.Insert(t.chunks, p.c+1, hi)
}

// deleteN removes the k regions from p on.
func (t *regionTable) deleteN(p pos, k int) {
	t.n -= k
	for k > 0 {
		ch := t.chunks[p.c]
		m := min(k, len(ch)-p.i)
		ch = slices.Delete(ch, p.i, p.i+m)
		k -= m
		switch {
		case len(ch) == 0:
			t.chunks = slices.Delete(t.chunks, p.c, p.c+1)
		case p.i == len(ch):
			t.chunks[p.c] = ch
			p.c, p.i = p.c+1, 0
		default:
			t.chunks[p.c] = ch
		}
	}
}

// all yields every region in IOVA order.
func (t *regionTable) all() iter.Seq[*region] {
	return func(yield func(*region) bool) {
		for _, ch := range t.chunks {
			for _, r := range ch {
				if !yield(r) {
					return
				}
			}
		}
	}
}

// reset empties the table.
func (t *regionTable) reset() { *t = regionTable{} }
