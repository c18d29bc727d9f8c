package myri10ge_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
)

// Where a guest points the device when it points it outside its RAM.
const outsideRAM = 0x7_0000_0000

// BAR0 offsets the raw guest writes (§2).
const (
	bar0SendRing  = 0x200000
	bar0SmallRing = 0x300000
	bar0BigRing   = 0x340000
	bar0Claim     = 0x3E0000
	bar0Cmd       = 0xF80000
)

var macC = net.HardwareAddr{0x02, 0x60, 0xdd, 0x00, 0x00, 0x03}

// rawGuest programs a NIC with raw stores, as a buggy or hostile driver.
type rawGuest struct {
	t   *testing.T
	ctx context.Context
	n   *nicNode

	resp, rxDone, stats uint64 // response buffer, rx_done ring, interrupt block
	txBuf               uint64 // a page for frames to send
	rxBufs              uint64 // 64 pages: receive buffers, 2 KiB each
	txIdx               int    // the device's send consumer index, as the guest tracks it
	slot                int    // next rx_done slot
}

const rawSlots = 1024

func newRawGuest(t *testing.T, ctx context.Context, n *nicNode) *rawGuest {
	t.Helper()
	g := &rawGuest{t: t, ctx: ctx, n: n}
	for _, a := range []struct {
		p    *uint64
		size int
	}{{&g.resp, 8}, {&g.rxDone, rawSlots * 4}, {&g.stats, 64}, {&g.txBuf, 4096}, {&g.rxBufs, 64 * 4096}} {
		addr, err := n.mem.Alloc(a.size, 4096)
		if err != nil {
			t.Fatal(err)
		}
		*a.p = addr
	}
	// pci_enable_device and pci_set_master, by hand.
	cmd, err := n.c.ReadConfig(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.c.WriteConfig(4, []byte{cmd[0] | 0x06, cmd[1]}); err != nil {
		t.Fatal(err)
	}
	if err := n.bus.Enable(myritest.ModeMSI, 1); err != nil {
		t.Fatal(err)
	}
	return g
}

// bytesAt is the guest's view of n bytes at addr.
func (g *rawGuest) bytesAt(addr uint64, n int) []byte {
	b, err := g.n.mem.Bytes(addr, n)
	if err != nil {
		g.t.Fatal(err)
	}
	return b
}

// word returns the guest word at addr for atomic access.
func (g *rawGuest) word(addr uint64) *uint32 {
	return (*uint32)(unsafe.Pointer(&g.bytesAt(addr, 4)[0]))
}

func (g *rawGuest) load32(addr uint64) uint32 { return be32At(g.n.mem, addr) }

// store is one posted BAR0 store.
func (g *rawGuest) store(off uint64, b []byte) {
	g.t.Helper()
	if err := g.n.c.PostWriteRegion(0, off, b); err != nil {
		g.t.Fatalf("BAR0 store %d@%#x: %v", len(b), off, err)
	}
}

func (g *rawGuest) put32(off uint64, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	g.store(off, b[:])
}

// sync returns once the device has handled every earlier store.
func (g *rawGuest) sync() {
	g.t.Helper()
	if err := g.n.c.Sync(); err != nil {
		g.t.Fatal(err)
	}
}

// cmdBlock is the 64-byte mailbox block of a command (mcp_cmd, §4.1).
func cmdBlock(c abi.Cmd, d0, d1, d2 uint32, resp uint64) [64]byte {
	var blk [64]byte
	be := binary.BigEndian
	for i, w := range []uint32{uint32(c), d0, d1, d2, uint32(resp >> 32), uint32(resp)} {
		be.PutUint32(blk[4*i:], w)
	}
	return blk
}

// cmdAt sends a command whose response goes to resp and returns what the
// guest's response buffer holds once the device handled the store (the
// device answers before the store completes: no waiting).
func (g *rawGuest) cmdAt(resp uint64, c abi.Cmd, d0, d1, d2 uint32) (uint32, abi.Status) {
	g.t.Helper()
	atomic.StoreUint32(g.word(g.resp), 0)
	atomic.StoreUint32(g.word(g.resp+4), 0xFFFFFFFF)
	blk := cmdBlock(c, d0, d1, d2, resp)
	for i := 0; i < 64; i += 8 {
		g.store(bar0Cmd+uint64(i), blk[i:i+8])
	}
	g.sync()
	return g.load32(g.resp), abi.Status(g.load32(g.resp + 4))
}

func (g *rawGuest) cmd(c abi.Cmd, d0, d1, d2 uint32) (uint32, abi.Status) {
	g.t.Helper()
	return g.cmdAt(g.resp, c, d0, d1, d2)
}

// mustCmd sends a command that must succeed.
func (g *rawGuest) mustCmd(c abi.Cmd, d0, d1, d2 uint32) uint32 {
	g.t.Helper()
	v, st := g.cmd(c, d0, d1, d2)
	if st != abi.StatusOK {
		g.t.Fatalf("%s: %s", c, st)
	}
	return v
}

// setup resets the NIC and brings it up the right way, with the interrupt
// block at stats (or where statsAt says): RESET, queue size and address,
// block, sizes, ETHERNET_UP; then it handles the link interrupt.
func (g *rawGuest) setup(statsAt, rxDoneAt uint64) {
	g.t.Helper()
	clear(g.bytesAt(g.rxDone, rawSlots*4))
	clear(g.bytesAt(g.stats, 64))
	g.txIdx, g.slot = 0, 0
	g.drainIRQ()
	g.mustCmd(abi.CmdReset, 0, 0, 0)
	g.mustCmd(abi.CmdSetIntrqSize, rawSlots*4, 0, 0)
	g.mustCmd(abi.CmdSetIntrqDMA, uint32(rxDoneAt), uint32(rxDoneAt>>32), 0)
	g.mustCmd(abi.CmdSetStatsDMAV2, uint32(statsAt), uint32(statsAt>>32), 64)
	g.mustCmd(abi.CmdSetMTU, 1518, 0, 0)
	g.mustCmd(abi.CmdSetSmallBufferSize, 126, 0, 0)
	g.mustCmd(abi.CmdSetBigBufferSize, 2048, 0, 0)
	g.mustCmd(abi.CmdEthernetUp, 0, 0, 0)
	if statsAt == g.stats {
		blk := g.intr()
		if l := binary.BigEndian.Uint32(blk[blkLinkUp:]); l != 1 {
			g.t.Fatalf("link report with link_up %d", l)
		}
		g.claim(1)
	}
}

// restart moves the guest to subtest t and brings the NIC up afresh,
// which recovers it from whatever the subtest before left.
func (g *rawGuest) restart(t *testing.T) {
	g.t = t
	g.setup(g.stats, g.rxDone)
}

// drainIRQ forgets a signal left from an earlier step.
func (g *rawGuest) drainIRQ() {
	ctx, cancel := context.WithTimeout(g.ctx, time.Millisecond)
	defer cancel()
	g.n.bus.Wait(ctx, 0)
}

// intr waits for the MSI and returns the interrupt block, then clears
// valid as the driver's handler does (no claim).
func (g *rawGuest) intr() []byte {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	if err := g.n.bus.Wait(ctx, 0); err != nil {
		g.t.Fatalf("no interrupt: %v (NIC counters %+v)", err, g.n.nic.Stats())
	}
	blk := make([]byte, 64)
	for o := 0; o < 64; o += 4 {
		binary.BigEndian.PutUint32(blk[o:], g.load32(g.stats+uint64(o)))
	}
	if blk[0x3F] == 0 {
		g.t.Fatalf("interrupt with valid 0 in the block")
	}
	atomic.StoreUint32(g.word(g.stats+blkFlags), 0)
	return blk
}

// noIntr checks that no interrupt comes within d.
func (g *rawGuest) noIntr(d time.Duration, what string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(g.ctx, d)
	defer cancel()
	if err := g.n.bus.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		g.t.Errorf("%s: an interrupt (%v); want none", what, err)
	}
}

