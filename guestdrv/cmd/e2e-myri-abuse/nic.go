package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/guestdrv/guest"
)

// The Myri-10G interface as the driver sees it, in the words of
// shared/reference/myri10ge-device-interface.md (cited as §N), comes from
// package abi, the numbers the device model uses too: the guest checks the
// device's behaviour, and the oracle device/myri10ge/myritest keeps the
// independent copy of the numbers.

// Timeouts: the device answers a command while handling the mailbox store
// and completes a send at its doorbell, so its own answers come within
// cmdTimeout; a reply from another guest crosses two TCG guests.
const (
	cmdTimeout   = 1 * time.Second
	blockTimeout = 1 * time.Second
	netTimeout   = 5 * time.Second
	// quiet is how long to watch for something that must not happen.
	quiet = 300 * time.Millisecond
)

// nic is the function, its BAR0 and the guest memory a driver would give
// it: one page for the command response and the interrupt block, one for
// the rx_done ring, one for frames to send, and small receive buffers.
type nic struct {
	dev  guest.PCIDev
	bar  *guest.BAR
	mem  *guest.DMABuffer
	mac  [6]byte
	slot int // send slot for the next frame (tx page cut in 256-byte slots)

	// Offsets and sizes the device answered at the last bring-up (§2.2).
	sendRing, smallRing, bigRing, irqAck uint64
	sendEntries, rxEntries               int

	// Guest bookkeeping since the last RESET.
	txIdx    int    // the device's send consumer index, as the guest tracks it
	sent     uint32 // packets the device must count in send_done_count
	rxSlot   int    // next rx_done slot to look at
	rxPosted int    // receive entries posted (in order)
}

// Pages of the DMA buffer.
const (
	pageCtrl   = 0 // response at 0, interrupt block at ctrlStats
	pageRxDone = 1
	pageTx     = 2
	pageRx     = 3 // rxPages pages of small receive buffers
	rxPages    = 16
	numPages   = pageRx + rxPages

	ctrlStats    = 0x100
	rxDoneSlots  = guest.PageSize / 4 // SET_INTRQ_SIZE: one page of 4-byte slots
	rxBufSize    = 128                // small_bytes + 2 (§5.2)
	smallBytes   = rxBufSize - 2
	rxBufs       = rxPages * guest.PageSize / rxBufSize
	txSlotSize   = 256
	txSlots      = guest.PageSize / txSlotSize
	maxFrameSize = 1518
)

func (n *nic) respAddr() uint64  { return n.mem.Phys(pageCtrl) }
func (n *nic) statsAddr() uint64 { return n.mem.Phys(pageCtrl) + ctrlStats }
func (n *nic) rxDoneAddr() uint64 {
	return n.mem.Phys(pageRxDone)
}

// rxBuf is the address and the guest's view of small receive buffer i.
func (n *nic) rxBuf(i int) (uint64, []byte) {
	i %= rxBufs
	page, off := pageRx+i*rxBufSize/guest.PageSize, i*rxBufSize%guest.PageSize
	return n.mem.Phys(page) + uint64(off), n.mem.Page(page)[off : off+rxBufSize]
}

// Guest memory the device writes is read and written with atomic word
// accesses, so the polls below see its DMA.
func word(b []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

func loadBE32(b []byte, off int) uint32 {
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], atomic.LoadUint32(word(b, off)))
	return binary.BigEndian.Uint32(w[:])
}

func storeBE32(b []byte, off int, v uint32) {
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], v)
	atomic.StoreUint32(word(b, off), binary.NativeEndian.Uint32(w[:]))
}

// BAR0 stores are plain single stores of 4 or 8 bytes, as the driver's
// put_be32 and __iowrite64_copy (§2.3). noinline keeps the compiler from
// merging or dropping any of them.
//
//go:noinline
func (n *nic) store64(off uint64, b []byte) {
	*(*uint64)(unsafe.Pointer(&n.bar.Mem[off])) = binary.NativeEndian.Uint64(b)
}

//go:noinline
func (n *nic) store32(off uint64, b []byte) {
	*(*uint32)(unsafe.Pointer(&n.bar.Mem[off])) = binary.NativeEndian.Uint32(b)
}

func (n *nic) putBE32(off uint64, v uint32) {
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], v)
	n.store32(off, w[:])
}

