package fabric

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/sirupsen/logrus"
)

// DefaultCaptureQueue is how many bytes of records a capture holds for its
// writer before it drops frames: about 450 full-size frames.
const DefaultCaptureQueue = 4 << 20

// pcapRecordHeader is the size of a pcap record header.
const pcapRecordHeader = 16

// CaptureConfig configures a Capture.
type CaptureConfig struct {
	// Log gets the capture's one Error line when a write fails (give it
	// the file name as a field). nil logs to logrus' standard logger.
	Log *logrus.Entry
	// QueueBytes bounds the records waiting for the writer; 0 means
	// DefaultCaptureQueue.
	QueueBytes int
}

// Capture writes frames to a pcap stream (nanosecond timestamps, Ethernet
// link type, frames cut at MaxFrame), as tshark and Wireshark read it.
//
// The switch copies each frame into a bounded queue; the capture's writer
// goroutine writes the queue out, so no disk I/O ever happens on a
// sender's path (a BAR store on the vfio-user reader, under the NIC's
// lock). A full queue drops frames and counts them. The first write error
// (a full disk) stops the capture: it is logged at once, the stream is
// cut back to its last whole record when the writer can Truncate, and Err
// reports it from then on.
type Capture struct {
	w      io.Writer
	closer io.Closer
	log    *logrus.Entry
	limit  int

	mu        sync.Mutex
	queue     []byte // whole records waiting for the writer
	queued    uint64 // records in queue
	stopped   bool   // a write failed or Close began: frames are refused
	closing   bool
	err       error  // the write error that stopped the capture
	frames    uint64 // records written
	dropped   uint64 // frames refused because the queue was full
	written   int64  // bytes of whole records in the stream, header included
	kick      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// NewCapture writes the pcap file header to w and starts the capture's
// writer goroutine; Close stops and joins it. If w is an io.Closer, Close
// closes it; if it has Truncate(int64) error (an *os.File), a failed
// write is cut back to the last whole record.
func NewCapture(w io.Writer, cfg CaptureConfig) (*Capture, error) {
	if err := pcapgo.NewWriterNanos(w).WriteFileHeader(MaxFrame, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("fabric: pcap header: %w", err)
	}
	c := &Capture{w: w, log: cfg.Log, limit: cfg.QueueBytes, kick: make(chan struct{}, 1), written: 24}
	if c.log == nil {
		c.log = logrus.NewEntry(logrus.StandardLogger()).WithField("component", "fabric")
	}
	if c.limit <= 0 {
		c.limit = DefaultCaptureQueue
	}
	if cl, ok := w.(io.Closer); ok {
		c.closer = cl
	}
	c.wg.Add(1)
	go c.runWriter()
	return c, nil
}

// write queues frames; it never blocks on I/O.
func (c *Capture) write(frames [][]byte) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	wasEmpty := len(c.queue) == 0
	sec, nsec := uint32(now.Unix()), uint32(now.Nanosecond())
	for _, f := range frames {
		n := min(len(f), MaxFrame)
		if len(c.queue)+pcapRecordHeader+n > c.limit {
			c.dropped++
			continue
		}
		// A record of a nanosecond pcap file: ts_sec, ts_nsec, incl_len,
		// orig_len, little-endian as the file header written by pcapgo.
		c.queue = binary.LittleEndian.AppendUint32(c.queue, sec)
		c.queue = binary.LittleEndian.AppendUint32(c.queue, nsec)
		c.queue = binary.LittleEndian.AppendUint32(c.queue, uint32(n))
		c.queue = binary.LittleEndian.AppendUint32(c.queue, uint32(len(f)))
		c.queue = append(c.queue, f[:n]...)
		c.queued++
	}
	// The writer takes the whole queue when it wakes: a queue that was not
	// empty already has a wake-up pending or a writer about to take it.
	if wasEmpty && len(c.queue) > 0 {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// runWriter writes the queue out until Close, then writes what is left.
func (c *Capture) runWriter() {
	defer c.wg.Done()
	var out []byte
	for {
		<-c.kick
		c.mu.Lock()
		out, c.queue = c.queue, out[:0]
		n := c.queued
		c.queued = 0
		closing := c.closing
		c.mu.Unlock()
		if len(out) > 0 {
			c.writeOut(out, n)
		}
		if closing {
			return
		}
	}
}

// writeOut writes n whole records. On a failure the capture stops there.
func (c *Capture) writeOut(out []byte, n uint64) {
	wrote, err := c.w.Write(out)
	if err == nil && wrote < len(out) {
		err = io.ErrShortWrite
	}
	if err == nil {
		c.mu.Lock()
		c.frames += n
		c.written += int64(len(out))
		c.mu.Unlock()
		return
	}
	whole, records := wholeRecords(out, wrote)
	cut := c.written + int64(whole)
	truncated := false
	if t, ok := c.w.(interface{ Truncate(int64) error }); ok && whole < wrote {
		truncated = t.Truncate(cut) == nil
	}
	c.mu.Lock()
	c.stopped = true
	c.err = err
	c.frames += records
	c.written = cut
	c.queue = c.queue[:0]
	c.queued = 0
	frames := c.frames
	c.mu.Unlock()
	c.log.WithError(err).WithFields(logrus.Fields{"frames": frames, "bytes": cut, "cut_to_last_record": truncated}).
		Error("capture stopped: writing the pcap stream failed")
}

// wholeRecords returns how many bytes of out, of which the first wrote
// reached the stream, form whole records, and how many records that is.
func wholeRecords(out []byte, wrote int) (bytes int, records uint64) {
	for off := 0; off+pcapRecordHeader <= len(out); {
		incl := int(binary.LittleEndian.Uint32(out[off+8:]))
		end := off + pcapRecordHeader + incl
		if end > wrote {
			break
		}
		off, bytes = end, end
		records++
	}
	return bytes, records
}

// CaptureStats counts what a capture did.
type CaptureStats struct {
	Frames      uint64 // records written
	Bytes       int64  // bytes of whole records in the stream, file header included
	Dropped     uint64 // frames refused because the queue was full
	WriteErrors uint64 // 1 once a write failed (the capture stopped there)
}

// Stats returns the capture's counters.
func (c *Capture) Stats() CaptureStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CaptureStats{Frames: c.frames, Bytes: c.written, Dropped: c.dropped}
	if c.err != nil {
		s.WriteErrors = 1
	}
	return s
}

// Frames reports how many frames were written.
func (c *Capture) Frames() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// Dropped reports how many frames were refused because the queue was full.
func (c *Capture) Dropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Err returns the write error that stopped the capture, or nil.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close writes what is queued, stops and joins the writer and closes the
// underlying writer; frames after it are dropped. It returns the error
// that stopped the capture, if any, else the close error. Detach the
// capture from the switch first (SetCapture(nil)). Idempotent.
func (c *Capture) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing, c.stopped = true, true // the writer's next pass is its last
		c.mu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
		c.wg.Wait()
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		if c.closer != nil {
			if cerr := c.closer.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			c.closeErr = fmt.Errorf("fabric: pcap: %w", err)
		}
	})
	return c.closeErr
}
