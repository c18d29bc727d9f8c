package fabric

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// frameOf returns an Ethernet frame of n bytes whose payload is seed.
func frameOf(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00})
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i)
	}
	return f
}

// readPcap parses a whole pcap stream: its frames and original lengths.
func readPcap(t *testing.T, data []byte) (frames [][]byte, lens []int) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for {
		pkt, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return frames, lens
		}
		if err != nil {
			t.Fatalf("record %d: %v (the stream must end on a whole record)", len(frames), err)
		}
		frames = append(frames, pkt)
		lens = append(lens, ci.Length)
	}
}

// memFile is an in-memory file: it takes up to room bytes, then fails
// with ENOSPC like a full disk, and can be truncated. gate, if set, holds
// every write until it is closed.
type memFile struct {
	mu     sync.Mutex
	buf    []byte
	room   int
	gate   chan struct{}
	writes int
	closed bool
}

func (m *memFile) Write(p []byte) (int, error) {
	m.mu.Lock()
	gate := m.gate
	m.mu.Unlock()
	if gate != nil {
		<-gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if m.room > 0 && len(m.buf)+len(p) > m.room {
		n := m.room - len(m.buf)
		m.buf = append(m.buf, p[:n]...)
		return n, unix.ENOSPC
	}
	m.buf = append(m.buf, p...)
	return len(p), nil
}

func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.buf = m.buf[:n]
	return nil
}

func (m *memFile) Close() error { m.mu.Lock(); m.closed = true; m.mu.Unlock(); return nil }

func (m *memFile) bytes() []byte { m.mu.Lock(); defer m.mu.Unlock(); return bytes.Clone(m.buf) }