// getBE32 reads a BAR0 word (BAR0 reads have memory semantics, §2.3).
func (n *nic) getBE32(off uint64) uint32 {
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], n.bar.Read32(off))
	return binary.BigEndian.Uint32(w[:])
}

// readBAR copies len(p) bytes of BAR0 at off (a multiple of 4).
func (n *nic) readBAR(off uint64, p []byte) {
	for i := 0; i < len(p); i += 4 {
		binary.NativeEndian.PutUint32(p[i:], n.bar.Read32(off+uint64(i)))
	}
}

// readMAC finds the permanent MAC in the EEPROM strings (§3.1, §3.3).
func (n *nic) readMAC() error {
	hdr := uint64(n.getBE32(abi.OffHeaderPtr) & 0xFFFFC)
	specs := uint64(n.getBE32(hdr + abi.HdrOffStringSpecs))
	if specs <= 0x100000 || specs+abi.EEPROMStringsSize > abi.BAR0Size {
		return fmt.Errorf("string_specs %#x (header at %#x) outside (1 MiB, BAR0 end - 256]", specs, hdr)
	}
	var raw [abi.EEPROMStringsSize]byte
	n.readBAR(specs, raw[:])
	for _, s := range strings.Split(string(raw[:]), "\x00") {
		if v, ok := strings.CutPrefix(s, "MAC="); ok {
			var m [6]byte
			if _, err := fmt.Sscanf(v, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]); err != nil {
				return fmt.Errorf("EEPROM %q: %v", s, err)
			}
			n.mac = m
			return nil
		}
	}
	return fmt.Errorf("no MAC= in the EEPROM strings at %#x", specs)
}

// postCommand PIO-writes the mailbox as eight 8-byte stores (§4.1) after
// presetting the guest's response buffer to "no response yet".
func (n *nic) postCommand(resp uint64, c abi.Cmd, d0, d1, d2 uint32) {
	ctrl := n.mem.Page(pageCtrl)
	storeBE32(ctrl, 0, 0)
	storeBE32(ctrl, 4, uint32(abi.StatusNoResponse))
	var blk [abi.BlockSize]byte
	be := binary.BigEndian
	be.PutUint32(blk[0x00:], uint32(c))
	be.PutUint32(blk[0x04:], d0)
	be.PutUint32(blk[0x08:], d1)
	be.PutUint32(blk[0x0C:], d2)
	be.PutUint32(blk[0x10:], uint32(resp>>32))
	be.PutUint32(blk[0x14:], uint32(resp))
	for i := 0; i < abi.BlockSize; i += 8 {
		n.store64(abi.OffCmd+uint64(i), blk[i:i+8])
	}
}

