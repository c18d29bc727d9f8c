package fabric

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Capture writes frames to a pcap stream (nanosecond timestamps, Ethernet
// link type), as tshark and Wireshark read it.
type Capture struct {
	mu     sync.Mutex
	buf    *bufio.Writer
	w      *pcapgo.Writer
	closer io.Closer
	err    error // first write error; capturing stops there
	frames uint64
}

// NewCapture writes the pcap file header to w and returns a capture that
// appends to it. If w is an io.Closer, Close closes it.
func NewCapture(w io.Writer) (*Capture, error) {
	buf := bufio.NewWriterSize(w, 256<<10)
	pw := pcapgo.NewWriterNanos(buf)
	if err := pw.WriteFileHeader(MaxFrame, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("fabric: pcap header: %w", err)
	}
	c := &Capture{buf: buf, w: pw}
	if cl, ok := w.(io.Closer); ok {
		c.closer = cl
	}
	return c, nil
}

func (c *Capture) write(frames [][]byte) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	for _, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: now, CaptureLength: len(f), Length: len(f)}
		if err := c.w.WritePacket(ci, f); err != nil {
			c.err = err
			return
		}
		c.frames++
	}
}

// Frames reports how many frames were written.
func (c *Capture) Frames() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// Flush pushes buffered frames to the underlying writer.
func (c *Capture) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.buf.Flush(); err != nil && c.err == nil {
		c.err = err
	}
	return c.err
}

var errCaptureClosed = errors.New("capture closed")

// Close flushes and closes the underlying writer; frames written after it
// are dropped. Detach the capture from the switch first (SetCapture(nil)).
func (c *Capture) Close() error {
	err := c.Flush()
	c.mu.Lock()
	if c.err == nil {
		c.err = errCaptureClosed
	}
	c.mu.Unlock()
	if c.closer != nil {
		if cerr := c.closer.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("fabric: pcap: %w", err)
	}
	return nil
}
