package main

import (
	"os"
	"testing"
)

// TestProcessCounters: the gauges are there and the fd gauge follows an
// open and a close.
func TestProcessCounters(t *testing.T) {
	before := processCounters()
	for _, k := range []string{"goroutines", "fds", "threads"} {
		if n, ok := before[k].(int); !ok || n <= 0 {
			t.Fatalf("processCounters()[%q] = %v, want a positive count", k, before[k])
		}
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	opened := processCounters()["fds"].(int)
	f.Close()
	closed := processCounters()["fds"].(int)
	if opened != before["fds"].(int)+1 || closed != before["fds"].(int) {
		t.Errorf("fds: %d before, %d with one more file open, %d after closing it", before["fds"], opened, closed)
	}
}
