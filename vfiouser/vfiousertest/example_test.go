package vfiousertest_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
)

// doorbellDevice is a device a user might test: BAR0 offset 0 is a
// doorbell; writing a guest address there makes the device write the word
// 0xc0ffee there by DMA (from a worker, as real devices do) and raise
// MSI-X vector 0.
type doorbellDevice struct {
	mu   sync.Mutex
	host pci.Host
	kick chan uint64
	done chan struct{}
	wg   sync.WaitGroup
}

func (d *doorbellDevice) Spec() pci.Spec {
	return pci.Spec{
		VendorID: 0x1234, DeviceID: 0x7e57, Class: 0x00ff00,
		BARs: [6]pci.BAR{0: {Size: 4096}, 2: {Size: 4096}},
		PCIe: &pci.PCIeCap{MaxPayload: 256, LinkWidth: 1, LinkSpeed: 1},
		MSIX: &pci.MSIXCap{Vectors: 1, TableBAR: 2, PBABAR: 2, PBAOffset: 0x800},
	}
}

func (d *doorbellDevice) ReadBAR(bar int, off uint64, p []byte) error { clear(p); return nil }

func (d *doorbellDevice) WriteBAR(bar int, off uint64, p []byte) error {
	if bar == 0 && off == 0 && len(p) == 8 {
		d.kick <- binary.LittleEndian.Uint64(p)
	}
	return nil
}

func (d *doorbellDevice) Attach(h pci.Host) error {
	d.host, d.kick, d.done = h, make(chan uint64, 16), make(chan struct{})
	d.wg.Add(1)
	go d.runEngine()
	return nil
}

func (d *doorbellDevice) runEngine() {
	defer d.wg.Done()
	for {
		select {
		case <-d.done:
			return
		case addr := <-d.kick:
			var w [4]byte
			binary.LittleEndian.PutUint32(w[:], 0xc0ffee)
			if _, err := d.host.Mem.WriteAt(w[:], addr); err == nil {
				d.host.IRQ.Raise(0)
			}
		}
	}
}

func (d *doorbellDevice) Detach() { close(d.done); d.wg.Wait() }
func (d *doorbellDevice) Reset()  {}

// TestDeviceTestExample shows how a device model's own test drives it
// through the real protocol server with the fake-QEMU client.
func TestDeviceTestExample(t *testing.T) {
	// 1. The function and its server, on a short socket path.
	fn, err := pci.NewFunction(&doorbellDevice{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vut")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := vfiouser.Listen(vfiouser.Config{Path: filepath.Join(dir, "dev.sock"), Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	defer func() {
		srv.Close()
		if err := <-served; !errors.Is(err, vfiouser.ErrServerClosed) {
			t.Error(err)
		}
	}()

	// 2. Connect like QEMU: negotiate, share guest RAM.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := vfiousertest.Dial(ctx, srv.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil { // every protocol violation seen
			t.Error(err)
		}
	}()
	if err := c.Negotiate(); err != nil {
		t.Fatal(err)
	}
	ram := dmatest.NewRAM(t, 1<<20)
	if err := c.MapRAM(ram, 0); err != nil {
		t.Fatal(err)
	}

	// 3. Play the guest driver: bus master on, MSI-X vector 0 wired.
	if err := c.WriteConfig(4, []byte{0x06, 0x00}); err != nil {
		t.Fatal(err)
	}
	evs, err := c.EnableMSIX(t, 1)
	if err != nil {
		t.Fatal(err)
	}

	// 4. Ring the doorbell with a posted BAR write, wait for the interrupt,
	// check guest memory.
	var addr [8]byte
	binary.LittleEndian.PutUint64(addr[:], 0x2000)
	if err := c.WriteRegionPosted(0, 0, addr[:]); err != nil {
		t.Fatal(err)
	}
	if err := evs[0].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(ram.Bytes()[0x2000:]); got != 0xc0ffee {
		t.Errorf("guest word %#x, want 0xc0ffee", got)
	}
}
