package vfiouser_test

import (
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/ratelog"
	"github.com/sirupsen/logrus"
)

// TestWarningsSurviveReconnects: a client that reconnects in a loop, with
// one protocol error per connection, gets the server's one budget of
// warnings, not a fresh one per connection; every error is still counted.
func TestWarningsSurviveReconnects(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "loop")
	const conns = 5 * ratelog.Burst
	start := time.Now()
	for range conns {
		c := negotiated(t, s.Path)
		if err := c.ReadRegion(7, 0, nil); err == nil { // count 0: EINVAL
			t.Fatal("a zero-length region read succeeded")
		}
		if err := c.Close(); err != nil {
			t.Fatalf("client saw protocol violations: %v", err)
		}
	}
	waitFor(t, "the last client to leave", func() bool { return s.Stats().Clients == conns })
	// The budget refills one line per Interval: a slow machine may earn more.
	budget := ratelog.Burst + int(time.Since(start)/ratelog.Interval)
	warns := 0
	for _, e := range s.Log.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Message == "client protocol error" {
			warns++
		}
	}
	if warns < ratelog.Burst || warns > budget {
		t.Errorf("%d warnings for %d connections with one protocol error each, want %d..%d (one budget per server)",
			warns, conns, ratelog.Burst, budget)
	}
	if n := s.Stats().ProtocolErrors; n != conns {
		t.Errorf("ProtocolErrors %d, want %d: every error counted, only the log is limited", n, conns)
	}
}
