package abi

import "testing"

// The names are part of the log and error text users grep for; a value
// without one prints as Type(n).
func TestNames(t *testing.T) {
	for v, want := range []string{"Op(0)", "copy", "fill", "checksum", "window-to-guest", "guest-to-window", "Op(6)"} {
		if got := Op(v).String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", v, got, want)
		}
	}
	if got := Op(0xffffffff).String(); got != "Op(4294967295)" {
		t.Errorf("Op(0xffffffff).String() = %q", got)
	}
	for v, want := range []string{"none", "bad-op", "bad-length", "window-range", "bus-master-off",
		"unmapped", "read-only", "not-registered", "dma-failed", "not-readable", "Cause(10)"} {
		if got := Cause(v).String(); got != want {
			t.Errorf("Cause(%d).String() = %q, want %q", v, got, want)
		}
	}
	if got := Cause(255).String(); got != "Cause(255)" {
		t.Errorf("Cause(255).String() = %q", got)
	}
}

// The status bits are the guest's ABI: bit 0 busy up to bit 4 overrun
// (DMA_STATUS in device/testdev/README.md), whatever order the declarations
// are in.
func TestStatusBits(t *testing.T) {
	bits := []struct {
		name string
		got  uint32
	}{
		{"StatusBusy", StatusBusy}, {"StatusDone", StatusDone}, {"StatusError", StatusError},
		{"StatusFaultWrite", StatusFaultWrite}, {"StatusOverrun", StatusOverrun},
	}
	for bit, b := range bits {
		if b.got != 1<<bit {
			t.Errorf("%s = %#x, want bit %d (%#x)", b.name, b.got, bit, 1<<bit)
		}
	}
	if StatusCauseMask != 0xff00 {
		t.Errorf("StatusCauseMask = %#x, want 0xff00 (bits 15:8)", StatusCauseMask)
	}
}
