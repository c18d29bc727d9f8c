package vfiouser_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// startLimited serves a fake function with cfg's limits.
func startLimited(t *testing.T, name string, l dma.Limits) *testServer {
	t.Helper()
	fake, err := vfiouser.NewFakeFunction()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	log, hook := testLogger()
	path := filepath.Join(socketDir(t), name+".sock")
	s, err := vfiouser.Listen(vfiouser.Config{Path: path, Function: fake, Log: log, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, vfiouser.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		cancel()
	})
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

// Out-of-range max_dma_maps is a Listen error, not a VERSION QEMU rejects.
func TestListenRejectsMaxMaps(t *testing.T) {
	fake, err := vfiouser.NewFakeFunction()
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	path := filepath.Join(socketDir(t), "x.sock")
	if _, err := vfiouser.Listen(vfiouser.Config{Path: path, Function: fake, Limits: dma.Limits{MaxMaps: 65536}}); err == nil {
		t.Fatal("Listen accepted MaxMaps 65536")
	}
}
