package pci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/myriemu/myriemu/dma"
	"golang.org/x/sys/unix"
)

// configOp is one decoded fuzz operation: a config write, or a read that
// must agree with the whole-space read.
type configOp struct {
	read bool
	off  uint64
	p    []byte
}

// decodeConfigOps turns fuzz bytes into config accesses: per op 2 bytes
// offset (little-endian, modulo 4096+16 so some fall outside), 1 byte
// length code (bit 6: read; bit 7: long, (code&0x3f)*64+1 bytes, else
// code&7+1), then the data (padded with 0xff when the input runs out).
func decodeConfigOps(data []byte) []configOp {
	var ops []configOp
	for len(data) >= 3 && len(ops) < 256 {
		off := uint64(binary.LittleEndian.Uint16(data)) % (configSizePCIe + 16)
		code := data[2]
		data = data[3:]
		n := int(code&7) + 1
		if code&0x80 != 0 {
			n = int(code&0x3f)*64 + 1
		}
		op := configOp{read: code&0x40 != 0, off: off, p: make([]byte, n)}
		if !op.read {
			k := copy(op.p, data)
			data = data[k:]
			for i := k; i < n; i++ {
				op.p[i] = 0xff
			}
		}
		ops = append(ops, op)
	}
	return ops
}

// FuzzConfigWrite applies random config accesses to a function with every
// feature and checks, after each, the invariants a client relies on:
// no panic, read-only fields and BAR type bits unchanged, ROM reads 0,
// the capability chain well formed, RW1C status bits never set by a
// write, bus mastering following COMMAND.MASTER, out-of-range accesses
// refused without effect, and reads agreeing with the whole-space read.
func FuzzConfigWrite(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		fn, _ := newTestFunction(t, fullSpec())
		mem := dma.NewMap(testLog())
		defer mem.Close()
		if err := fn.Attach(mem); err != nil {
			t.Fatal(err)
		}
		defer fn.Detach()
		init := cfgRead(t, fn, 0, configSizePCIe)
		prev := init
		for i, op := range decodeConfigOps(data) {
			inRange := op.off+uint64(len(op.p)) <= configSizePCIe
			var err error
			if op.read {
				err = fn.ReadRegion(RegionConfig, op.off, op.p)
			} else {
				err = fn.WriteRegion(RegionConfig, op.off, op.p)
			}
			switch {
			case inRange && err != nil:
				t.Fatalf("op %d: %d@%#x: %v", i, len(op.p), op.off, err)
			case !inRange && !errors.Is(err, unix.EINVAL):
				t.Fatalf("op %d: %d@%#x outside config space: %v, want EINVAL", i, len(op.p), op.off, err)
			}
			now := cfgRead(t, fn, 0, configSizePCIe)
			if !inRange && !bytes.Equal(now, prev) {
				t.Fatalf("op %d: refused access %d@%#x changed config space", i, len(op.p), op.off)
			}
			if op.read && inRange && !bytes.Equal(op.p, now[op.off:op.off+uint64(len(op.p))]) {
				t.Fatalf("op %d: read %d@%#x disagrees with the whole-space read", i, len(op.p), op.off)
			}
			checkInvariants(t, fn, mem, init, now)
			prev = now
		}
		fn.Reset()
		if got := cfgRead(t, fn, 0, configSizePCIe); !bytes.Equal(got, init) {
			t.Fatalf("config space after Reset differs from power-on")
		}
		if busMaster(t, mem) {
			t.Fatalf("bus master on after Reset")
		}
	})
}

// checkInvariants checks now (a whole config read) against the power-on
// image init, from the PCI spec's point of view rather than the masks'.
func checkInvariants(t *testing.T, fn *Function, mem *dma.Map, init, now []byte) {
	t.Helper()
	lay := fn.lay
	same := func(name string, off, n int) {
		t.Helper()
		if !bytes.Equal(init[off:off+n], now[off:off+n]) {
			t.Fatalf("read-only %s at %#x changed: % x -> % x", name, off, init[off:off+n], now[off:off+n])
		}
	}
	same("vendor/device ID", 0x00, 4)
	same("revision/programming interface", 0x08, 2)
	same("class", 0x0a, 2)
	same("header type/BIST", 0x0e, 2)
	same("subsystem", 0x2c, 4)
	same("ROM BAR", regROM, 4)
	same("capability pointer and reserved", regCapPtr, 8)
	same("interrupt pin", regInterruptPin, 3)
	same("extended space", extStart, configSizePCIe-extStart)
	for i := range 6 {
		if s := fn.spec.BARs[i]; s.Size != 0 {
			bits := byte(0xf)
			if s.Flags&BARIO != 0 {
				bits = 3
			}
			if init[regBAR0+4*i]&bits != now[regBAR0+4*i]&bits {
				t.Fatalf("BAR%d type bits changed: %#x -> %#x", i, init[regBAR0+4*i], now[regBAR0+4*i])
			}
		}
	}
	// Address bits below a BAR's size read 0.
	if low := le32get(now, 0x18) &^ 0xf; low&0x1fff != 0 {
		t.Fatalf("BAR2 (8 KiB) has address bits below its size: %#x", low)
	}
	if st := le16get(now, regStatus); st&^(statusCapList|statusInterrupt) != 0 || st&statusCapList == 0 {
		t.Fatalf("status %#x: RW1C bits set by a write or CAP_LIST lost", st)
	}
	// Capability chain and capability headers.
	walk := []int{}
	for p := int(now[regCapPtr]); p != 0; p = int(now[p+1]) {
		if p&3 != 0 || p < capStart || p > 0xfc || len(walk) > 48 {
			t.Fatalf("capability chain broken at %#x", p)
		}
		walk = append(walk, p)
	}
	want := []int{lay.pm, lay.msi, lay.vendor, lay.pcie, lay.msix}
	if !slices.Equal(walk, want) {
		t.Fatalf("capability chain %x, want %x", walk, want)
	}
	for _, at := range want {
		same("capability header", at, 2)
	}
	same("PM capabilities", lay.pm+pmPMC, 2)
	if init[lay.msi+msiControl]&0x8e != now[lay.msi+msiControl]&0x8e || init[lay.msi+msiControl+1] != now[lay.msi+msiControl+1] {
		t.Fatalf("MSI control read-only bits changed")
	}
	same("vendor length", lay.vendor+vendorLength, 1)
	same("PCIe capabilities/DEVCAP", lay.pcie+pcieFlags, 6)
	same("PCIe LNKCAP", lay.pcie+pcieLnkCap, 4)
	same("PCIe LNKSTA", lay.pcie+pcieLnkSta, 2)
	same("PCIe LNKCAP2", lay.pcie+pcieLnkCap2, 4)
	if le16get(init, lay.msix+msixControl)&0x7ff != le16get(now, lay.msix+msixControl)&0x7ff {
		t.Fatalf("MSI-X table size changed")
	}
	same("MSI-X table/PBA registers", lay.msix+msixTableReg, 8)
	if pm := now[lay.pm+pmPMCSR] & pmStateMask; pm == 1 || pm == 2 {
		t.Fatalf("unsupported power state D%d stored", pm)
	}
	if on, want := busMaster(t, mem), le16get(now, regCommand)&cmdMaster != 0; on != want {
		t.Fatalf("bus master %v, COMMAND.MASTER %v", on, want)
	}
}