// claim writes claim word w (0: RX token, 1: IRQ token) of slice 0.
func (g *rawGuest) claim(w int) {
	g.put32(bar0Claim+4*uint64(w), 3)
}

// postRx posts receive buffers of group grp the driver's way: the group
// with the first addr_low invalid, then the real addr_low.
func (g *rawGuest) postRx(big bool, grp int, addr func(i int) uint64) {
	ring := uint64(bar0SmallRing)
	if big {
		ring = bar0BigRing
	}
	b, low := rxGroup(addr, grp*8)
	off := ring + uint64(grp)*64
	g.store(off, b[:32])
	g.store(off+32, b[32:])
	g.put32(off+4, low)
	g.sync() // posted before the test's next frame arrives by another path
}

// rxGroup is a group of 8 receive descriptors for buffers addr(first) to
// addr(first+7), as the driver writes it first: big-endian high and low
// words with the first low word invalid (0xFFFFFFFF); low is the real one,
// written last to hand the group to the NIC.
func rxGroup(addr func(i int) uint64, first int) (b [64]byte, low uint32) {
	for i := range 8 {
		a := addr(first + i)
		binary.BigEndian.PutUint32(b[i*8:], uint32(a>>32))
		binary.BigEndian.PutUint32(b[i*8+4:], uint32(a))
	}
	low = binary.BigEndian.Uint32(b[4:])
	binary.BigEndian.PutUint32(b[4:], 0xFFFFFFFF)
	return b, low
}

// rxBuf is receive buffer i (2 KiB each).
func (g *rawGuest) rxBuf(i int) uint64 { return g.rxBufs + uint64(i)*2048 }

// send posts descs at the guest's send index in the driver's store order
// and advances the index by consumed, what the device will take.
func (g *rawGuest) send(descs [][16]byte, consumed int) {
	for _, s := range myritest.SubmitOrder(bar0SendRing, 1024, g.txIdx, descs) {
		g.store(s.Off, s.Data)
	}
	g.txIdx += consumed
}

// frameTo puts a frame from the NIC to dst in the guest's send buffer and
// returns it.
func (g *rawGuest) frameTo(dst net.HardwareAddr, n int, seed byte) []byte {
	f := retarget(sizedFrame(g.t, n, seed), dst, g.n.mac)
	copy(g.bytesAt(g.txBuf, len(f)), f)
	return f
}

// rxDoneSlot returns the next rx_done slot (checksum, length) once the
// device filled it.
func (g *rawGuest) rxDoneSlot() (uint16, uint16) {
	w := g.load32(g.rxDone + uint64(g.slot%rawSlots)*4)
	g.slot++
	return uint16(w >> 16), uint16(w)
}
