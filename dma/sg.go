package dma

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Segment is one piece of a scatter/gather list: Len bytes at guest
// address Addr.
type Segment struct {
	Addr uint64
	Len  int
}

// Gather fills dst from segs, in order and back to back: what a device
// does with the fragments of a transmit descriptor chain. The segments must
// hold at least len(dst) bytes (the tail of the list is not read); a
// negative Len or too short a list fails with EINVAL before anything is
// read. A failed access returns its *Error unchanged, so the caller can
// report the faulting address.
func Gather(s Space, dst []byte, segs []Segment) error {
	return sg(Read, s, dst, segs)
}

// Scatter writes src across segs, in order and back to back: what a device
// does with a received frame and a list of posted buffers. Rules as for
// Gather.
func Scatter(s Space, src []byte, segs []Segment) error {
	return sg(Write, s, src, segs)
}

func sg(op Op, s Space, buf []byte, segs []Segment) error {
	need := len(buf)
	for _, seg := range segs {
		if seg.Len < 0 {
			return fmt.Errorf("dma: %s segment %#x has length %d: %w", op, seg.Addr, seg.Len, unix.EINVAL)
		}
		need -= min(seg.Len, need)
	}
	if need > 0 {
		return fmt.Errorf("dma: %s of %d bytes: segments hold %d fewer: %w", op, len(buf), need, unix.EINVAL)
	}
	for _, seg := range segs {
		if len(buf) == 0 {
			break
		}
		n := min(seg.Len, len(buf))
		if n == 0 {
			continue
		}
		var err error
		if op == Read {
			_, err = s.ReadAt(buf[:n], seg.Addr)
		} else {
			_, err = s.WriteAt(buf[:n], seg.Addr)
		}
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}
