package myritest

import (
	"errors"
	"fmt"
)

// ErrDropped: the driver dropped the packet (NETDEV_TX_OK without sending
// it), e.g. a TSO packet that needs more than 64 descriptors.
var ErrDropped = errors.New("myritest: packet dropped by the driver")

// Packet is a frame handed to the driver by the stack (an skb).
type Packet struct {
	// Frags are the linear part and then the page fragments, in order.
	Frags [][]byte
	// Offsets, if set, put each fragment at that byte offset within a
	// page of guest memory (default 0: page-aligned), to make pieces cross
	// the tx boundary as skb data and page fragments do.
	Offsets []int
	// CsumStart > 0 asks for checksum offload (CHECKSUM_PARTIAL): the sum
	// over [CsumStart, len) goes at CsumStart+CsumOffset, where the frame
	// holds the stack's pseudo-header seed.
	CsumStart, CsumOffset int
	// MSS > 0 makes it a TSO packet; HdrLen is then the L2+L3+L4 header
	// length, CsumStart the TCP header offset, and IPv6 tells TSO6.
	MSS    int
	HdrLen int
	IPv6   bool
}

// FramePacket returns a linear packet without offloads.
func FramePacket(b []byte) Packet { return Packet{Frags: [][]byte{b}} }

func (p Packet) len() int {
	n := 0
	for _, f := range p.Frags {
		n += len(f)
	}
	return n
}

