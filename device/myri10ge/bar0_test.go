package myri10ge

import (
	"testing"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// Every store into BAR0 is either owned by a row of the BAR0 map or
// counted as unclaimed; stores into plain memory and the first stores of
// a mailbox block are owned and have no side effect.
func TestBAR0UnclaimedWrites(t *testing.T) {
	r := newRig(t, 1)
	tests := []struct {
		name      string
		off       uint64
		len       int
		unclaimed bool
	}{
		{"firmware staging", offFWStaging, 8, false},
		{"LED pattern in the header", offHeader + abi.HdrOffLEDPattern, 4, false},
		{"mailbox, not its last qword", abi.OffCmd, 8, false},
		{"send ring of slice 0", sendRingOff(0), 8, false},
		{"send ring of an absent slice", sendRingOff(1), 8, true},
		{"big ring of an absent slice", bigRingOff(3), 4, true},
		{"between the send and receive rings", sendRingBase + MaxSlices*sendRingStride, 4, true},
		{"SEND_STOP of slice 0", offSendStop, 4, false},
		{"claim word 1 of an absent slice", irqAckBase + irqAckStride + 4, 4, true},
		{"between deassert and coalescing", irqDeassertOff + 4, 4, true},
		{"RSS table", rssTableOff + 3, 1, false},
		{"past the dummy RDMA block", abi.OffDummyRDMA + abi.BlockSize, 8, true},
		{"last byte of BAR0", abi.BAR0Size - 1, 1, true},
	}
	for _, tt := range tests {
		before := r.nic.Stats().UnclaimedWrites
		r.write(tt.off, make([]byte, tt.len))
		got := r.nic.Stats().UnclaimedWrites - before
		if want := map[bool]uint64{false: 0, true: 1}[tt.unclaimed]; got != want {
			t.Errorf("%s: %d@%#x counted %d unclaimed, want %d", tt.name, tt.len, tt.off, got, want)
		}
	}
}

// The map is in address order, its rows do not overlap, and every row
// lies inside BAR0.
func TestBAR0MapOrdered(t *testing.T) {
	end := uint64(0)
	for _, tr := range bar0Triggers {
		if tr.base < end {
			t.Errorf("%s at %#x overlaps the row before (ends %#x)", tr.name, tr.base, end)
		}
		end = tr.base + uint64(tr.count)*tr.stride
		if end > abi.BAR0Size {
			t.Errorf("%s ends at %#x, past BAR0", tr.name, end)
		}
		if tr.fire != fireAny && (tr.fire < 0 || uint64(tr.fire) >= tr.stride) {
			t.Errorf("%s fires at %d, outside its %d-byte instance", tr.name, tr.fire, tr.stride)
		}
	}
}
