package myritest

import (
	"context"
	"encoding/binary"
	"net"
)

// sliceState is the driver's struct myri10ge_slice_state.
type sliceState struct {
	idx   int
	tx    txRing
	small rxRing
	big   rxRing

	rxDone    uint64 // bus address of the rx_done ring
	rxDoneIdx int
	rxDoneCnt int
	stats     uint64 // bus address of the interrupt block
	irqClaim  uint64 // BAR0 offset of claim word 0; word 1 at +4

	napi bool // NAPI enabled (between open and close)

	// Tokens the driver holds (§6.2): the IRQ token from a block with
	// valid != 0 until claim word 1, the RX token from valid & 1 until
	// claim word 0.
	irqHeld, rxHeld bool

	rxPackets, rxBytes, rxDropped int
	txPackets, txBytes, txDropped int

	watchdogTxDone, watchdogTxReq, watchdogRxDone int
	stuck                                         bool
}

// rxPage is a page of receive buffers (alloc_pages + dma_map_page), freed
// when its last buffer is consumed.
type rxPage struct {
	addr uint64
	refs int
}

type rxBufInfo struct {
	page *rxPage
	off  int // within the page
}

// rxRing is the driver's struct myri10ge_rx_buf.
type rxRing struct {
	lanai   uint64 // BAR0 offset of the ring
	shadow  [][recvDescSize]byte
	info    []rxBufInfo
	cnt     int // buffers consumed
	fill    int // buffers posted (fill_cnt)
	mask    int
	page    *rxPage // the page being carved
	pageOff int
	bytes   int // what each buffer holds (small_bytes+2, or big_bytes)
}

func (r *rxRing) entries() int { return r.mask + 1 }

// txInfo is struct myri10ge_tx_buffer_state: what to free when the slot
// completes.
type txInfo struct {
	pkt  bool     // the slot holds the packet (skb)
	bufs []uint64 // DMA buffers to free with the slot
	len  int      // packet bytes, on the pkt slot
	last bool     // last descriptor of a packet
}

// txRing is the driver's struct myri10ge_tx_buf.
type txRing struct {
	lanai       uint64
	sendGo      uint64
	sendStop    uint64
	mask        int
	info        []txInfo
	req, done   int // descriptors
	pktStart    int // packets
	pktDone     int
	stopped     bool // netif_tx_stop_queue
	queueActive bool
	stopQueue   int
	wakeQueue   int
	linearized  int
}

// canary fills receive buffers when they are posted: a device that writes
// past a frame, or not at all, leaves it visibly changed or visibly there.
var canary = [4]byte{0xC4, 0x7A, 0x11, 0xE5}

func fillCanary(b []byte) {
	for i := range b {
		b[i] = canary[i&3]
	}
}

// isCanary reports whether b (starting at buffer offset off) still holds
// the canary.
func isCanary(b []byte, off int) bool {
	for i, c := range b {
		if c != canary[(off+i)&3] {
			return false
		}
	}
	return true
}

// skbDataAlign is SKB_DATA_ALIGN on x86-64.
func skbDataAlign(n int) int { return (n + cacheLine - 1) &^ (cacheLine - 1) }

// allocRxPages is myri10ge_alloc_rx_pages: fill the ring completely,
// carving pages into buffers of r.bytes at cache-line strides, and post
// every aligned group of 8 (myri10ge_submit_8rx).
func (d *Driver) allocRxPages(r *rxRing) error {
	for r.fill != r.cnt+r.mask+1 {
		idx := r.fill & r.mask
		if r.page == nil || r.pageOff+r.bytes > pageSize {
			addr, err := d.mem.Alloc(pageSize, pageSize)
			if err != nil {
				return err
			}
			d.releasePage(r.page) // drop the carving reference
			r.page = &rxPage{addr: addr, refs: 1}
			r.pageOff = 0
		}
		r.page.refs++
		r.info[idx] = rxBufInfo{r.page, r.pageOff}
		bus := r.page.addr + uint64(r.pageOff)
		fillCanary(d.mem.mustBytes(bus, min(r.bytes, pageSize-r.pageOff)))
		binary.BigEndian.PutUint32(r.shadow[idx][0:], uint32(bus>>32))
		binary.BigEndian.PutUint32(r.shadow[idx][4:], uint32(bus))
		r.pageOff += skbDataAlign(r.bytes)
		r.fill++
		if idx&7 == 7 {
			if err := d.submit8rx(r, idx-7); err != nil {
				return err
			}
		}
	}
	return nil
}

