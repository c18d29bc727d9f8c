package myri10ge

import (
	"encoding/binary"
	"math/bits"
)

// RFC 1071 Internet checksum helpers, shared by the transmit engine
// (checksum offload, TSO) and the receive path (§5.3 step 5).
//
// The sum is taken over big-endian 64-bit words with end-around carry and
// folded afterwards: 2^64-1 is a multiple of 2^16-1, so the folded result
// equals the 16-bit ones'-complement sum, including its representation of
// zero (0 only when every byte is 0, 0xFFFF for other multiples of 0xFFFF).

// onesSum adds b, read as big-endian 16-bit words, to the partial sum sum
// and returns the new partial sum (fold it with checksumFold). An odd
// trailing byte is padded with a zero byte, so pieces summed one after the
// other must all have even lengths except the last.
func onesSum(b []byte, sum uint32) uint32 {
	acc, c := uint64(sum), uint64(0)
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) > 0 {
		// The tail starts 8-aligned, hence on a word boundary: byte i
		// lands where it would in a zero-padded 8-byte word.
		var w uint64
		for i, x := range b {
			w |= uint64(x) << (56 - 8*i)
		}
		acc, c = bits.Add64(acc, w, c)
	}
	for c != 0 { // at most twice: 2^64-1 plus a carry gives 0 then 1
		acc, c = bits.Add64(acc, 0, c)
	}
	// 64 -> 32 bits, end-around; two rounds always fit.
	s := acc>>32 + acc&0xFFFFFFFF
	s = s>>32 + s&0xFFFFFFFF
	return uint32(s)
}

// checksumFold folds a partial sum to 16 bits with end-around carry. The
// result is the sum, not its complement: a header checksum field gets
// ^checksumFold(...).
func checksumFold(sum uint32) uint16 {
	s := sum>>16 + sum&0xFFFF
	s = s>>16 + s&0xFFFF
	return uint16(s)
}

// rxChecksum is the value of an rx_done slot's checksum (§5.3 step 5): the
// folded, not inverted, ones'-complement sum of frame[14:], which covers an
// 802.1Q tag and any Ethernet padding. A frame shorter than an Ethernet
// header gives 0.
func rxChecksum(frame []byte) uint16 {
	if len(frame) < rxChecksumStart {
		return 0
	}
	return checksumFold(onesSum(frame[rxChecksumStart:], 0))
}

// rxChecksumStart is where the receive checksum starts: after the
// destination, source and EtherType of an untagged Ethernet header.
const rxChecksumStart = 14
