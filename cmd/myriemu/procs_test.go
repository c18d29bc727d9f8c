package main

import "testing"

func TestServeProcs(t *testing.T) {
	for _, c := range []struct{ cores, devices, want int }{
		{2, 0, 2}, {2, 2, 6}, {8, 1, 10},
	} {
		if got := serveProcs(c.cores, c.devices); got != c.want {
			t.Errorf("serveProcs(%d cores, %d devices) = %d, want %d", c.cores, c.devices, got, c.want)
		}
	}
}