// submit8rx is myri10ge_submit_8rx: entries 0-3 and 4-7 as two 32-byte
// PIO copies with the first addr_low invalid, then the real addr_low of
// the first entry in one 4-byte store, the doorbell (§5.2).
func (d *Driver) submit8rx(r *rxRing, first int) error {
	var grp [recvGroup * recvDescSize]byte
	for i := range recvGroup {
		copy(grp[i*recvDescSize:], r.shadow[first+i][:])
	}
	low := binary.BigEndian.Uint32(grp[4:])
	binary.BigEndian.PutUint32(grp[4:], recvInvalidLow)
	dst := r.lanai + uint64(first)*recvDescSize
	if err := d.pioCopy(dst, grp[:32]); err != nil {
		return err
	}
	if err := d.pioCopy(dst+32, grp[32:]); err != nil {
		return err
	}
	return d.putBE32(dst+4, low)
}

// releasePage drops one reference to a receive page.
func (d *Driver) releasePage(p *rxPage) {
	if p == nil {
		return
	}
	p.refs--
	if p.refs == 0 {
		d.mem.Free(p.addr)
	}
}

// allocateRings is myri10ge_allocate_rings.
func (d *Driver) allocateRings(ctx context.Context, s *sliceState) error {
	c := d.freshCmd()
	c.d0 = uint32(s.idx)
	err := d.sendCmd(ctx, CmdGetSendRingSize, &c, false)
	if isFatal(err) {
		return err
	}
	txSize := c.d0
	c.d0 = uint32(s.idx)
	if e := d.sendCmd(ctx, CmdGetRxRingSize, &c, false); err == nil || isFatal(e) {
		err = e
	}
	if err != nil {
		return err
	}
	rxSize := c.d0
	if err := d.checkRingSize(CmdGetSendRingSize, txSize, 16); err != nil {
		return err
	}
	if err := d.checkRingSize(CmdGetRxRingSize, rxSize, recvDescSize); err != nil {
		return err
	}
	if 2*int(rxSize/recvDescSize) > d.maxIntr {
		return d.violation("GET_RX_RING_SIZE for slice %d says %d entries per ring, but the rx_done ring was sized for %d at probe: "+
			"two full rings could overflow it", s.idx, rxSize/recvDescSize, d.maxIntr)
	}
	for _, chk := range []struct {
		cmd  Cmd
		off  uint64
		size uint32
	}{{CmdGetSendOffset, s.tx.lanai, txSize}, {CmdGetSmallRxOffset, s.small.lanai, rxSize}, {CmdGetBigRxOffset, s.big.lanai, rxSize}} {
		if chk.cmd == CmdGetSendOffset && s.idx != 0 && d.numTxQueues <= 1 {
			continue
		}
		if err := d.checkOffset(chk.cmd, uint32(chk.off), int(chk.size)); err != nil {
			return err
		}
	}
	tx := int(txSize / 16)
	rx := int(rxSize / recvDescSize)
	s.tx.mask = tx - 1
	s.tx.info = make([]txInfo, tx)
	s.tx.queueActive = false
	for _, r := range []*rxRing{&s.small, &s.big} {
		r.mask = rx - 1
		r.shadow = make([][recvDescSize]byte, rx)
		r.info = make([]rxBufInfo, rx)
		r.cnt, r.fill = 0, 0
		r.page, r.pageOff = nil, pageSize
	}
	s.small.bytes = d.smallBytes + rxPad
	s.big.bytes = d.bigBytes
	if d.smallBytes == 0 {
		s.small.fill = s.small.mask + 1
	} else if err := d.allocRxPages(&s.small); err != nil {
		d.freeRings(s)
		return err
	}
	if err := d.allocRxPages(&s.big); err != nil {
		d.freeRings(s)
		return err
	}
	return nil
}

// freeRings is myri10ge_free_rings: unposted buffers are unmapped, and
// unfinished transmits are freed and counted as dropped.
func (d *Driver) freeRings(s *sliceState) {
	if s.tx.info == nil {
		return
	}
	for _, r := range []*rxRing{&s.big, &s.small} {
		if r == &s.small && d.smallBytes == 0 {
			r.fill = r.cnt
		}
		for i := r.cnt; i < r.fill; i++ {
			d.releasePage(r.info[i&r.mask].page)
		}
		d.releasePage(r.page)
		r.page = nil
		r.info, r.shadow = nil, nil
		r.cnt, r.fill = 0, 0
	}
	t := &s.tx
	for t.done != t.req {
		inf := &t.info[t.done&t.mask]
		if inf.pkt {
			s.txDropped++
			d.stats.TxDropped++
		}
		for _, b := range inf.bufs {
			d.mem.Free(b)
		}
		*inf = txInfo{}
		t.done++
	}
	t.info = nil
}

// multicastList is the interface's multicast list (Options.Multicast).
func (d *Driver) multicastList() []net.HardwareAddr {
	if d.mcast != nil {
		return d.mcast
	}
	if d.opts.Multicast != nil {
		return d.opts.Multicast
	}
	return []net.HardwareAddr{
		{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01},             // IPv4 all-hosts
		{0x33, 0x33, 0x00, 0x00, 0x00, 0x01},             // IPv6 all-nodes
		{0x33, 0x33, 0xff, d.mac[3], d.mac[4], d.mac[5]}, // solicited-node of fe80::EUI-64
	}
}
