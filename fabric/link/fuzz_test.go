package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
)

// refStream is the stream framing spelt out the simplest way: the frames
// a correct decoder yields from data, and whether it must stop out of
// step.
func refStream(data []byte) (frames [][]byte, runts, oversize int, desync bool) {
	for off := 0; len(data)-off >= 4; {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n > maxSkip {
			return frames, runts, oversize, true
		}
		if len(data)-off-4 < n {
			break // truncated: the peer went away mid-frame
		}
		f := data[off+4 : off+4+n]
		switch {
		case n < fabric.MinFrame:
			runts++
		case n > fabric.MaxFrame:
			oversize++
		default:
			frames = append(frames, f)
		}
		off += 4 + n
	}
	return frames, runts, oversize, false
}

// FuzzStreamReader checks the stream decoder against refStream on any
// input: the same frames in the same order, every one within the wire's
// bounds, runts and oversized frames skipped in step, and a length no
// frame can have ending the stream.
func FuzzStreamReader(f *testing.F) {
	good := fabrictest.Frame([6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}, 0x88b5, []byte("seed"))
	f.Add(appendStreamFrame(nil, good))
	f.Add(appendStreamFrame(appendStreamFrame(nil, make([]byte, 13)), good))
	f.Add(appendStreamFrame(appendStreamFrame(nil, make([]byte, fabric.MaxFrame+1)), good))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 60, 1, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantRunts, wantOversize, wantDesync := refStream(data)
		r := newStreamReader(bytes.NewReader(data))
		var got [][]byte
		var runts, oversize int
		desync := false
	loop:
		for {
			fr, _, err := r.next()
			switch {
			case err == nil:
				if len(fr) < fabric.MinFrame || len(fr) > fabric.MaxFrame {
					t.Fatalf("frame of %d bytes out of bounds", len(fr))
				}
				got = append(got, append([]byte(nil), fr...))
			case errors.Is(err, errRunt):
				runts++
			case errors.Is(err, errOversize):
				oversize++
			case errors.Is(err, errDesync):
				desync = true
				break loop
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				break loop
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		if len(got) != len(want) || runts != wantRunts || oversize != wantOversize || desync != wantDesync {
			t.Fatalf("got %d frames, %d runts, %d oversized, desync %v; want %d, %d, %d, %v",
				len(got), runts, oversize, desync, len(want), wantRunts, wantOversize, wantDesync)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
	})
}

// FuzzDatagram feeds any datagram (or TAP read) to a link: a frame within
// the wire's bounds reaches the switch whole and exactly once, anything
// else is counted and goes nowhere.
func FuzzDatagram(f *testing.F) {
	f.Add(fabrictest.Frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, [6]byte{2, 0, 0, 0, 0, 2}, 0x0800, nil))
	f.Add(make([]byte, 13))
	f.Add(make([]byte, 14))
	f.Add(make([]byte, fabric.MaxFrame+1))
	f.Add([]byte{})
	sw := fabric.NewSwitch(quietLog())
	l := &Link{cfg: Config{Kind: Dgram, Name: "fuzz"}, sw: sw, log: quietLog(), warn: nil, maxOut: fabric.MaxFrame, stop: make(chan struct{})}
	l.warn = newTestLimiter()
	l.port = sw.NewPort("fuzz")
	l.port.Attach(l)
	l.setFar(nopFar{})
	dev := fabrictest.NewReceiver(1)
	devPort := sw.NewPort("dev")
	devPort.Attach(dev)
	f.Cleanup(func() { l.port.Detach(); devPort.Detach() })
	batch := make([][]byte, 1)
	learned := map[[6]byte]bool{}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fabric.MaxFrame+1 {
			data = data[:fabric.MaxFrame+1] // the read buffer's size
		}
		before := l.Stats()
		l.inFrame(data, batch)
		after := l.Stats()
		valid := len(data) >= fabric.MinFrame && len(data) <= fabric.MaxFrame
		if valid {
			if after.InFrames != before.InFrames+1 {
				t.Fatalf("a valid %d-byte frame: in_frames %d to %d", len(data), before.InFrames, after.InFrames)
			}
			// The switch learns every unicast source on the link's
			// port, and does not send a frame back where its
			// destination lives; everything else reaches the device.
			var src, dst [6]byte
			copy(src[:], data[6:12])
			copy(dst[:], data[0:6])
			if src[0]&1 == 0 {
				learned[src] = true
			}
			if dst[0]&1 == 0 && learned[dst] {
				return
			}
			select {
			case got := <-dev.Frames:
				if !bytes.Equal(got, data) {
					t.Fatalf("a valid %d-byte frame arrived as %d bytes", len(data), len(got))
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("a valid %d-byte frame never reached the device", len(data))
			}
			return
		}
		if bad := (after.InRunt + after.InOversize) - (before.InRunt + before.InOversize); bad != 1 || after.InFrames != before.InFrames {
			t.Fatalf("a %d-byte datagram: %d bad counted, in_frames %d to %d", len(data), bad, before.InFrames, after.InFrames)
		}
		select {
		case fr := <-dev.Frames:
			t.Fatalf("a %d-byte datagram reached the switch as %d bytes", len(data), len(fr))
		default:
		}
	})
}

type nopFar struct{}

func (nopFar) writeFrames([][]byte) error { return nil }
