package vfiouser

import (
	"fmt"
	"time"

	"github.com/myriemu/myriemu/dma"
	"golang.org/x/sys/unix"
)

// Message DMA: the connection is the dma.Messenger of its client's map,
// for regions mapped without an fd. Requests use the 11.1.3 layout
// (address u64, count u64, data; notes 1.5), at most the negotiated
// max_data_xfer_size each, and are answered on the same socket; the reader
// routes each reply (reply flag + id + command) to its waiter.

var _ dma.Messenger = (*conn)(nil)

// dmaReplyTimeout bounds the wait for the client's answer. QEMU answers
// message DMA in its main loop, which cannot run while a vCPU waits for
// our reply to some command; if a handler on the reader (a reset, say)
// waits for a device worker that waits here, only this timeout breaks the
// cycle, and it must do so well inside QEMU's own 5 s (notes 1.4). A reply
// arriving later is dropped as a reply to no request.
const dmaReplyTimeout = 2 * time.Second

// dmaWaiter is one outstanding DMA_READ/DMA_WRITE request.
type dmaWaiter struct {
	cmd  Command
	addr uint64
	dst  []byte // DMA_READ: where the reply's data goes
	n    uint64
	done chan error // buffered: the reader never blocks on it
}

// ReadDMA reads len(p) bytes of client memory at addr by DMA_READ messages.
func (c *conn) ReadDMA(addr uint64, p []byte) error { return c.messageDMA(CmdDMARead, addr, p) }

// WriteDMA writes p to client memory at addr by DMA_WRITE messages.
func (c *conn) WriteDMA(addr uint64, p []byte) error { return c.messageDMA(CmdDMAWrite, addr, p) }

func (c *conn) messageDMA(cmd Command, addr uint64, p []byte) error {
	// The reader owes the client a reply whenever it runs a handler, and
	// the client answers DMA only after it has that reply (notes 1.5):
	// waiting here would deadlock until QEMU's 5 s timeout.
	if tid := c.tid.Load(); tid != 0 && int32(unix.Gettid()) == tid {
		return dma.ErrInHandler
	}
	if len(p) == 0 {
		return nil
	}
	if addr+uint64(len(p))-1 < addr {
		return fmt.Errorf("vfiouser: %v %d@%#x: wraps: %w", cmd, len(p), addr, unix.EINVAL)
	}
	xfer := int(c.peerXfer.Load())
	for len(p) > 0 {
		n := min(len(p), xfer)
		if err := c.dmaChunk(cmd, addr, p[:n]); err != nil {
			return err
		}
		addr += uint64(n)
		p = p[n:]
	}
	return nil
}

func (c *conn) dmaChunk(cmd Command, addr uint64, p []byte) error {
	w := &dmaWaiter{cmd: cmd, addr: addr, n: uint64(len(p)), done: make(chan error, 1)}
	size := HeaderSize + dmaAccessSize
	if cmd == CmdDMARead {
		w.dst = p
	} else {
		size += len(p)
	}
	c.dmaMu.Lock()
	if c.closed {
		c.dmaMu.Unlock()
		return errConnClosed
	}
	if limit := c.s.cfg.maxPendingDMA(); len(c.pending) >= limit {
		c.dmaMu.Unlock()
		return fmt.Errorf("vfiouser: %v %d@%#x: %d requests already await the client: %w", cmd, len(p), addr, limit, unix.ENOBUFS)
	}
	id := c.nextID
	for c.pending[id] != nil {
		id++
	}
	c.nextID = id + 1
	c.pending[id] = w
	c.dmaMu.Unlock()

	b := make([]byte, size)
	Header{ID: id, Command: cmd, Size: uint32(size), Flags: FlagTypeCommand}.Put(b)
	le.PutUint64(b[HeaderSize:], addr)
	le.PutUint64(b[HeaderSize+8:], uint64(len(p)))
	if cmd == CmdDMAWrite {
		copy(b[HeaderSize+dmaAccessSize:], p)
	}
	if !c.send(b, nil) {
		c.dmaMu.Lock()
		if c.pending[id] == w {
			delete(c.pending, id)
		}
		c.dmaMu.Unlock()
		return errConnClosed
	}
	t := time.NewTimer(c.s.dmaTimeout)
	defer t.Stop()
	var err error
	select {
	case err = <-w.done:
	case <-t.C:
		c.dmaMu.Lock()
		if c.pending[id] == w {
			delete(c.pending, id)
			err = fmt.Errorf("no reply within %v: %w", c.s.dmaTimeout, unix.ETIMEDOUT)
		}
		c.dmaMu.Unlock()
		if err == nil { // the reply won the race
			err = <-w.done
		}
	}
	if err != nil {
		return fmt.Errorf("vfiouser: %v %d@%#x: %w", cmd, len(p), addr, err)
	}
	return nil
}

// routeReply hands a reply to the DMA request it answers. A reply that
// answers nothing is dropped with a warning: answering it would put a
// reply the client never asked for on the stream (QEMU desyncs on those).
func (c *conn) routeReply(m *message) {
	closeFDs(m.fds)
	c.dmaMu.Lock()
	w := c.pending[m.hdr.ID]
	if w != nil && w.cmd == m.hdr.Command {
		delete(c.pending, m.hdr.ID)
	} else {
		w = nil
	}
	c.dmaMu.Unlock()
	if w == nil {
		c.protocolError(m.hdr, badRequest("%v: reply to no request", m.hdr.Command))
		return
	}
	w.done <- c.checkDMAReply(m, w)
}

// checkDMAReply validates a reply and, for DMA_READ, copies its data.
func (c *conn) checkDMAReply(m *message, w *dmaWaiter) error {
	if m.hdr.IsError() {
		errno := unix.Errno(m.hdr.Error)
		if errno == 0 {
			errno = unix.EIO
		}
		return fmt.Errorf("client error reply: %w", errno)
	}
	if len(m.fds) > 0 || m.ctrunc {
		c.protocolError(m.hdr, badRequest("%v reply: %d fds", m.hdr.Command, len(m.fds)))
		return fmt.Errorf("reply with fds: %w", unix.EIO)
	}
	v := dmaAccess(m.payload)
	want := dmaAccessSize
	if w.cmd == CmdDMARead {
		want += int(w.n)
	}
	if len(v) != want || v.address() != w.addr || v.count() != w.n {
		c.protocolError(m.hdr, badRequest("%v reply: %d bytes for %d@%#x", m.hdr.Command, len(m.payload), w.n, w.addr))
		return fmt.Errorf("malformed reply: %w", unix.EIO)
	}
	if w.cmd == CmdDMARead {
		copy(w.dst, v.data())
	}
	return nil
}
