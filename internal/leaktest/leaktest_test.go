package leaktest

import (
	"strings"
	"testing"
	"time"
)

func TestLeakedFindsAndForgets(t *testing.T) {
	before := goroutines()
	stop := make(chan struct{})
	go parkedForTest(stop)
	extra := leaked(before, 50*time.Millisecond)
	if len(extra) != 1 || !strings.Contains(extra[0], "parkedForTest") {
		t.Fatalf("leaked = %q, want the parked goroutine", extra)
	}
	close(stop)
	if extra := leaked(before, 5*time.Second); len(extra) != 0 {
		t.Fatalf("leaked after it ended = %q", extra)
	}
}

func parkedForTest(stop chan struct{}) { <-stop }
