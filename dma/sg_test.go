package dma

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// recSpace is a Space over a flat byte slice that records its calls.
type recSpace struct {
	mem   []byte
	calls []string
}

func (s *recSpace) ReadAt(p []byte, addr uint64) (int, error) {
	s.calls = append(s.calls, fmt.Sprintf("read %d@%#x", len(p), addr))
	if addr+uint64(len(p)) > uint64(len(s.mem)) {
		return 0, &Error{Op: Read, Addr: addr, Len: len(p), Err: ErrUnmapped}
	}
	return copy(p, s.mem[addr:]), nil
}

func (s *recSpace) WriteAt(p []byte, addr uint64) (int, error) {
	s.calls = append(s.calls, fmt.Sprintf("write %d@%#x", len(p), addr))
	if addr+uint64(len(p)) > uint64(len(s.mem)) {
		return 0, &Error{Op: Write, Addr: addr, Len: len(p), Err: ErrUnmapped}
	}
	return copy(s.mem[addr:], p), nil
}

func (s *recSpace) Store32(addr uint64, v uint32) error { return errors.New("unused") }

func TestGatherScatter(t *testing.T) {
	tests := []struct {
		name    string
		buf     int
		segs    []Segment
		wantErr error
		calls   []string // for Gather; Scatter makes the same with "write"
	}{
		{name: "exact", buf: 10, segs: []Segment{{0x10, 4}, {0x40, 2}, {0x20, 4}}, calls: []string{"read 4@0x10", "read 2@0x40", "read 4@0x20"}},
		{name: "segments hold more", buf: 5, segs: []Segment{{0x10, 4}, {0x40, 8}, {0x80, 8}}, calls: []string{"read 4@0x10", "read 1@0x40"}},
		{name: "empty segments skipped", buf: 4, segs: []Segment{{0x10, 0}, {0x40, 4}}, calls: []string{"read 4@0x40"}},
		{name: "nothing", buf: 0, segs: nil},
		{name: "too short", buf: 9, segs: []Segment{{0x10, 4}, {0x40, 4}}, wantErr: unix.EINVAL},
		{name: "negative length", buf: 4, segs: []Segment{{0x10, 8}, {0x40, -1}}, wantErr: unix.EINVAL},
		{name: "fault in second segment", buf: 8, segs: []Segment{{0x10, 4}, {0xfe, 4}}, wantErr: ErrUnmapped, calls: []string{"read 4@0x10", "read 4@0xfe"}},
	}
	for _, tt := range tests {
		for _, op := range []Op{Read, Write} {
			t.Run(tt.name+"/"+op.String(), func(t *testing.T) {
				s := &recSpace{mem: pattern(0x100, 3)}
				before := bytes.Clone(s.mem)
				buf := pattern(tt.buf, 77)
				var err error
				if op == Read {
					buf = make([]byte, tt.buf)
					err = Gather(s, buf, tt.segs)
				} else {
					err = Scatter(s, buf, tt.segs)
				}
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				var wantCalls []string
				for _, c := range tt.calls {
					if op == Write {
						c = "write" + c[len("read"):]
					}
					wantCalls = append(wantCalls, c)
				}
				if diff := cmp.Diff(wantCalls, s.calls); diff != "" {
					t.Errorf("calls -want +got:\n%s", diff)
				}
				if tt.wantErr != nil {
					var de *Error
					if errors.Is(tt.wantErr, ErrUnmapped) && (!errors.As(err, &de) || de.Addr != 0xfe) {
						t.Errorf("err = %v, want the space's *Error at 0xfe", err)
					}
					return
				}
				// The bytes went where the segments say, in order.
				want := before
				if op == Write {
					want = bytes.Clone(before)
				}
				pos := 0
				for _, seg := range tt.segs {
					n := min(seg.Len, tt.buf-pos)
					if op == Write {
						copy(want[seg.Addr:], buf[pos:pos+n])
					} else if !bytes.Equal(buf[pos:pos+n], before[seg.Addr:seg.Addr+uint64(n)]) {
						t.Errorf("gathered %x from %#x, want %x", buf[pos:pos+n], seg.Addr, before[seg.Addr:seg.Addr+uint64(n)])
					}
					pos += n
				}
				if !bytes.Equal(s.mem, want) {
					t.Errorf("memory after %s differs from the segments' layout", op)
				}
			})
		}
	}
}
