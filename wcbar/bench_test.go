package wcbar

import (
	"fmt"
	"testing"
)

// BenchmarkAccess compares ReadAt/WriteAt (aligned atomic words, under the
// window's read lock) with a plain copy of the same bytes, in the same run.
func BenchmarkAccess(b *testing.B) {
	w, err := New("bench", 1<<20, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	buf := make([]byte, 64<<10)
	for _, size := range []int{4, 64, 4096, 64 << 10} {
		p := buf[:size]
		b.Run(fmt.Sprintf("size=%d/dir=read/impl=copy", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(p, w.mem[0x100:])
			}
		})
		b.Run(fmt.Sprintf("size=%d/dir=read/impl=wcbar", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				w.ReadAt(p, 0x100)
			}
		})
		b.Run(fmt.Sprintf("size=%d/dir=write/impl=copy", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(w.mem[0x100:], p)
			}
		})
		b.Run(fmt.Sprintf("size=%d/dir=write/impl=wcbar", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				w.WriteAt(p, 0x100)
			}
		})
	}
	b.Run("Load32", func(b *testing.B) {
		for b.Loop() {
			w.Load32(0x100)
		}
	})
}
