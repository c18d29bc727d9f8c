package vfiouser_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// testServer is a running server with a fake function.
type testServer struct {
	*vfiouser.Server
	Path string
	Fake *vfiouser.FakeFunction
	Log  *logtest.Hook
}

// socketDir returns a short-lived directory with a short path (sun_path
// holds 107 bytes; t.TempDir paths can be longer).
func socketDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "vu")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testLogger() (*logrus.Entry, *logtest.Hook) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return l.WithFields(logrus.Fields{"component": "vfiouser", "device": "fake"}), hook
}

// newFake returns a FakeFunction closed when the test ends.
func newFake(tb testing.TB) *vfiouser.FakeFunction {
	tb.Helper()
	fake, err := vfiouser.NewFakeFunction()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(fake.Close)
	return fake
}

// startServer listens on a fresh socket and serves a new FakeFunction
// until the test ends.
func startServer(tb testing.TB, name string) *testServer {
	tb.Helper()
	fake := newFake(tb)
	return startServerWith(tb, name, fake, 0)
}

func startServerWith(tb testing.TB, name string, fake *vfiouser.FakeFunction, maxXfer int) *testServer {
	tb.Helper()
	log, hook := testLogger()
	path := filepath.Join(socketDir(tb), name+".sock")
	s, err := vfiouser.Listen(vfiouser.Config{Path: path, Function: fake, Log: log, MaxDataXfer: maxXfer})
	if err != nil {
		tb.Fatal(err)
	}
	vfiousertest.Serve(tb, s)
	return &testServer{Server: s, Path: path, Fake: fake, Log: hook}
}

// newMappedRAM makes size bytes of guest RAM and maps them at iova with
// mapRAM: a client's MapRAM (shared memory) or MapRAMNoFD (message DMA).
func newMappedRAM(tb testing.TB, mapRAM func(*dmatest.RAM, uint64) error, size int, iova uint64) *dmatest.RAM {
	tb.Helper()
	ram := dmatest.NewRAM(tb, size)
	if err := mapRAM(ram, iova); err != nil {
		tb.Fatal(err)
	}
	return ram
}

// quietLog logs nothing, for servers whose logs no test reads.
var quietLog, _ = testLogger()

// listenQuiet listens at path for fake, logging nothing.
func listenQuiet(tb testing.TB, path string, fake *vfiouser.FakeFunction) *vfiouser.Server {
	tb.Helper()
	s, err := vfiouser.Listen(vfiouser.Config{Path: path, Function: fake, Log: quietLog})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// startNegotiated starts a server on a fake function and connects a
// negotiated client to it.
func startNegotiated(tb testing.TB, name string) (*testServer, *vfiousertest.Client) {
	tb.Helper()
	s := startServer(tb, name)
	return s, negotiated(tb, s.Path)
}

// dial and negotiated connect a client that must see no protocol
// violation by the end of the test.
var (
	dial       = vfiousertest.Connect
	negotiated = vfiousertest.Negotiated
)

// waitFor polls cond until it holds or 5 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	tb.Fatalf("timed out waiting for %s", what)
}

// hasLog reports whether a log entry at level with message msg was seen.
func hasLog(h *logtest.Hook, level logrus.Level, msg string) bool {
	for _, e := range h.AllEntries() {
		if e.Level == level && e.Message == msg {
			return true
		}
	}
	return false
}
