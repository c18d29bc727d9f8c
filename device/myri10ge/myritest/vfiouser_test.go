package myritest

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/testdev"
	tdabi "github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
)

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	return logrus.NewEntry(l)
}

// adapter is what the tests below need of VFIOUser and Function.
type adapter interface {
	Bus
	Interrupts
}

// exerciseAdapter drives testdev through an adapter: BAR0 stores and
// loads, config space, MSI-X delivery per vector, and DMA into the
// adapter's Memory.
func exerciseAdapter(t *testing.T, a adapter, mem *Memory) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	le := binary.LittleEndian
	put := func(reg uint64, v uint32) {
		t.Helper()
		var b [4]byte
		le.PutUint32(b[:], v)
		if err := a.WriteBAR0(reg, b[:]); err != nil {
			t.Fatalf("store %#x: %v", reg, err)
		}
	}
	get := func(reg uint64) uint32 {
		t.Helper()
		var b [4]byte
		if err := a.ReadBAR0(reg, b[:]); err != nil {
			t.Fatalf("load %#x: %v", reg, err)
		}
		return le.Uint32(b[:])
	}

	var id [4]byte
	if err := a.ReadConfig(0, id[:]); err != nil || le.Uint32(id[:]) != tdabi.DeviceID<<16|tdabi.VendorID {
		t.Fatalf("config id % x, %v", id, err)
	}
	put(tdabi.RegScratch, 0x5eed1234)
	if got := get(tdabi.RegScratch); got != 0x5eed1234 {
		t.Errorf("scratch %#x after a store of 0x5eed1234", got)
	}

	if err := a.Enable(ModeMSIX, tdabi.NumVectors); err != nil {
		t.Fatal(err)
	}
	for v := tdabi.NumVectors - 1; v >= 0; v-- {
		put(tdabi.RegIRQRaise, uint32(v))
		if err := a.Wait(ctx, v); err != nil {
			t.Fatalf("vector %d: %v", v, err)
		}
	}
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	if err := a.Wait(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with nothing raised: %v, want a deadline", err)
	}
	stop()
	if err := a.Disable(); err != nil {
		t.Fatal(err)
	}

	// Bus mastering on, then a DMA fill of guest memory.
	var cmd [2]byte
	if err := a.ReadConfig(pciCommand, cmd[:]); err != nil {
		t.Fatal(err)
	}
	le.PutUint16(cmd[:], le.Uint16(cmd[:])|pciCommandMemory|pciCommandMaster)
	if err := a.WriteConfig(pciCommand, cmd[:]); err != nil {
		t.Fatal(err)
	}
	buf, err := mem.Alloc(64, 64)
	if err != nil {
		t.Fatal(err)
	}
	put(tdabi.RegDMADstLo, uint32(buf))
	put(tdabi.RegDMADstHi, uint32(buf>>32))
	put(tdabi.RegDMALen, 64)
	put(tdabi.RegDMAOp, uint32(tdabi.OpFill))
	put(tdabi.RegDMAPattern, 0x44332211)
	put(tdabi.RegDMADoorbell, 1)
	deadline := time.Now().Add(5 * time.Second)
	for get(tdabi.RegDMAStatus)&tdabi.StatusDone == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if b := mem.mustBytes(buf, 8); binary.LittleEndian.Uint64(b) != 0x4433221144332211 {
		t.Errorf("guest memory after the fill: % x", b)
	}
}

// testdevFunction is a testdev behind a pci.Function, closed when the
// test ends: a device the adapters can be checked against without QEMU.
func testdevFunction(t *testing.T, name string) *pci.Function {
	t.Helper()
	log := quietLog()
	dev, err := testdev.New(name, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	f, err := pci.NewFunction(dev, log)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestVFIOUserAdapter(t *testing.T) {
	leaktest.Check(t)
	f := testdevFunction(t, "td0")
	srv, err := vfiouser.Listen(vfiouser.Config{Path: filepath.Join(t.TempDir(), "td.sock"), Function: f, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	vfiousertest.Serve(t, srv)
	c := vfiousertest.Negotiated(t, srv.Path())
	mem, err := NewVFIOUserMemory(t, c, 1<<20, testBase)
	if err != nil {
		t.Fatal(err)
	}
	a := NewVFIOUser(t, c)
	exerciseAdapter(t, a, mem)
	if err := a.Flush(); err != nil {
		t.Errorf("Flush: %v", err)
	}
}

func TestFunctionAdapter(t *testing.T) {
	leaktest.Check(t)
	f := testdevFunction(t, "td1")
	mem, err := AttachRAM(t, f, 1<<20, testBase)
	if err != nil {
		t.Fatal(err)
	}
	exerciseAdapter(t, NewFunction(t, f), mem)
}