// Xmit is myri10ge_xmit on slice's send queue: the packet is copied into
// DMA buffers of guest memory, encoded into send descriptors (EncodeSend)
// and posted in the driver's store order (SubmitOrder), the first
// descriptor's flags last. Like the driver it refuses (ErrRingFull, the
// queue then stopped) when fewer than 12 slots (64 for TSO) are free,
// stops the queue when fewer than 12 remain afterwards, computes the
// checksum itself when the offsets are too large to offload, pads frames
// shorter than 60 bytes, and linearizes a non-TSO packet that needs more
// than 12 descriptors. With several transmit queues it rings SEND_GO when
// the queue was idle.
func (d *Driver) Xmit(slice int, p Packet) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running != stateRunning {
		return fmt.Errorf("%w: transmit while the interface is down", ErrState)
	}
	if slice < 0 || slice >= len(d.ss) || (slice > 0 && d.numTxQueues <= 1) {
		return fmt.Errorf("%w: no transmit queue %d (%d in use)", ErrState, slice, d.numTxQueues)
	}
	s := d.ss[slice]
	t := &s.tx
	if t.stopped {
		return fmt.Errorf("%w: slice %d queue stopped (%d of %d descriptors in flight)", ErrRingFull, slice, t.req-t.done, t.mask+1)
	}
	total := p.len()
	if total == 0 {
		return fmt.Errorf("%w: empty packet", ErrState)
	}
	if p.MSS > 0 && p.IPv6 && (!d.tso6 || uint32(p.HdrLen) > d.maxTSO6) {
		return fmt.Errorf("%w: IPv6 TSO needs TSO6 (GET_MAX_TSO6_HDR_SIZE %d, have %v); the stack or myri10ge_sw_tso segments it", ErrState, d.maxTSO6, d.tso6)
	}
	frags := p.Frags
	offs := p.Offsets
	csumStart, csumOff := p.CsumStart, p.CsumOffset
	if p.MSS == 0 && csumStart > 0 && (csumStart > txMaxCksumStart || csumStart+csumOff > txMaxCksumPos) {
		// skb_checksum_help: the checksum in software, no offload.
		lin := linearize(frags)
		if csumStart+csumOff+2 > len(lin) {
			return fmt.Errorf("%w: checksum at %d+%d outside a %d-byte packet", ErrState, csumStart, csumOff, len(lin))
		}
		sum := ^Checksum(lin[csumStart:])
		if sum == 0 {
			sum = 0xffff
		}
		lin[csumStart+csumOff], lin[csumStart+csumOff+1] = byte(sum>>8), byte(sum)
		frags, offs = [][]byte{lin}, firstOffset(offs)
		csumStart, csumOff = 0, 0
	}
	pad := p.MSS == 0 && total < txEthZLen
	if pad && len(nonEmpty(frags)) != 1 {
		frags, offs = [][]byte{linearize(frags)}, firstOffset(offs) // skb_pad linearizes
	}
	for {
		avail := t.mask - 1 - (t.req - t.done)
		maxSeg := txMaxSendDesc
		if p.MSS > 0 {
			maxSeg = txMaxSendDescTSO
		}
		if avail < maxSeg {
			t.stopQueue++
			d.stats.StopQueue++
			t.stopped = true
			return fmt.Errorf("%w: slice %d: %d free descriptors, a packet may need %d (NETDEV_TX_BUSY)", ErrRingFull, slice, avail, maxSeg)
		}
		tp := TxPacket{Len: total, CsumStart: csumStart, CsumOffset: csumOff, MSS: p.MSS, HdrLen: p.HdrLen, IPv6: p.IPv6}
		var blocks []uint64
		for i, f := range frags {
			if len(f) == 0 {
				tp.Frags = append(tp.Frags, TxFrag{})
				continue
			}
			off := 0
			if i < len(offs) {
				off = offs[i] & (pageSize - 1)
			}
			size := len(f)
			if pad {
				size = txEthZLen // zeroed by Alloc: skb_pad's zeros
			}
			blk, err := d.mem.Alloc(off+size, pageSize)
			if err != nil {
				freeAll(d.mem, blocks)
				return err
			}
			blocks = append(blocks, blk)
			copy(d.mem.mustBytes(blk+uint64(off), len(f)), f)
			tp.Frags = append(tp.Frags, TxFrag{Addr: blk + uint64(off), Len: len(f)})
		}
		descs, err := EncodeSend(tp, d.txBoundary)
		if errors.Is(err, ErrTooManyDescs) {
			freeAll(d.mem, blocks)
			if p.MSS > 0 {
				d.logf(Err, "TSO but wanted to linearize?!?!?")
				s.txDropped++
				d.stats.TxDropped++
				return fmt.Errorf("%w: %v", ErrDropped, err)
			}
			if len(frags) == 1 {
				return err // cannot happen: one piece of <= 64 KiB fits 12 descriptors
			}
			frags, offs = [][]byte{linearize(frags)}, firstOffset(offs)
			t.linearized++
			d.stats.Linearized++
			continue
		}
		if err != nil {
			freeAll(d.mem, blocks)
			return err
		}
		count := len(descs)
		t.info[t.req&t.mask] = txInfo{pkt: true, bufs: blocks, len: total}
		t.info[(t.req+count-1)&t.mask].last = true
		for _, st := range SubmitOrder(t.lanai, t.mask+1, t.req, descs) {
			if err := d.bus.WriteBAR0(st.Off, st.Data); err != nil {
				return fmt.Errorf("myritest: %d-byte store at BAR0 %#x: %w", len(st.Data), st.Off, err)
			}
		}
		t.req += count
		if d.numTxQueues > 1 && !t.queueActive {
			t.queueActive = true
			if err := d.putBE32(t.sendGo, 1); err != nil {
				return err
			}
		}
		t.pktStart++
		d.stats.TxPackets++
		if avail-count < txMaxSendDesc {
			t.stopQueue++
			d.stats.StopQueue++
			t.stopped = true
		}
		return nil
	}
}

// QueueStopped reports whether slice's send queue is stopped (the stack
// would not call Xmit until completions wake it).
func (d *Driver) QueueStopped(slice int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slice >= 0 && slice < len(d.ss) && d.ss[slice].tx.stopped
}

// TxInFlight returns the descriptors and packets posted on slice and not
// yet completed.
func (d *Driver) TxInFlight(slice int) (descs, packets int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if slice < 0 || slice >= len(d.ss) {
		return 0, 0
	}
	t := &d.ss[slice].tx
	return t.req - t.done, t.pktStart - t.pktDone
}

func linearize(frags [][]byte) []byte {
	var b []byte
	for _, f := range frags {
		b = append(b, f...)
	}
	return b
}

func nonEmpty(frags [][]byte) [][]byte {
	var out [][]byte
	for _, f := range frags {
		if len(f) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func firstOffset(offs []int) []int {
	if len(offs) == 0 {
		return nil
	}
	return offs[:1]
}

func freeAll(m *Memory, blocks []uint64) {
	for _, b := range blocks {
		m.Free(b)
	}
}
