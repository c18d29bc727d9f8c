package myri10ge

import (
	"encoding/binary"
	"testing"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
)

// byteSpace is guest memory over a slice, at IOVA 0.
type byteSpace []byte

func (m byteSpace) ReadAt(p []byte, addr uint64) (int, error) {
	if addr > uint64(len(m)) || uint64(len(p)) > uint64(len(m))-addr {
		return 0, &dma.Error{Op: dma.Read, Addr: addr, Len: len(p), Err: dma.ErrUnmapped}
	}
	return copy(p, m[addr:]), nil
}

func (m byteSpace) WriteAt(p []byte, addr uint64) (int, error) {
	if addr > uint64(len(m)) || uint64(len(p)) > uint64(len(m))-addr {
		return 0, &dma.Error{Op: dma.Write, Addr: addr, Len: len(p), Err: dma.ErrUnmapped}
	}
	return copy(m[addr:], p), nil
}

func (m byteSpace) Store32(addr uint64, v uint32) error {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	_, err := m.WriteAt(b[:], addr)
	return err
}

// TestOffloadChecksumZero: when the offloaded checksum computes to zero,
// TCP gets 0x0000 and UDP 0xFFFF (0 is "no checksum" only in UDP). The
// wire once carried TCP ACKs with 0xFFFF, which tshark counts as bad.
func TestOffloadChecksumZero(t *testing.T) {
	for _, tc := range []struct {
		name       string
		proto      byte
		csumOffset int // offset of the checksum in the L4 header
		want       uint16
	}{
		{"tcp", 6, 16, 0x0000},
		{"udp", 17, 6, 0xFFFF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const l3, l4, n = 14, 34, 80
			f := make([]byte, n)
			binary.BigEndian.PutUint16(f[12:], 0x0800)
			f[l3], f[l3+9] = 0x45, tc.proto
			for i := l4; i < n; i++ {
				f[i] = byte(i * 13)
			}
			pos := l4 + tc.csumOffset
			// The stack seeds the field with the pseudo-header sum; pick
			// the seed that makes the whole checksum come out as 0, i.e.
			// the ones'-complement sum of the segment 0xFFFF.
			binary.BigEndian.PutUint16(f[pos:], 0)
			rest := checksumFold(onesSum(f[l4:], 0))
			binary.BigEndian.PutUint16(f[pos:], ^rest)
			if got := ^checksumFold(onesSum(f[l4:], 0)); got != 0 {
				t.Fatalf("test frame's checksum is %#x, want 0", got)
			}

			mem := make(byteSpace, 0x2000)
			copy(mem[0x1000:], f)
			ring := make([]byte, 4*abi.SendDescSize)
			d := ring[:abi.SendDescSize]
			binary.BigEndian.PutUint32(d[abi.SendOffAddrLow:], 0x1000)
			binary.BigEndian.PutUint16(d[abi.SendOffPseudoHdrOff:], uint16(pos))
			binary.BigEndian.PutUint16(d[abi.SendOffLength:], n)
			d[abi.SendOffRDMACount] = 1
			d[abi.SendOffCksumOffset] = l4
			d[abi.SendOffFlags] = abi.FlagFirst | abi.FlagNoTSO | abi.FlagCksum | abi.FlagSmall

			cnt, frames, err := newSender().take(ring, 0, mem)
			if err != nil || cnt != 1 || len(frames) != 1 {
				t.Fatalf("take = %d, %d frames, %v", cnt, len(frames), err)
			}
			if got := binary.BigEndian.Uint16(frames[0][pos:]); got != tc.want {
				t.Errorf("checksum field %#04x, want %#04x", got, tc.want)
			}
		})
	}
}
