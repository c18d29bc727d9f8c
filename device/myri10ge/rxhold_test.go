package myri10ge

import "testing"

// TestRxHoldLimits: the FIFO takes frames until either limit, the frame
// count or the bytes, and a warmed-up FIFO copies frames in without
// allocating.
func TestRxHoldLimits(t *testing.T) {
	var h rxHold
	jumbo := make([]byte, 9018)
	n := 0
	for h.push(jumbo) {
		n++
	}
	if want := rxHoldBytes / len(jumbo); n != want {
		t.Errorf("%d jumbo frames held, want %d (the byte limit)", n, want)
	}
	if got := h.discard(); got != n || !h.empty() {
		t.Errorf("discard returned %d, want %d", got, n)
	}
	small := make([]byte, 60)
	for n = 0; h.push(small); n++ {
	}
	if n != rxHoldFrames {
		t.Errorf("%d small frames held, want %d (the frame limit)", n, rxHoldFrames)
	}
	h.pop()
	if !h.push(jumbo) || h.push(small) {
		t.Errorf("after one pop: want room for exactly one frame")
	}
	h.discard()
	for range rxHoldFrames { // every slot once, so each has its array
		h.push(jumbo)
		h.pop()
	}
	if a := testing.AllocsPerRun(100, func() { h.push(jumbo); h.pop() }); a != 0 {
		t.Errorf("%v allocations per frame through a warmed-up FIFO", a)
	}
}
