package vfiouser_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// startLimited serves a fake function with l's limits.
func startLimited(t *testing.T, name string, l dma.Limits) *testServer {
	t.Helper()
	return startConfig(t, name, vfiouser.Config{Limits: l})
}

// startConfig serves a fake function with cfg (Path, Function and Log
// filled in).
func startConfig(t *testing.T, name string, cfg vfiouser.Config) *testServer {
	t.Helper()
	fake := newFake(t)
	log, hook := testLogger()
	path := filepath.Join(socketDir(t), name+".sock")
	cfg.Path, cfg.Function, cfg.Log = path, fake, log
	s, err := vfiouser.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vfiousertest.Serve(t, s)
	return &testServer{Server: s, Path: path, Fake: fake, Log: hook}
}

// The server advertises its max_dma_maps and holds the client to it with
// ENOSPC; the client keeps working and can map again after an unmap.
func TestMaxDMAMapsEnforced(t *testing.T) {
	s := startLimited(t, "maxmaps", dma.Limits{MaxMaps: 8})
	c := negotiated(t, s.Path)
	if got := c.Caps().MaxDMAMaps; got != 8 {
		t.Fatalf("advertised max_dma_maps %d, want 8", got)
	}
	ram := dmatest.NewRAM(t, 0x10000)
	for i := range 8 {
		if err := c.MapFD(uint64(i)<<20, 0x1000, uint64(i)*0x1000, ram.Fd(), vfiouser.DMAMapRead|vfiouser.DMAMapWrite); err != nil {
			t.Fatalf("map %d: %v", i, err)
		}
	}
	err := c.MapFD(8<<20, 0x1000, 0, ram.Fd(), vfiouser.DMAMapRead|vfiouser.DMAMapWrite)
	if !vfiousertest.IsErrno(err, unix.ENOSPC) {
		t.Fatalf("map past max_dma_maps: %v, want ENOSPC", err)
	}
	if _, err := c.ReadConfig(0, 64); err != nil {
		t.Fatalf("client after the refusal: %v", err)
	}
	if err := c.Unmap(0, 0x1000); err != nil {
		t.Fatal(err)
	}
	if err := c.MapFD(8<<20, 0x1000, 0, ram.Fd(), vfiouser.DMAMapRead|vfiouser.DMAMapWrite); err != nil {
		t.Fatalf("map after an unmap: %v", err)
	}
	if st := s.Stats(); st.LimitRefusals != 1 {
		t.Errorf("LimitRefusals %d, want 1", st.LimitRefusals)
	}
}

// max_dma_maps above what QEMU accepts is advertised (and enforced) as
// 65535: a larger value would make QEMU refuse the device.
func TestMaxDMAMapsClamped(t *testing.T) {
	s := startLimited(t, "clamp", dma.Limits{MaxMaps: 1 << 20})
	c := negotiated(t, s.Path)
	if got := c.Caps().MaxDMAMaps; got != 65535 {
		t.Errorf("advertised max_dma_maps %d, want 65535", got)
	}
}

// The server's own DMA requests awaiting a client that does not answer
// are bounded: past MaxPendingDMA the device's DMA fails ENOBUFS at once,
// and the waiting ones complete when the client answers.
func TestMaxPendingDMA(t *testing.T) {
	leaktest.Check(t)
	s := startConfig(t, "pending", vfiouser.Config{MaxPendingDMA: 2})
	vfiouser.SetDMATimeout(s.Server, 20*time.Second)
	r := messageDMARaw(t, s.Path)
	done := make(chan error, 2)
	for range 2 {
		go func() { _, err := s.Fake.Mem().ReadAt(make([]byte, 4), 0); done <- err }()
	}
	reqs := []vfiouser.Header{r.recv(t), r.recv(t)}
	if _, err := s.Fake.Mem().ReadAt(make([]byte, 4), 0); !errors.Is(err, unix.ENOBUFS) {
		t.Errorf("third DMA with two awaiting the client: %v, want ENOBUFS", err)
	}
	for _, req := range reqs {
		reply := make([]byte, 36)
		vfiouser.Header{ID: req.ID, Command: vfiouser.CmdDMARead, Size: 36, Flags: vfiouser.FlagTypeReply}.Put(reply)
		le.PutUint64(reply[24:], 4)
		r.send(t, reply)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("answered DMA: %v", err)
		}
	}
}
