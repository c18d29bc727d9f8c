package myri10ge

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
)

// Exports for the transmit engine's external tests (send_test.go and
// tso_test.go, package myri10ge_test). Those use the driver-side encoder in
// myritest, a harness package that may import this one, so they cannot be
// internal tests.

// SendEngine wraps a sender.
type SendEngine struct{ s *sender }

func NewSendEngine() *SendEngine { return &SendEngine{newSender()} }

func (e *SendEngine) Take(ring []byte, idx uint32, mem dma.Space) (int, [][]byte, error) {
	return e.s.take(ring, idx, mem)
}

var (
	SendOnesSum      = onesSum
	SendChecksumFold = checksumFold

	SendErrRing          = errSendRing
	SendErrNotFirst      = errSendNotFirst
	SendErrNotPosted     = errSendNotPosted
	SendErrTooManyDescs  = errSendTooManyDescs
	SendErrLength        = errSendLength
	SendErrCksumOffset   = errSendCksumOffset
	SendErrTSOMSS        = errTSOMSS
	SendErrTSONoPayload  = errTSONoPayload
	SendErrTSONoLast     = errTSONoLast
	SendErrTSOHeader     = errTSOHeader
	SendErrTSOSegTooLong = errTSOSegmentTooLong
	SendErrTSOTooMany    = errTSOTooManySegments
)

const (
	SendMaxSendDesc    = abi.MaxSendDesc
	SendMaxSendDescTSO = abi.MaxSendDescTSO
	SendMaxTSOBytes    = maxTSOBytes
)

// naiveSum is RFC 1071 as written: 16-bit big-endian words, an odd last
// byte padded with zero, end-around carry after every addition.
func naiveSum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		s = s&0xFFFF + s>>16
	}
	return uint16(s)
}

func TestOnesSumRFC1071Example(t *testing.T) {
	// RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := checksumFold(onesSum(b, 0)); got != 0xddf2 {
		t.Errorf("sum = %#04x, want 0xddf2", got)
	}
}

func TestOnesSumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fills := []struct {
		name string
		fill func([]byte)
	}{
		{"zero", func(b []byte) { clear(b) }},
		{"ones", func(b []byte) {
			for i := range b {
				b[i] = 0xFF
			}
		}},
		{"random", func(b []byte) {
			for i := range b {
				b[i] = byte(r.Uint32())
			}
		}},
		{"ffff-multiple", func(b []byte) {
			// Words that sum to a multiple of 0xFFFF: 0x8000 + 0x7FFF.
			for i := 0; i+1 < len(b); i += 2 {
				binary.BigEndian.PutUint16(b[i:], uint16(0x8000-i/2%2))
			}
		}},
	}
	for _, fl := range fills {
		t.Run(fl.name, func(t *testing.T) {
			for n := 0; n < 300; n++ {
				b := make([]byte, n)
				fl.fill(b)
				if got, want := checksumFold(onesSum(b, 0)), naiveSum(b); got != want {
					t.Fatalf("len %d: onesSum folds to %#04x, naive %#04x", n, got, want)
				}
				// Even-length pieces summed in turn give the same.
				cut := r.IntN(n+1) &^ 1
				if got, want := checksumFold(onesSum(b[cut:], onesSum(b[:cut], 0))), naiveSum(b); got != want {
					t.Fatalf("len %d cut %d: chained sum %#04x, naive %#04x", n, cut, got, want)
				}
			}
		})
	}
}

func TestOnesSumCarriesInitialSum(t *testing.T) {
	for _, init := range []uint32{0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x80000000} {
		b := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x12}
		// The initial sum behaves like extra words in front.
		var pre [4]byte
		binary.BigEndian.PutUint32(pre[:], init)
		want := naiveSum(append(pre[:], b...))
		if got := checksumFold(onesSum(b, init)); got != want {
			t.Errorf("init %#x: %#04x, want %#04x", init, got, want)
		}
	}
}

func TestChecksumFold(t *testing.T) {
	tests := []struct {
		in   uint32
		want uint16
	}{
		{0, 0}, {1, 1}, {0xFFFF, 0xFFFF}, {0x10000, 1}, {0x1FFFE, 0xFFFF},
		{0xFFFFFFFF, 0xFFFF}, {0x12345678, 0x68AC},
	}
	for _, tt := range tests {
		if got := checksumFold(tt.in); got != tt.want {
			t.Errorf("checksumFold(%#x) = %#04x, want %#04x", tt.in, got, tt.want)
		}
	}
}

func TestRxChecksum(t *testing.T) {
	frame := make([]byte, 64)
	for i := range frame {
		frame[i] = byte(i*7 + 3)
	}
	tests := []struct {
		name  string
		frame []byte
		want  uint16
	}{
		{"empty", nil, 0},
		{"runt", frame[:13], 0},
		{"header only", frame[:14], 0},
		{"odd length", frame[:15], naiveSum(frame[14:15])},
		{"full", frame, naiveSum(frame[14:])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, rxChecksum(tt.frame)); diff != "" {
				t.Errorf("rxChecksum (-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkOnesSum(b *testing.B) {
	for _, n := range []int{64, 1500, 65536} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i)
		}
		b.Run("size="+strconv.Itoa(n)+"/impl=naive", func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				naiveSum(buf)
			}
		})
		b.Run("size="+strconv.Itoa(n)+"/impl=onesSum", func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				onesSum(buf, 0)
			}
		})
	}
}