func TestCaptureWritesEveryFrame(t *testing.T) {
	leaktest.Check(t)
	f := &memFile{}
	c, err := NewCapture(f, CaptureConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	wantLens := []int{}
	for i := range 200 {
		batch := [][]byte{frameOf(60+i, byte(i)), frameOf(1514, byte(i))}
		c.write(batch)
		want = append(want, batch...)
		wantLens = append(wantLens, len(batch[0]), len(batch[1]))
	}
	big := frameOf(MaxFrame+100, 7) // cut at the snap length, its length kept
	c.write([][]byte{big})
	want, wantLens = append(want, big[:MaxFrame]), append(wantLens, len(big))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	got, lens := readPcap(t, f.bytes())
	if len(got) != len(want) {
		t.Fatalf("%d frames in the stream, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("frame %d differs: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
	if diff := cmp.Diff(wantLens, lens); diff != "" {
		t.Errorf("original lengths (-want +got):\n%s", diff)
	}
	if c.Frames() != uint64(len(want)) || c.Dropped() != 0 || c.Err() != nil || !f.closed {
		t.Errorf("frames %d dropped %d err %v closed %v; want %d, 0, nil, true", c.Frames(), c.Dropped(), c.Err(), f.closed, len(want))
	}
	c.write([][]byte{frameOf(64, 1)}) // after Close: refused, not written
	if c.Frames() != uint64(len(want)) {
		t.Error("a frame was written after Close")
	}
}

// TestCaptureNeverBlocksTheSender: with the disk stuck, senders go on at
// full speed; frames beyond the bounded queue are dropped and counted, and
// what was queued is written once the disk moves again.
func TestCaptureNeverBlocksTheSender(t *testing.T) {
	leaktest.Check(t)
	f := &memFile{}
	const queue = 64 << 10
	c, err := NewCapture(f, CaptureConfig{QueueBytes: queue})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.gate = make(chan struct{}) // the disk gets stuck after the header
	f.mu.Unlock()
	sent := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			c.write([][]byte{frameOf(1000, byte(i))})
			sent++
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		close(f.gate)
		<-done
		t.Fatal("the sender blocked on a stuck writer")
	}
	close(f.gate)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	frames, dropped := c.Frames(), c.Dropped()
	if frames+dropped != uint64(sent) || dropped == 0 {
		t.Errorf("written %d + dropped %d, want %d in all with some dropped", frames, dropped, sent)
	}
	// At most one writer pass was in flight, plus a full queue.
	if max := uint64(2 * queue / (1000 + pcapRecordHeader)); frames > max+1 {
		t.Errorf("%d frames written with a %d-byte queue and a stuck disk, want at most %d", frames, queue, max+1)
	}
	got, _ := readPcap(t, f.bytes())
	if uint64(len(got)) != frames {
		t.Errorf("%d records in the stream, Frames says %d", len(got), frames)
	}
}

// TestCaptureStopsOnWriteError: a full disk stops the capture at once, with
// one Error line, the stream cut back to its last whole record, and Err
// and Close reporting ENOSPC.
func TestCaptureStopsOnWriteError(t *testing.T) {
	leaktest.Check(t)
	log, hook := logtest.NewNullLogger()
	f := &memFile{room: 24 + 10*(pcapRecordHeader+1000) + 500} // ten and a half records
	c, err := NewCapture(f, CaptureConfig{Log: logrus.NewEntry(log).WithField("file", "x.pcap")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		c.write([][]byte{frameOf(1000, byte(i))})
		time.Sleep(time.Millisecond) // let the writer make several passes
	}
	// Err is set just before the line is logged: wait for both.
	deadline := time.Now().Add(10 * time.Second)
	for (c.Err() == nil || len(hook.AllEntries()) == 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(c.Err(), unix.ENOSPC) {
		t.Fatalf("Err %v, want ENOSPC", c.Err())
	}
	// Logged at once, before Close.
	entries := hook.AllEntries()
	if len(entries) != 1 || entries[0].Level != logrus.ErrorLevel || entries[0].Data["file"] != "x.pcap" {
		t.Fatalf("log %v, want one Error with the file", entries)
	}
	if err := c.Close(); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("Close: %v, want ENOSPC", err)
	}
	if st := c.Stats(); st.WriteErrors != 1 || st.Frames != 10 || st.Bytes != int64(24+10*(pcapRecordHeader+1000)) {
		t.Errorf("stats %+v, want 1 write error, 10 frames, %d bytes", st, 24+10*(pcapRecordHeader+1000))
	}
	got, _ := readPcap(t, f.bytes())
	if len(got) != 10 || c.Frames() != 10 {
		t.Errorf("%d records in the stream, Frames %d; want the 10 that fit", len(got), c.Frames())
	}
	if len(hook.AllEntries()) != 1 {
		t.Errorf("more log lines after the first: %v", hook.AllEntries())
	}
}

func TestWholeRecords(t *testing.T) {
	rec := func(n int) []byte {
		b := make([]byte, pcapRecordHeader+n)
		binary.LittleEndian.PutUint32(b[8:], uint32(n))
		return b
	}
	out := append(append(rec(10), rec(0)...), rec(30)...) // ends at 26, 42, 88
	for _, tt := range []struct {
		wrote   int
		bytes   int
		records uint64
	}{{0, 0, 0}, {25, 0, 0}, {26, 26, 1}, {41, 26, 1}, {42, 42, 2}, {87, 42, 2}, {88, 88, 3}} {
		if b, r := wholeRecords(out, tt.wrote); b != tt.bytes || r != tt.records {
			t.Errorf("wholeRecords(%d) = %d, %d; want %d, %d", tt.wrote, b, r, tt.bytes, tt.records)
		}
	}
}

// BenchmarkCaptureWrite is what capturing costs a sender (the vfio-user
// reader, under a NIC's lock) per frame. Baseline: the least a capture can
// do there: a timestamp, a copy of the frame and a 16-byte record header
// into a reused buffer. Ours: the capture's enqueue, its writer goroutine writing
// to io.Discard meanwhile.
func BenchmarkCaptureWrite(b *testing.B) {
	for _, size := range []int{64, 1514} {
		frame := frameOf(size, 1)
		b.Run("size="+itoa(size)+"/impl=baseline", func(b *testing.B) {
			buf := make([]byte, 0, DefaultCaptureQueue)
			var hdr [pcapRecordHeader]byte
			b.SetBytes(int64(size))
			for b.Loop() {
				if len(buf)+len(hdr)+len(frame) > cap(buf) {
					buf = buf[:0]
				}
				now := time.Now()
				binary.LittleEndian.PutUint32(hdr[0:], uint32(now.Unix()))
				binary.LittleEndian.PutUint32(hdr[4:], uint32(now.Nanosecond()))
				binary.LittleEndian.PutUint32(hdr[8:], uint32(len(frame)))
				buf = append(append(buf, hdr[:]...), frame...)
			}
		})
		b.Run("size="+itoa(size)+"/impl=ours", func(b *testing.B) {
			c, err := NewCapture(io.Discard, CaptureConfig{})
			if err != nil {
				b.Fatal(err)
			}
			frames := [][]byte{frame}
			b.SetBytes(int64(size))
			for b.Loop() {
				c.write(frames)
			}
			b.StopTimer()
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(c.Dropped())/float64(b.N), "dropped/op")
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