// command runs one command and returns the response's data and result.
// The error is set only when no response came within cmdTimeout.
func (n *nic) command(c abi.Cmd, d0, d1, d2 uint32) (uint32, abi.Status, error) {
	n.postCommand(n.respAddr(), c, d0, d1, d2)
	ctrl := n.mem.Page(pageCtrl)
	deadline := time.Now().Add(cmdTimeout)
	for {
		// result first, then data: the device writes data first (§4.1).
		if r := abi.Status(loadBE32(ctrl, 4)); r != abi.StatusNoResponse {
			return loadBE32(ctrl, 0), r, nil
		}
		if time.Now().After(deadline) {
			return 0, abi.StatusNoResponse, fmt.Errorf("%v: no response within %v", c, cmdTimeout)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// mustCommand runs a command that must answer OK.
func (n *nic) mustCommand(c abi.Cmd, d0, d1, d2 uint32) (uint32, error) {
	v, st, err := n.command(c, d0, d1, d2)
	if err != nil {
		return 0, err
	}
	if st != abi.StatusOK {
		return 0, fmt.Errorf("%v(%#x, %#x, %#x): %v, want OK", c, d0, d1, d2, st)
	}
	return v, nil
}

// irqBlock is a copy of the interrupt block the device DMA'd.
type irqBlock [abi.IRQDataSize]byte

func (b *irqBlock) be32(off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }
func (b *irqBlock) sendDone() uint32    { return b.be32(abi.IRQOffSendDoneCount) }
func (b *irqBlock) linkUp() uint32      { return b.be32(abi.IRQOffLinkUp) }
func (b *irqBlock) noSmall() uint32     { return b.be32(abi.IRQOffDroppedNoSmall) }
func (b *irqBlock) valid() byte         { return b[abi.IRQDataSize-1] }

// takeBlock returns the block if the device wrote one (valid != 0), and
// then does what the driver's ISR and NAPI do with it: clear valid and
// hand both tokens back (claim words 0 and 1, §6.2).
func (n *nic) takeBlock() (*irqBlock, bool) {
	ctrl := n.mem.Page(pageCtrl)
	if loadBE32(ctrl, ctrlStats+abi.IRQOffFlagsWord)&0xFF == 0 {
		return nil, false
	}
	var b irqBlock
	for o := 0; o < abi.IRQDataSize; o += 4 {
		binary.BigEndian.PutUint32(b[o:], loadBE32(ctrl, ctrlStats+o))
	}
	storeBE32(ctrl, ctrlStats+abi.IRQOffFlagsWord, 0)
	n.putBE32(n.irqAck, 3)
	n.putBE32(n.irqAck+4, 3)
	return &b, true
}

// awaitBlock takes blocks until one satisfies ok, for at most d.
func (n *nic) awaitBlock(d time.Duration, what string, ok func(*irqBlock) bool) (*irqBlock, error) {
	deadline := time.Now().Add(d)
	var last *irqBlock
	for {
		if b, got := n.takeBlock(); got {
			last = b
			if ok(b) {
				return b, nil
			}
			continue
		}
		if time.Now().After(deadline) {
			if last == nil {
				return nil, fmt.Errorf("%s: no interrupt block within %v", what, d)
			}
			return last, fmt.Errorf("%s: not seen within %v (last block: send_done_count %d, link_up %d, valid %#x)",
				what, d, last.sendDone(), last.linkUp(), last.valid())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// noBlock checks that the device writes no interrupt block for d.
func (n *nic) noBlock(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if b, got := n.takeBlock(); got {
			return fmt.Errorf("the device wrote an interrupt block (send_done_count %d, valid %#x)", b.sendDone(), b.valid())
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// bringUp is the driver's reset and open (§4.4) with one slice and no
// firmware file: RESET, the interrupt queue, the claim and coalescing
// offsets, the MAC, the rings (rx posts the receive buffers), the interrupt
// block, MTU and buffer sizes, ETHERNET_UP; then it takes the link report.
func (n *nic) bringUp(rx func() error) error {
	clear(n.mem.Page(pageRxDone))
	clear(n.mem.Page(pageCtrl)[ctrlStats : ctrlStats+abi.IRQDataSize])
	n.txIdx, n.sent, n.rxSlot, n.rxPosted = 0, 0, 0, 0
	v, err := n.mustCommand(abi.CmdReset, 0, 0, 0)
	if err != nil {
		return err
	}
	if v%4 != 0 || v/4 < abi.RecvGroup {
		return fmt.Errorf("RESET: interrupt queue of %d bytes", v)
	}
	rxd := n.rxDoneAddr()
	var sizes [2]uint32
	steps := []struct {
		c          abi.Cmd
		d0, d1, d2 uint32
		out        *uint64
		out32      *uint32
	}{
		{c: abi.CmdSetIntrqSize, d0: rxDoneSlots * 4},
		{c: abi.CmdSetIntrqDMA, d0: uint32(rxd), d1: uint32(rxd >> 32)},
		{c: abi.CmdGetIRQAckOffset, out: &n.irqAck},
		{c: abi.CmdGetIRQDeassertOffset},
		{c: abi.CmdGetIntrCoalDelayOffset},
		{c: abi.CmdSetMACAddress, d0: binary.BigEndian.Uint32(n.mac[:4]), d1: uint32(binary.BigEndian.Uint16(n.mac[4:]))},
		{c: abi.CmdDisablePromisc},
		{c: abi.CmdGetSendOffset, out: &n.sendRing},
		{c: abi.CmdGetSmallRxOffset, out: &n.smallRing},
		{c: abi.CmdGetBigRxOffset, out: &n.bigRing},
		{c: abi.CmdGetSendRingSize, out32: &sizes[0]},
		{c: abi.CmdGetRxRingSize, out32: &sizes[1]},
	}
	for _, s := range steps {
		v, err := n.mustCommand(s.c, s.d0, s.d1, s.d2)
		if err != nil {
			return err
		}
		if s.c == abi.CmdGetIntrCoalDelayOffset {
			if uint64(v)+4 > abi.BAR0Size {
				return fmt.Errorf("%v: %#x is outside BAR0", s.c, v)
			}
			n.putBE32(uint64(v), 75) // the driver's default delay, µs
		}
		if s.out != nil {
			*s.out = uint64(v)
		}
		if s.out32 != nil {
			*s.out32 = v
		}
	}
	n.sendEntries, n.rxEntries = int(sizes[0]/abi.SendDescSize), int(sizes[1]/abi.RecvDescSize)
	for _, r := range []struct {
		name  string
		off   uint64
		bytes uint32
	}{{"send ring", n.sendRing, sizes[0]}, {"small ring", n.smallRing, sizes[1]}, {"big ring", n.bigRing, sizes[1]}, {"claim words", n.irqAck, 8}} {
		if r.bytes == 0 || r.off+uint64(r.bytes) > abi.BAR0Size {
			return fmt.Errorf("%s of %d bytes at %#x: not inside BAR0", r.name, r.bytes, r.off)
		}
	}
	if n.rxEntries < rxBufs || n.rxEntries%rxBufs != 0 {
		return fmt.Errorf("receive rings of %d entries; this program needs a multiple of %d", n.rxEntries, rxBufs)
	}
	if err := rx(); err != nil {
		return err
	}
	st := n.statsAddr()
	for _, s := range []struct {
		c          abi.Cmd
		d0, d1, d2 uint32
	}{
		{abi.CmdSetStatsDMAV2, uint32(st), uint32(st >> 32), abi.IRQDataSize},
		{abi.CmdSetMTU, maxFrameSize, 0, 0},
		{abi.CmdSetSmallBufferSize, smallBytes, 0, 0},
		{abi.CmdSetBigBufferSize, 2048, 0, 0},
		{abi.CmdSetTSOMode, 0, 0, 0},
		{abi.CmdEthernetUp, 0, 0, 0},
		{abi.CmdDisableAllMulti, 0, 0, 0}, // broadcasts only: less traffic to sort
	} {
		if _, err := n.mustCommand(s.c, s.d0, s.d1, s.d2); err != nil {
			return err
		}
	}
	if _, err := n.awaitBlock(blockTimeout, "link report after ETHERNET_UP", func(b *irqBlock) bool { return b.linkUp() == 1 }); err != nil {
		return err
	}
	return nil
}

// fillRx posts every small receive buffer, in order.
func (n *nic) fillRx() error {
	for n.rxPosted < rxBufs {
		n.postGroup(n.rxPosted/abi.RecvGroup, func(i int) uint64 { a, _ := n.rxBuf(i); return a })
		n.rxPosted += abi.RecvGroup
	}
	return nil
}

// postGroup posts group g of the small ring the driver's way (§5.2): the
// group with the first addr_low set to 0xFFFFFFFF as two 32-byte copies,
// then the real addr_low as one 4-byte store, the doorbell. addr gives
// the buffer of entry i.
func (n *nic) postGroup(g int, addr func(i int) uint64) {
	var b [abi.RecvGroup * abi.RecvDescSize]byte
	for j := range abi.RecvGroup {
		a := addr(g*abi.RecvGroup + j)
		binary.BigEndian.PutUint32(b[j*8:], uint32(a>>32))
		binary.BigEndian.PutUint32(b[j*8+4:], uint32(a))
	}
	low := append([]byte(nil), b[4:8]...)
	binary.BigEndian.PutUint32(b[4:], abi.RecvInvalidLow)
	off := n.smallRing + uint64(g%(n.rxEntries/abi.RecvGroup))*uint64(len(b))
	for i := 0; i < len(b); i += 8 {
		n.store64(off+uint64(i), b[i:i+8])
	}
	n.store32(off+4, low)
}

// desc builds a send descriptor (§5.4).
func desc(addr uint64, length, pseudo int, rdma, cksumOff, flags uint8) [abi.SendDescSize]byte {
	var d [abi.SendDescSize]byte
	be := binary.BigEndian
	be.PutUint32(d[0:], uint32(addr>>32))
	be.PutUint32(d[4:], uint32(addr))
	be.PutUint16(d[8:], uint16(pseudo))
	be.PutUint16(d[10:], uint16(length))
	d[13], d[14], d[15] = rdma, cksumOff, flags
	return d
}

// post writes a chain at the guest's send index the driver's way (§5.4):
// the descriptors forward as 8-byte stores with the first one's flags 0,
// then bytes 12..15 of the first one as one 4-byte store, the doorbell.
// It returns the ring index of the first descriptor.
func (n *nic) post(descs ...[abi.SendDescSize]byte) (int, error) {
	idx := n.txIdx % n.sendEntries
	if idx+len(descs) >= n.sendEntries-1 {
		return 0, errors.New("send ring would wrap; this program posts fewer packets between resets")
	}
	for j, d := range descs {
		if j == 0 {
			d[abi.SendOffFlags] = 0
		}
		off := n.sendRing + uint64(idx+j)*abi.SendDescSize
		n.store64(off, d[0:8])
		n.store64(off+8, d[8:16])
	}
	n.store32(n.sendRing+uint64(idx)*abi.SendDescSize+12, descs[0][12:16])
	return idx, nil
}

// ring reads k descriptors of the send ring from index idx.
func (n *nic) ring(idx, k int) []byte {
	b := make([]byte, k*abi.SendDescSize)
	n.readBAR(n.sendRing+uint64(idx)*abi.SendDescSize, b)
	return b
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// consumed checks that the device took the k descriptors at idx: it
// zeroes every descriptor it consumes (§5.4 step 1.6).
func (n *nic) consumed(idx, k int) error {
	deadline := time.Now().Add(cmdTimeout)
	for {
		r := n.ring(idx, k)
		if zero(r) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %d descriptors at send index %d are still in BAR0 after %v: % x", k, idx, cmdTimeout, r)
		}
		time.Sleep(time.Millisecond)
	}
}

// txFrame copies f into the next send slot and returns its address.
func (n *nic) txFrame(f []byte) uint64 {
	s := n.slot % txSlots
	n.slot++
	copy(n.mem.Page(pageTx)[s*txSlotSize:(s+1)*txSlotSize], f)
	return n.mem.Phys(pageTx) + uint64(s*txSlotSize)
}

// send posts a chain the device must consume (zeroing it) and count once
// in send_done_count, and returns the interrupt block that reports it.
func (n *nic) send(descs ...[abi.SendDescSize]byte) (*irqBlock, error) {
	idx, err := n.post(descs...)
	if err != nil {
		return nil, err
	}
	n.txIdx += len(descs)
	n.sent++
	if err := n.consumed(idx, len(descs)); err != nil {
		return nil, err
	}
	want := n.sent
	b, err := n.awaitBlock(blockTimeout, fmt.Sprintf("send_done_count %d", want), func(b *irqBlock) bool { return b.sendDone() >= want })
	if err != nil {
		return nil, err
	}
	if b.sendDone() != want {
		return nil, fmt.Errorf("send_done_count %d, want %d", b.sendDone(), want)
	}
	return b, nil
}

// sendFrame sends one well-formed frame in one descriptor.
func (n *nic) sendFrame(f []byte) (*irqBlock, error) {
	return n.send(desc(n.txFrame(f), len(f), 0, 1, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall))
}

// receive looks at every rx_done slot the device filled (§5.3), hands
// each frame to match, zeroes the slot and reposts buffers as a group
// frees up. It returns true if match did.
func (n *nic) receive(match func(f []byte) bool) bool {
	done := n.mem.Page(pageRxDone)
	found := false
	for {
		off := n.rxSlot % rxDoneSlots * 4
		w := loadBE32(done, off)
		length := int(w & 0xFFFF)
		if length == 0 {
			return found
		}
		_, buf := n.rxBuf(n.rxSlot)
		if length <= smallBytes && match(append([]byte(nil), buf[2:2+length]...)) {
			found = true
		}
		storeBE32(done, off, 0)
		n.rxSlot++
		for n.rxPosted+abi.RecvGroup-n.rxSlot <= rxBufs {
			n.postGroup(n.rxPosted/abi.RecvGroup, func(i int) uint64 { a, _ := n.rxBuf(i); return a })
			n.rxPosted += abi.RecvGroup
		}
	}
}

// quietAfterHalt checks the device's silence once a slice has halted: a
// block written before the halt may still be unread (its send_done_count
// must not pass sdc); after it, nothing.
func (n *nic) quietAfterHalt(sdc uint32) error {
	if b, got := n.takeBlock(); got && b.sendDone() > sdc {
		return fmt.Errorf("send_done_count %d in the last block, want at most %d", b.sendDone(), sdc)
	}
	if err := n.noBlock(quiet); err != nil {
		return fmt.Errorf("after the DMA abort: %w; want none", err)
	}
	return nil
}
