package myri10ge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
)

// A guest that misprograms the card: raw BAR0 stores over the vfio-user
// client, not the fake driver's well-behaved paths. Each mistake gets the
// device's error behaviour (a status, a dropped chain, a halted slice), a
// counter and a log line; the server never panics, and two other NICs on
// the same switch, served by the same process, keep passing traffic.

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
func cmdBlock(c myri10ge.Cmd, d0, d1, d2 uint32, resp uint64) [64]byte {
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
func (g *rawGuest) cmdAt(resp uint64, c myri10ge.Cmd, d0, d1, d2 uint32) (uint32, myri10ge.Status) {
	g.t.Helper()
	atomic.StoreUint32(g.word(g.resp), 0)
	atomic.StoreUint32(g.word(g.resp+4), 0xFFFFFFFF)
	blk := cmdBlock(c, d0, d1, d2, resp)
	for i := 0; i < 64; i += 8 {
		g.store(bar0Cmd+uint64(i), blk[i:i+8])
	}
	g.sync()
	return g.load32(g.resp), myri10ge.Status(g.load32(g.resp + 4))
}

func (g *rawGuest) cmd(c myri10ge.Cmd, d0, d1, d2 uint32) (uint32, myri10ge.Status) {
	g.t.Helper()
	return g.cmdAt(g.resp, c, d0, d1, d2)
}

// mustCmd sends a command that must succeed.
func (g *rawGuest) mustCmd(c myri10ge.Cmd, d0, d1, d2 uint32) uint32 {
	g.t.Helper()
	v, st := g.cmd(c, d0, d1, d2)
	if st != myri10ge.StatusOK {
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
	g.mustCmd(myri10ge.CmdReset, 0, 0, 0)
	g.mustCmd(myri10ge.CmdSetIntrqSize, rawSlots*4, 0, 0)
	g.mustCmd(myri10ge.CmdSetIntrqDMA, uint32(rxDoneAt), uint32(rxDoneAt>>32), 0)
	g.mustCmd(myri10ge.CmdSetStatsDMAV2, uint32(statsAt), uint32(statsAt>>32), 64)
	g.mustCmd(myri10ge.CmdSetMTU, 1518, 0, 0)
	g.mustCmd(myri10ge.CmdSetSmallBufferSize, 126, 0, 0)
	g.mustCmd(myri10ge.CmdSetBigBufferSize, 2048, 0, 0)
	g.mustCmd(myri10ge.CmdEthernetUp, 0, 0, 0)
	if statsAt == g.stats {
		blk := g.intr()
		if l := binary.BigEndian.Uint32(blk[blkLinkUp:]); l != 1 {
			g.t.Fatalf("link report with link_up %d", l)
		}
		g.claim(1)
	}
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

// statsDelta is the change in a NIC's counters.
func statsDelta(a, b myri10ge.Stats) myri10ge.Stats {
	return myri10ge.Stats{
		Commands: b.Commands - a.Commands, UnknownCmds: b.UnknownCmds - a.UnknownCmds, FailedCmds: b.FailedCmds - a.FailedCmds,
		TxPackets: b.TxPackets - a.TxPackets, TxFrames: b.TxFrames - a.TxFrames, TxBytes: b.TxBytes - a.TxBytes,
		TxDropped: b.TxDropped - a.TxDropped, RxFrames: b.RxFrames - a.RxFrames, RxBytes: b.RxBytes - a.RxBytes,
		RxDropped: b.RxDropped - a.RxDropped, Interrupts: b.Interrupts - a.Interrupts, GuestErrors: b.GuestErrors - a.GuestErrors,
		DMAErrors: b.DMAErrors - a.DMAErrors, Handoffs: b.Handoffs - a.Handoffs,
		LinkUpEvents: b.LinkUpEvents - a.LinkUpEvents, LinkDownEvents: b.LinkDownEvents - a.LinkDownEvents,
	}
}

// wantLog checks that the NIC logged msg at level after mark, with each
// field in fields (a string value matched as a substring).
func wantLog(t *testing.T, n *nicNode, mark int, level logrus.Level, msg string, fields map[string]string) {
	t.Helper()
	lines := n.logs.find(mark, level, msg)
	if len(lines) == 0 {
		t.Errorf("%s: no %s log line %q", n.name, level, msg)
		return
	}
	for k, v := range fields {
		if got := fmt.Sprint(lines[0].Fields[k]); !strings.Contains(got, v) {
			t.Errorf("%s: log line %q: field %s = %q, want it to contain %q", n.name, msg, k, got, v)
		}
	}
}

// traffic is two well-behaved NICs exchanging frames in the background.
type traffic struct {
	stop   atomic.Bool
	rounds atomic.Int64
	err    error
	done   chan struct{}
}

// exchange sends frames from one node to the other and checks they arrive.
func exchange(ctx context.Context, from, to *nicNode, frames [][]byte) error {
	for _, f := range frames {
		if err := from.drv.Xmit(0, myritest.FramePacket(f)); err != nil {
			return fmt.Errorf("%s: Xmit: %w", from.name, err)
		}
	}
	if _, err := from.drv.WaitTx(ctx, 0); err != nil {
		return fmt.Errorf("%s: WaitTx: %w", from.name, err)
	}
	got, err := to.drv.Receive(ctx, 0, len(frames))
	if err != nil {
		return fmt.Errorf("%s: Receive: %w", to.name, err)
	}
	if len(got) != len(frames) {
		return fmt.Errorf("%s: %d frames, want %d", to.name, len(got), len(frames))
	}
	for i, f := range got {
		if !bytes.Equal(f.Data, frames[i]) {
			return fmt.Errorf("%s: frame %d differs", to.name, i)
		}
	}
	return nil
}

func startTraffic(t *testing.T, ctx context.Context, b, c *nicNode) *traffic {
	tr := &traffic{done: make(chan struct{})}
	var frames [][]byte
	for i := range 16 {
		frames = append(frames, sizedFrame(t, 64+(i*97)%1400, byte(i)))
	}
	go func() {
		defer close(tr.done)
		for r := 0; !tr.stop.Load(); r++ {
			var bc, cb [][]byte
			for i := range 4 {
				f := frames[(r*4+i)%len(frames)]
				bc = append(bc, retarget(f, macC, macB))
				cb = append(cb, retarget(f, macB, macC))
			}
			if err := exchange(ctx, b, c, bc); err != nil {
				tr.err = err
				return
			}
			if err := exchange(ctx, c, b, cb); err != nil {
				tr.err = err
				return
			}
			tr.rounds.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	return tr
}

func TestStackMisprogramming(t *testing.T) {
	leaktest.Check(t)
	ctx := stackCtx(t, 120*time.Second)
	sw := newSwitch(t)
	m := newNode(t, sw, "myri0", macA, nodeOpts{drv: myritest.Options{MTU: 1500}})
	o := nodeOpts{drv: myritest.Options{MTU: 1500}}
	b := newNode(t, sw, "myri1", macB, o)
	c := newNode(t, sw, "myri2", macC, o)
	peer := newWirePeer(sw, "peer")
	b.up(ctx)
	c.up(ctx)
	tr := startTraffic(t, ctx, b, c)
	stopped := false
	stopTraffic := func() {
		if !stopped {
			stopped = true
			tr.stop.Store(true)
			<-tr.done
		}
	}
	defer stopTraffic()

	g := newRawGuest(t, ctx, m)
	peerFrame := func(n int, seed byte) []byte { return retarget(sizedFrame(t, n, seed), macA, macPeer) }

	t.Run("commands", func(t *testing.T) {
		g.t = t
		g.drainIRQ()
		mark := m.logs.mark()
		before := m.nic.Stats()
		steps := []struct {
			name           string
			cmd            myri10ge.Cmd
			d0, d1, d2     uint32
			want           myri10ge.Status
			guestErr, dmas uint64
		}{
			{"reset", myri10ge.CmdReset, 0, 0, 0, myri10ge.StatusOK, 0, 0},
			{"up before SET_INTRQ_DMA", myri10ge.CmdEthernetUp, 0, 0, 0, myri10ge.StatusErrorBusy, 1, 0},
			{"rx_done of an absent slice", myri10ge.CmdSetIntrqDMA, uint32(g.rxDone), 1, 5, myri10ge.StatusErrorRange, 1, 0},
			{"rx_done", myri10ge.CmdSetIntrqDMA, uint32(g.rxDone), 1, 0, myri10ge.StatusOK, 0, 0},
			{"up before SET_STATS_DMA", myri10ge.CmdEthernetUp, 0, 0, 0, myri10ge.StatusErrorBusy, 1, 0},
			{"interrupt block of 16 bytes", myri10ge.CmdSetStatsDMAV2, uint32(g.stats), 1, 16, myri10ge.StatusErrorRange, 1, 0},
			{"big buffers of 3000 bytes", myri10ge.CmdSetBigBufferSize, 3000, 0, 0, myri10ge.StatusErrorRange, 1, 0},
			{"MTU 20000", myri10ge.CmdSetMTU, 20000, 0, 0, myri10ge.StatusErrorRange, 1, 0},
			{"interrupt queue of 1000 bytes", myri10ge.CmdSetIntrqSize, 1000, 0, 0, myri10ge.StatusErrorRange, 1, 0},
			{"DMA test outside RAM", myri10ge.CmdDMATest, uint32(outsideRAM & 0xFFFFFFFF), outsideRAM >> 32, 4096 << 16, myri10ge.StatusErrorRange, 0, 1},
			{"DMA test of 64 KiB", myri10ge.CmdDMATest, uint32(g.txBuf), 1, 0xFFFF, myri10ge.StatusErrorRange, 1, 0},
			{"join a unicast group", myri10ge.CmdJoinMulticastGroup, 0x0260dd00, 0x00010000, 0, myri10ge.StatusErrorMulticast, 1, 0},
		}
		for _, st := range steps {
			gb := m.nic.Stats()
			_, status := g.cmd(st.cmd, st.d0, st.d1, st.d2)
			d := statsDelta(gb, m.nic.Stats())
			if status != st.want || d.GuestErrors != st.guestErr || d.DMAErrors != st.dmas {
				t.Errorf("%s: %s, %d guest errors, %d DMA errors; want %s, %d, %d", st.name, status, d.GuestErrors, d.DMAErrors, st.want, st.guestErr, st.dmas)
			}
		}
		wantLog(t, m, mark, logrus.WarnLevel, "ETHERNET_UP before SET_INTRQ_DMA/SET_STATS_DMA", map[string]string{"slice": "0"})
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "DMA test read", "iova": "0x7"})

		// A response address outside RAM: the device cannot answer, and
		// says so; the next command is answered.
		gb := m.nic.Stats()
		mark = m.logs.mark()
		if v, st := g.cmdAt(outsideRAM, myri10ge.CmdGetSendRingSize, 0, 0, 0); st != myri10ge.StatusNoResponse || v != 0 {
			t.Errorf("response outside RAM: the guest's buffer holds %#x, %s; want it untouched", v, st)
		}
		// Half in: data lands in the last word of RAM, the result past it.
		if _, st := g.cmdAt(stackIOVA+stackRAM-4, myri10ge.CmdGetSendRingSize, 0, 0, 0); st != myri10ge.StatusNoResponse {
			t.Errorf("response straddling the end of RAM: %s", st)
		}
		if d := statsDelta(gb, m.nic.Stats()); d.DMAErrors != 2 || d.Commands != 2 {
			t.Errorf("responses outside RAM: %d commands, %d DMA errors; want 2 and 2", d.Commands, d.DMAErrors)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "command response"})
		if v, st := g.cmd(myri10ge.CmdGetSendRingSize, 0, 0, 0); st != myri10ge.StatusOK || v != 16384 {
			t.Errorf("the next command: %#x, %s", v, st)
		}

		// Bus mastering off: nothing can be answered.
		cmd, err := m.c.ReadConfig(4, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.c.WriteConfig(4, []byte{cmd[0] &^ 4, cmd[1]}); err != nil {
			t.Fatal(err)
		}
		gb = m.nic.Stats()
		if _, st := g.cmd(myri10ge.CmdGetSendRingSize, 0, 0, 0); st != myri10ge.StatusNoResponse {
			t.Errorf("bus mastering off: %s, want no response", st)
		}
		if d := statsDelta(gb, m.nic.Stats()); d.DMAErrors != 1 {
			t.Errorf("bus mastering off: %d DMA errors, want 1", d.DMAErrors)
		}
		if err := m.c.WriteConfig(4, cmd); err != nil {
			t.Fatal(err)
		}
		failed := uint64(0)
		for _, st := range steps {
			if st.want != myri10ge.StatusOK {
				failed++
			}
		}
		if d := statsDelta(before, m.nic.Stats()); d.FailedCmds != failed {
			t.Errorf("%d commands answered with an error, want %d", d.FailedCmds, failed)
		}
	})

	t.Run("commands in order", func(t *testing.T) {
		g.t = t
		g.setup(g.stats, g.rxDone) // recovers from all of the above
		g.noIntr(20*time.Millisecond, "after the link report")
	})

	t.Run("send chains", func(t *testing.T) {
		g.t = t
		g.setup(g.stats, g.rxDone)
		tx := g.txBuf
		mss := 1448
		tests := []struct {
			name     string
			descs    [][16]byte
			consumed int
			sent     bool
			err      string // what the log line's error says
			stray    bool   // not a packet: consumed, not counted in send_done_count
		}{
			{"rdma_count 0 counts as 1", [][16]byte{desc(tx, 100, 0, 0, 0, fNoTSO|fFirst|fSmall)}, 1, true, "", false},
			{"rdma_count 200", [][16]byte{desc(tx, 100, 0, 200, 0, fNoTSO|fFirst|fSmall)}, 1, false, "rdma_count 200", false},
			{"length 0xFFFF", [][16]byte{desc(tx, 0xFFFF, 0, 1, 0, fNoTSO|fFirst)}, 1, false, "65535 bytes", false},
			{"length 0", [][16]byte{desc(tx, 0, 0, 1, 0, fNoTSO|fFirst|fSmall)}, 1, false, "0 bytes", false},
			{"a continuation never posted", [][16]byte{desc(tx, 100, 0, 3, 0, fNoTSO|fFirst|fSmall)}, 1, false, "not posted", false},
			{"no FIRST at the ring head", [][16]byte{desc(tx, 100, 0, 1, 0, fNoTSO|fSmall)}, 1, false, "", true},
			{"checksum outside the frame", [][16]byte{desc(tx, 100, 300, 1, 34, fNoTSO|fFirst|fSmall|fCksum)}, 1, false, "checksum", false},
			{"TSO with MSS 0", [][16]byte{desc(tx, 54, 0, 1, 34, fTSOHdr|fFirst), desc(tx+54, 46, 0, 1, 34, fPld|fFirst|fLast)}, 2, false, "MSS 0", false},
			{"TSO without TSO_LAST", [][16]byte{desc(tx, 54, mss, 1, 34, fTSOHdr|fFirst), desc(tx+54, 46, mss, 1, 34, fPld|fFirst)}, 2, false, "TSO_LAST", false},
			{"TSO segment over the largest frame", [][16]byte{desc(tx, 54, 9500, 1, 34, fTSOHdr|fFirst), desc(tx+54, 9400, 9500, 1, 34, fPld|fFirst|fLast)}, 2, false, "largest frame", false},
			{"TSO headers that are not TCP", [][16]byte{desc(tx, 40, mss, 1, 34, fTSOHdr|fFirst), desc(tx+40, 60, mss, 1, 34, fPld|fFirst|fLast)}, 2, false, "headers", false},
		}
		frame := g.frameTo(macPeer, 100, 7)
		mark := m.logs.mark()
		malformed, done := 0, 0
		for _, tt := range tests {
			before := m.nic.Stats()
			g.send(tt.descs, tt.consumed)
			if tt.stray {
				// Consumed and counted as a guest error, but no packet:
				// nothing to complete, no interrupt.
				g.noIntr(20*time.Millisecond, tt.name)
				if d := statsDelta(before, m.nic.Stats()); d.TxPackets != 0 || d.GuestErrors != 1 {
					t.Errorf("%s: NIC counters moved by %+v; want no packet, 1 guest error", tt.name, d)
				}
				wantLog(t, m, mark, logrus.WarnLevel, "send descriptor without FIRST skipped", map[string]string{"slice": "0"})
			} else {
				done++
				blk := g.intr()
				g.claim(1)
				if sdc := binary.BigEndian.Uint32(blk[blkSendDone:]); sdc != uint32(done) {
					t.Errorf("%s: send_done_count %d, want %d: every chain taken counts as done", tt.name, sdc, done)
				}
				d := statsDelta(before, m.nic.Stats())
				wantSent, wantDropped, wantErrs := uint64(0), uint64(1), uint64(1)
				if tt.sent {
					wantSent, wantDropped, wantErrs = 1, 0, 0
				} else {
					malformed++
				}
				if d.TxPackets != 1 || d.TxFrames != wantSent || d.TxDropped != wantDropped || d.GuestErrors != wantErrs || d.DMAErrors != 0 {
					t.Errorf("%s: NIC counters moved by %+v; want 1 packet, %d sent, %d dropped, %d guest errors", tt.name, d, wantSent, wantDropped, wantErrs)
				}
			}
			// The consumed descriptors are zeroed in BAR0.
			ring := make([]byte, 16*len(tt.descs))
			if err := m.c.ReadRegion(0, bar0SendRing+uint64(g.txIdx-tt.consumed)*16, ring); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ring, make([]byte, len(ring))) {
				t.Errorf("%s: descriptors left in BAR0 after the device took them: % x", tt.name, ring)
			}
			if tt.err != "" && malformed <= 5 { // the warning is rate-limited: 5 in a burst
				lines := m.logs.find(mark, logrus.WarnLevel, "malformed send chain dropped")
				if len(lines) < malformed {
					t.Errorf("%s: no log line", tt.name)
				} else if e := fmt.Sprint(lines[malformed-1].Fields["error"]); !strings.Contains(e, tt.err) {
					t.Errorf("%s: logged %q, want it to say %q", tt.name, e, tt.err)
				}
			}
		}
		if err := peer.wait(ctx, frame); err != nil {
			t.Errorf("the one well-formed packet: %v", err)
		}
		// The slice is not halted: a good packet goes out.
		f := g.frameTo(macPeer, 300, 8)
		g.send([][16]byte{desc(tx, len(f), 0, 1, 0, fNoTSO|fFirst|fSmall)}, 1)
		if err := peer.wait(ctx, f); err != nil {
			t.Errorf("after the malformed chains: %v", err)
		}
		g.intr()
		g.claim(1)
	})

	t.Run("receive posting", func(t *testing.T) {
		g.t = t
		g.setup(g.stats, g.rxDone)
		mark := m.logs.mark()
		before := m.nic.Stats()
		g.postRx(false, 1, g.rxBuf) // group 1 before group 0
		g.sync()
		if d := statsDelta(before, m.nic.Stats()); d.GuestErrors != 1 {
			t.Errorf("group 1 posted first: %d guest errors, want 1", d.GuestErrors)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "receive buffers posted out of order", map[string]string{"group": "1"})
		// Nothing was posted: a frame is dropped, for lack of a small buffer.
		peer.send(peerFrame(100, 1))
		waitStats(t, m, func(s myri10ge.Stats) bool { return s.RxDropped > before.RxDropped })
		g.noIntr(20*time.Millisecond, "dropped frame")
		// All 64 groups in order; then one more is an overfill.
		for grp := range 64 {
			g.postRx(false, grp, func(i int) uint64 { return g.rxBuf(i % 128) })
		}
		g.sync()
		gb := m.nic.Stats()
		g.postRx(false, 0, g.rxBuf)
		g.sync()
		if d := statsDelta(gb, m.nic.Stats()); d.GuestErrors != 1 {
			t.Errorf("overfill: %d guest errors, want 1", d.GuestErrors)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "receive ring overfilled", nil)
		// A frame now lands in buffer 0, behind the pad, with its slot.
		f := peerFrame(100, 2)
		peer.send(f)
		blk := g.intr()
		if blk[0x3F] != 1 {
			t.Errorf("valid %#x, want 1 (RX token passed)", blk[0x3F])
		}
		if v := binary.BigEndian.Uint32(blk[blkDroppedNoSmall:]); v != 1 {
			t.Errorf("dropped_no_small %d, want 1", v)
		}
		csum, n := g.rxDoneSlot()
		if int(n) != len(f) || !csumEq(csum, myritest.Checksum(f[14:])) {
			t.Errorf("rx_done slot: length %d, checksum %#04x; want %d, %#04x", n, csum, len(f), myritest.Checksum(f[14:]))
		}
		if got := g.bytesAt(g.rxBuf(0)+2, len(f)); !bytes.Equal(got, f) {
			t.Errorf("buffer 0 does not hold the frame")
		}
		g.claim(0)
		g.claim(1)
	})

	t.Run("receive buffers outside RAM", func(t *testing.T) {
		g.t = t
		g.setup(g.stats, g.rxDone)
		mark := m.logs.mark()
		before := m.nic.Stats()
		g.postRx(false, 0, func(i int) uint64 { return outsideRAM + uint64(i)*2048 })
		peer.send(peerFrame(100, 3))
		waitStats(t, m, func(s myri10ge.Stats) bool { return s.RxDropped > before.RxDropped })
		peer.send(peerFrame(100, 4)) // the slice is halted: dropped without a DMA
		waitStats(t, m, func(s myri10ge.Stats) bool { return s.RxDropped > before.RxDropped+1 })
		if d := statsDelta(before, m.nic.Stats()); d.DMAErrors != 1 || d.RxFrames != 0 {
			t.Errorf("counters moved by %+v; want one DMA error, no frame", d)
		}
		wantLog(t, m, mark, logrus.ErrorLevel, "DMA abort: slice halted until the driver resets the NIC", map[string]string{"slice": "0"})
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "receive buffer", "iova": "0x7"})
		// Halted: a posted packet is not taken, no interrupt comes.
		g.frameTo(macPeer, 200, 5)
		g.send([][16]byte{desc(g.txBuf, 200, 0, 1, 0, fNoTSO|fFirst|fSmall)}, 0)
		g.noIntr(50*time.Millisecond, "halted slice")
		if d := statsDelta(before, m.nic.Stats()); d.TxPackets != 0 {
			t.Errorf("a halted slice took %d packets", d.TxPackets)
		}
		// RESET recovers it.
		g.setup(g.stats, g.rxDone)
		g.postRx(false, 0, g.rxBuf)
		f := peerFrame(100, 6)
		peer.send(f)
		g.intr()
		if _, n := g.rxDoneSlot(); int(n) != len(f) {
			t.Errorf("after the reset: rx_done length %d, want %d", n, len(f))
		}
		g.claim(0)
		g.claim(1)
	})

	t.Run("interrupt block and rx_done outside RAM", func(t *testing.T) {
		g.t = t
		mark := m.logs.mark()
		before := m.nic.Stats()
		g.setup(outsideRAM, g.rxDone) // the link report cannot be written
		g.noIntr(50*time.Millisecond, "block outside RAM")
		if d := statsDelta(before, m.nic.Stats()); d.DMAErrors != 1 || d.Interrupts != 0 {
			t.Errorf("counters moved by %+v; want one DMA error, no interrupt", d)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "interrupt block"})
		wantLog(t, m, mark, logrus.ErrorLevel, "DMA abort: slice halted until the driver resets the NIC", nil)

		before, mark = m.nic.Stats(), m.logs.mark()
		g.setup(g.stats, outsideRAM)
		g.postRx(false, 0, g.rxBuf)
		peer.send(peerFrame(100, 7))
		waitStats(t, m, func(s myri10ge.Stats) bool { return s.RxDropped > before.RxDropped })
		g.noIntr(50*time.Millisecond, "rx_done outside RAM")
		if d := statsDelta(before, m.nic.Stats()); d.DMAErrors != 1 || d.RxFrames != 0 {
			t.Errorf("counters moved by %+v; want one DMA error, no frame", d)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "rx_done slot"})
	})

	t.Run("claims without interrupts", func(t *testing.T) {
		g.t = t
		g.setup(g.stats, g.rxDone)
		for grp := range 4 {
			g.postRx(false, grp, g.rxBuf)
		}
		before := m.nic.Stats()
		for range 3 {
			g.claim(0)
			g.claim(1)
		}
		g.noIntr(20*time.Millisecond, "claims with nothing to report")
		if v := g.load32(g.stats + blkFlags); v != 0 {
			t.Errorf("the device rewrote the block (flags %#x) for claims alone", v)
		}
		// A frame: one interrupt, the RX token passed. The guest keeps
		// both tokens; a second frame must wait.
		peer.send(peerFrame(100, 8))
		if blk := g.intr(); blk[0x3F] != 1 {
			t.Errorf("valid %#x, want 1", blk[0x3F])
		}
		peer.send(peerFrame(100, 9))
		waitStats(t, m, func(s myri10ge.Stats) bool { return s.RxFrames >= before.RxFrames+2 })
		g.noIntr(20*time.Millisecond, "second frame with both tokens out")
		g.claim(0) // RX token back; the IRQ token is still out
		g.noIntr(20*time.Millisecond, "RX claim while the IRQ token is out")
		if v := g.load32(g.stats + blkFlags); v != 0 {
			t.Errorf("the device rewrote the block (flags %#x) while the guest held the IRQ token", v)
		}
		g.claim(1) // now the pending frame is reported, with the RX token
		if blk := g.intr(); blk[0x3F] != 1 {
			t.Errorf("valid %#x after the claims, want 1", blk[0x3F])
		}
		g.claim(1)
		g.claim(1) // a doubled claim changes nothing
		g.noIntr(20*time.Millisecond, "doubled IRQ claim")
		if d := statsDelta(before, m.nic.Stats()); d.Interrupts != 2 || d.RxFrames != 2 {
			t.Errorf("counters moved by %+v; want 2 interrupts, 2 frames", d)
		}
		g.claim(0)
	})

	t.Run("send descriptor outside RAM, watchdog reset", func(t *testing.T) {
		g.t = t
		if err := m.bus.Disable(); err != nil { // the raw guest's MSI
			t.Fatal(err)
		}
		d := m.drv
		m.up(ctx)
		mark := m.logs.mark()
		before := m.nic.Stats()
		// The device's send index is 0 after the driver's open. A
		// descriptor whose buffer is not the guest's:
		g.txIdx = 0
		g.send([][16]byte{desc(outsideRAM, 100, 0, 1, 0, fNoTSO|fFirst|fSmall)}, 1)
		g.sync()
		if dd := statsDelta(before, m.nic.Stats()); dd.DMAErrors != 1 || dd.TxDropped != 1 || dd.TxFrames != 0 {
			t.Errorf("counters moved by %+v; want one DMA error and one dropped packet", dd)
		}
		wantLog(t, m, mark, logrus.ErrorLevel, "DMA abort: slice halted until the driver resets the NIC", map[string]string{"slice": "0"})
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "send gather", "iova": "0x700000000"})

		// The driver's next packet never completes; its watchdog finds
		// the queue stuck on the second tick and resets the NIC.
		if err := d.Xmit(0, myritest.FramePacket(retarget(sizedFrame(t, 200, 9), macPeer, macA))); err != nil {
			t.Fatal(err)
		}
		for tick, want := range []bool{false, true} {
			reset, err := d.WatchdogTick()
			if err != nil || reset != want {
				t.Fatalf("watchdog tick %d: reset %v, %v; want %v", tick, reset, err, want)
			}
		}
		if err := d.WatchdogReset(ctx); err != nil {
			t.Fatalf("watchdog reset: %v\n%s", err, m.driverLog())
		}
		// Recovered: both directions work.
		f := retarget(sizedFrame(t, 500, 10), macPeer, macA)
		if err := d.Xmit(0, myritest.FramePacket(f)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.WaitTx(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if err := peer.wait(ctx, f); err != nil {
			t.Errorf("after the reset, to the peer: %v", err)
		}
		in := peerFrame(700, 11)
		peer.send(in)
		got, err := d.Receive(ctx, 0, 1)
		if err != nil || len(got) != 1 || !bytes.Equal(got[0].Data, in) {
			t.Errorf("after the reset, from the peer: %d frames, %v", len(got), err)
		}
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		// What the driver logged: the stuck queue, the reset, and the
		// link_down report a halted slice could not send.
		var complaints []string
		for _, c := range d.Complaints() {
			complaints = append(complaints, strings.Fields(c)[1]+" "+strings.Fields(c)[2])
		}
		want := []string{"slice 0:", "slice 0:", "device timeout,", "never got"}
		if fmt.Sprint(complaints) != fmt.Sprint(want) {
			t.Errorf("driver complaints %q, want lines starting %q", d.Complaints(), want)
		}
		if st := d.Stats(); st.TxDropped != 1 {
			t.Errorf("driver tx_dropped %d, want 1 (the stuck packet)", st.TxDropped)
		}
	})

	stopTraffic()
	if tr.err != nil {
		t.Errorf("background traffic between the other NICs failed: %v", tr.err)
	}
	if r := tr.rounds.Load(); r < 5 {
		t.Errorf("background traffic made only %d rounds", r)
	}
	t.Logf("background traffic: %d rounds of 8 frames", tr.rounds.Load())
	for _, n := range []*nicNode{b, c} {
		if err := n.drv.Close(ctx); err != nil {
			t.Errorf("%s: Close: %v", n.name, err)
		}
		n.checkClean()
	}
}

// waitStats waits until cond holds for m's counters.
func waitStats(t *testing.T, n *nicNode, cond func(myri10ge.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(n.nic.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: counters %+v never got there", n.name, n.nic.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// FuzzBAR0Writes drives a NIC with random BAR0 stores, biased to the
// trigger windows (mailbox, rings, doorbells, claims, handoff), random
// commands, receive postings, send chains, guest memory writes, frames
// from the wire and carrier changes, starting from a NIC that is up. The
// NIC sits on a dma.Map over memfd RAM with read-only canary pages on
// both sides. Invariants: no panic; the canaries are untouched; every
// frame from the wire is received or counted dropped; every frame counted
// sent reached the wire and is a legal frame; every interrupt counted was
// raised; a RESET and the driver's bring-up always recover the NIC.
func FuzzBAR0Writes(f *testing.F) {
	for _, s := range bar0Seeds() {
		f.Add(s.ops)
	}
	z := newBAR0Fuzz(f) // one NIC and RAM per process: a NIC costs 16 MiB
	f.Fuzz(func(t *testing.T, ops []byte) {
		z.start(t)
		z.bringUp()
		z.run(ops)
		z.check()
	})
}

// Guest RAM of the fuzz NIC and the structures its bring-up uses.
const (
	fzBase   = 0x1_0000_0000
	fzSize   = 256 << 10
	fzGuard  = 4096
	fzResp   = fzBase          // command responses
	fzRxDone = fzBase + 0x1000 // 1024 slots
	fzStats  = fzBase + 0x2000 // interrupt blocks, 0x100 per slice
	fzBufs   = fzBase + 0x10000
	fzSlices = 2
	fzMaxOps = 256
)

type countingIRQ struct{ raised, lowered atomic.Uint64 }

func (c *countingIRQ) Raise(int)      { c.raised.Add(1) }
func (c *countingIRQ) Lower()         { c.lowered.Add(1) }
func (c *countingIRQ) Mode() msi.Mode { return msi.ModeMSI }

// bar0Fuzz is a NIC on guest RAM with read-only canary pages on both
// sides, reused from input to input: power-on (Reset) and attach at
// start, detach at check.
type bar0Fuzz struct {
	t    testing.TB
	nic  *myri10ge.NIC
	dmap *dma.Map
	port *fabrictest.Port
	ram  []byte // guard | RAM | guard
	log  *logrus.Entry

	irq      *countingIRQ
	base     myri10ge.Stats // counters at start
	dropped  uint64         // the port's Dropped at start
	injected uint64
}

func canaryByte(i int) byte { return byte(0xA5 ^ i*7) }

func newBAR0Fuzz(tb testing.TB) *bar0Fuzz {
	ram := dmatest.NewRAM(tb, fzGuard+fzSize+fzGuard)
	b := ram.Bytes()
	for i := range fzGuard {
		b[i], b[fzGuard+fzSize+i] = canaryByte(i), canaryByte(i)
	}
	quiet := (&logSink{}).logger(logrus.PanicLevel)
	m := dma.NewMap(quiet)
	tb.Cleanup(func() { m.Close() })
	for _, mp := range []dma.Mapping{
		{IOVA: fzBase - fzGuard, Size: fzGuard, Offset: 0, Fd: ram.Fd(), Prot: dma.ProtRead},
		{IOVA: fzBase, Size: fzSize, Offset: fzGuard, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite},
		{IOVA: fzBase + fzSize, Size: fzGuard, Offset: fzGuard + fzSize, Fd: ram.Fd(), Prot: dma.ProtRead},
	} {
		if err := m.Add(mp); err != nil {
			tb.Fatal(err)
		}
	}
	m.SetBusMaster(true)
	port := fabrictest.NewPort(1 << 14)
	nic, err := myri10ge.New(myri10ge.Config{Name: "fuzz0", MAC: macA, Slices: fzSlices, Port: port, Log: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nic.Detach()
		nic.Close()
	})
	return &bar0Fuzz{t: tb, nic: nic, dmap: m, port: port, ram: b, log: quiet}
}

// start powers the NIC on, clears guest RAM and attaches the NIC.
func (z *bar0Fuzz) start(t *testing.T) {
	z.t = t
	clear(z.ram[fzGuard : fzGuard+fzSize])
	z.nic.Reset()
	z.port.SetLink(true)
	for len(z.port.Sent) > 0 {
		<-z.port.Sent
	}
	z.irq, z.base, z.dropped, z.injected = &countingIRQ{}, z.nic.Stats(), z.port.Dropped(), 0
	if err := z.nic.Attach(pci.Host{Mem: z.dmap, IRQ: z.irq, Log: z.log}); err != nil {
		t.Fatal(err)
	}
}

// mem is the guest's view of n bytes at addr, inside RAM.
func (z *bar0Fuzz) mem(addr uint64, n int) []byte {
	o := fzGuard + int(addr-fzBase)
	return z.ram[o : o+n]
}

func (z *bar0Fuzz) write(off uint64, p []byte) { z.nic.WriteBAR(0, off, p) } // errors: out of range, ignored

func (z *bar0Fuzz) cmd(c myri10ge.Cmd, d0, d1, d2 uint32, resp uint64) myri10ge.Status {
	if resp >= fzBase && resp+8 <= fzBase+fzSize {
		binary.BigEndian.PutUint32(z.mem(resp+4, 4), 0xFFFFFFFF)
	}
	blk := cmdBlock(c, d0, d1, d2, resp)
	for i := 0; i < 64; i += 8 {
		z.write(bar0Cmd+uint64(i), blk[i:i+8])
	}
	if resp >= fzBase && resp+8 <= fzBase+fzSize {
		return myri10ge.Status(binary.BigEndian.Uint32(z.mem(resp+4, 4)))
	}
	return myri10ge.StatusNoResponse
}

// postRx posts group grp of a ring of slice s the driver's way.
func (z *bar0Fuzz) postRx(big bool, s, grp int, addr func(i int) uint64) {
	ring := uint64(bar0SmallRing)
	if big {
		ring = bar0BigRing
	}
	ring += uint64(s) * 0x1000
	b, low := rxGroup(addr, 0)
	off := ring + uint64(grp)*64
	z.write(off, b[:32])
	z.write(off+32, b[32:])
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], low)
	z.write(off+4, w[:])
}

// bringUp is the driver's open, by hand: RESET, queues, blocks, sizes,
// buffers, ETHERNET_UP. It fails the test if the NIC does not answer.
func (z *bar0Fuzz) bringUp() {
	z.t.Helper()
	clear(z.mem(fzRxDone, 0x2000))
	steps := []struct {
		c          myri10ge.Cmd
		d0, d1, d2 uint32
	}{
		{myri10ge.CmdReset, 0, 0, 0},
		{myri10ge.CmdSetIntrqSize, 4096, 0, 0},
		{myri10ge.CmdSetIntrqDMA, fzRxDone & 0xFFFFFFFF, fzRxDone >> 32, 0},
		{myri10ge.CmdSetStatsDMAV2, fzStats & 0xFFFFFFFF, fzStats >> 32, 64},
		{myri10ge.CmdSetMTU, 9018, 0, 0},
		{myri10ge.CmdSetSmallBufferSize, 126, 0, 0},
		{myri10ge.CmdSetBigBufferSize, 4096, 0, 0},
		{myri10ge.CmdEthernetUp, 0, 0, 0},
	}
	for _, st := range steps {
		if s := z.cmd(st.c, st.d0, st.d1, st.d2, fzResp); s != myri10ge.StatusOK {
			z.t.Fatalf("bring-up: %s: %s", st.c, s)
		}
	}
	for grp := range 2 {
		z.postRx(false, 0, grp, func(i int) uint64 { return fzBufs + uint64(grp*8+i)*128 })
		z.postRx(true, 0, grp, func(i int) uint64 { return fzBufs + 0x1000 + uint64(grp*8+i)*4096 })
	}
}

// fuzzOps reads the fuzz input; past its end every read is 0.
type fuzzOps struct {
	b []byte
	i int
}

func (r *fuzzOps) more() bool { return r.i < len(r.b) }
func (r *fuzzOps) u8() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}
func (r *fuzzOps) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }
func (r *fuzzOps) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }
func (r *fuzzOps) bytes(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = r.u8()
	}
	return p
}

// addr is a guest address: mostly inside RAM, sometimes at its edges or
// anywhere at all.
func (r *fuzzOps) addr() uint64 {
	switch sel := r.u8(); sel % 8 {
	case 6:
		return fzBase + fzSize - uint64(sel>>3) // straddling the end
	case 7:
		return uint64(r.u32())<<32 | uint64(r.u32())
	default:
		return fzBase + uint64(r.u16())*4%fzSize
	}
}

// BAR0 windows with side effects, and all of BAR0.
var fuzzWindows = []struct{ base, size uint64 }{
	{bar0Cmd, 64},
	{bar0SendRing, fzSlices * 0x4000},
	{bar0SmallRing, fzSlices * 0x1000},
	{bar0BigRing, fzSlices * 0x1000},
	{0x380000, 0x40000 + fzSlices*64}, // SEND_GO, SEND_STOP
	{bar0Claim, 0x1000},               // claims, deassert, coalescing, RSS table
	{0xFC0000, 0x200},                 // handoff, dummy RDMA
	{0, 16 << 20},
}

// Op codes of the fuzz input.
const (
	opStore = iota
	opCmd
	opFrame
	opClaim
	opPostRx
	opSend
	opGuestMem
	opLink
	numOps
)

func (z *bar0Fuzz) run(in []byte) {
	r := &fuzzOps{b: in}
	for n := 0; r.more() && n < fzMaxOps; n++ {
		switch r.u8() % numOps {
		case opStore:
			w := fuzzWindows[int(r.u8())%len(fuzzWindows)]
			off := w.base + uint64(r.u32())%w.size
			z.write(off, r.bytes(int(r.u8())%72))
		case opCmd:
			c := myri10ge.Cmd(r.u8() % 72)
			d0, d1, d2 := r.u32(), r.u32(), r.u32()
			resp := uint64(fzResp)
			if r.u8()%4 == 0 {
				resp = r.addr()
			}
			z.cmd(c, d0, d1, d2, resp)
		case opFrame:
			n := int(r.u16()) % 9100
			f := make([]byte, n)
			copy(f, r.bytes(min(n, 64)))
			for i := 64; i < n; i++ {
				f[i] = byte(i * 13)
			}
			if n >= 6 && r.u8()%4 != 0 {
				copy(f, macA) // past the unicast filter
			}
			z.port.Inject(f)
			z.injected++
		case opClaim:
			sel := r.u8()
			z.write(bar0Claim+uint64(sel%fzSlices)*8+uint64(sel>>7)*4, []byte{0, 0, 0, 3})
		case opPostRx:
			sel, grp := r.u8(), int(r.u8()%64)
			base := r.addr()
			z.postRx(sel&1 != 0, int(sel>>1)%fzSlices, grp, func(i int) uint64 { return base + uint64(i)*2048 })
		case opSend:
			sel := r.u8()
			slot := int(r.u16() % 1024)
			var descs [][16]byte
			for range 1 + int(sel%4) {
				descs = append(descs, desc(r.addr(), int(r.u16()%9100), int(r.u16()), int(r.u8()%16), int(r.u8()), r.u8()))
			}
			for _, s := range myritest.SubmitOrder(bar0SendRing+uint64(sel>>7)*0x4000, 1024, slot, descs) {
				z.write(s.Off, s.Data)
			}
		case opGuestMem:
			a := fzBase + uint64(r.u16())*4%fzSize
			p := r.bytes(int(r.u8()))
			copy(z.mem(a, min(len(p), int(fzBase+fzSize-a))), p)
		case opLink:
			z.port.SetLink(r.u8()%2 == 0)
		}
	}
}

// check verifies the invariants, after one more bring-up and frame.
func (z *bar0Fuzz) check() {
	t := z.t
	// RESET and the bring-up recover the NIC: a frame lands in buffer 0
	// and its rx_done slot.
	z.port.SetLink(true)
	z.bringUp()
	f := sizedFrame(t, 100, 1)
	copy(f, macA)
	before := z.nic.Stats().RxFrames
	z.port.Inject(f)
	z.injected++
	if got := z.nic.Stats().RxFrames; got != before+1 {
		t.Errorf("after RESET and bring-up a frame was not received (RxFrames %d, was %d)", got, before)
	} else if w := binary.BigEndian.Uint32(z.mem(fzRxDone, 4)); int(w&0xFFFF) != len(f) || !csumEq(uint16(w>>16), myritest.Checksum(f[14:])) ||
		!bytes.Equal(z.mem(fzBufs+2, len(f)), f) {
		t.Errorf("after RESET and bring-up: rx_done slot %#08x (checksum want %#04x), buffer 0 %x", w, myritest.Checksum(f[14:]), z.mem(fzBufs, 16))
	}
	z.nic.Detach() // no timer may raise after this

	for i := range fzGuard {
		if z.ram[i] != canaryByte(i) || z.ram[fzGuard+fzSize+i] != canaryByte(i) {
			t.Fatalf("canary page byte %d overwritten: the device wrote outside guest RAM", i)
		}
	}
	st := statsDelta(z.base, z.nic.Stats())
	if st.RxFrames+st.RxDropped != z.injected {
		t.Errorf("%d frames from the wire, %d received and %d dropped", z.injected, st.RxFrames, st.RxDropped)
	}
	if st.TxDropped > st.TxPackets || st.TxFrames < st.TxPackets-st.TxDropped {
		t.Errorf("%d packets taken, %d dropped, %d frames sent", st.TxPackets, st.TxDropped, st.TxFrames)
	}
	dropped := z.port.Dropped() - z.dropped
	sent, nbytes := uint64(len(z.port.Sent))+dropped, uint64(0)
	for len(z.port.Sent) > 0 {
		fr := <-z.port.Sent
		if len(fr) < fabric.MinFrame || len(fr) > fabric.MaxFrame {
			t.Errorf("a %d-byte frame on the wire", len(fr))
		}
		nbytes += uint64(len(fr))
	}
	if sent != st.TxFrames || (dropped == 0 && nbytes != st.TxBytes) {
		t.Errorf("%d frames (%d bytes) reached the wire, %d (%d bytes) counted", sent, nbytes, st.TxFrames, st.TxBytes)
	}
	if r := z.irq.raised.Load(); r != st.Interrupts {
		t.Errorf("%d vectors raised, %d interrupts counted", r, st.Interrupts)
	}
	if st.UnknownCmds+st.FailedCmds > st.Commands {
		t.Errorf("%d commands, %d unknown, %d failed", st.Commands, st.UnknownCmds, st.FailedCmds)
	}
}

// bar0Enc builds fuzz inputs for the seeds.
type bar0Enc struct{ b []byte }

func (e *bar0Enc) u8(v ...byte) *bar0Enc { e.b = append(e.b, v...); return e }
func (e *bar0Enc) u16(v uint16) *bar0Enc { return e.u8(byte(v>>8), byte(v)) }
func (e *bar0Enc) u32(v uint32) *bar0Enc { return e.u16(uint16(v >> 16)).u16(uint16(v)) }

// ramAddr encodes an address inside RAM (a multiple of 4).
func (e *bar0Enc) ramAddr(a uint64) *bar0Enc { return e.u8(0).u16(uint16((a - fzBase) / 4)) }

func (e *bar0Enc) guestMem(a uint64, p []byte) *bar0Enc {
	for len(p) > 0 {
		n := min(len(p), 255)
		e.u8(opGuestMem).u16(uint16((a - fzBase) / 4)).u8(byte(n)).u8(p[:n]...)
		p, a = p[n:], a+uint64(n)
	}
	return e
}

func (e *bar0Enc) frame(n int, toUs bool) *bar0Enc {
	e.u8(opFrame).u16(uint16(n))
	f := sizedFrame(nilTB{}, max(n, 54), byte(n))
	copy(f, macA)
	if !toUs {
		copy(f, macNobody)
	}
	e.u8(f[:min(n, 64)]...)
	if toUs {
		return e.u8(1)
	}
	return e.u8(0)
}

func (e *bar0Enc) send(slot int, descs ...[16]byte) *bar0Enc {
	e.u8(opSend, byte(len(descs)-1)).u16(uint16(slot))
	for _, d := range descs {
		a := uint64(binary.BigEndian.Uint32(d[0:]))<<32 | uint64(binary.BigEndian.Uint32(d[4:]))
		e.ramAddr(a).u16(binary.BigEndian.Uint16(d[10:])).u16(binary.BigEndian.Uint16(d[8:])).u8(d[13], d[14], d[15])
	}
	return e
}

type bar0Seed struct {
	name string
	ops  []byte
}

func bar0Seeds() []bar0Seed {
	frame := retarget(buildFrame(nilTB{}, frameSpec{TSOpt: true}, pattern(3000, 5)), macPeer, macA)
	tx := uint64(fzBase + 0x20000)
	traffic := (&bar0Enc{}).
		frame(60, true).frame(126, true).frame(127, true).frame(1514, true).frame(9018, true).
		u8(opClaim, 0).u8(opClaim, 0x80).frame(4000, true).frame(100, false).frame(10, true).
		u8(opClaim, 0x80).u8(opClaim, 0)
	plain := (&bar0Enc{}).guestMem(tx, frame[:1514]).
		send(0, desc(tx, 1514, 0, 1, 0, fNoTSO|fFirst)).u8(opClaim, 0x80).
		send(1, desc(tx, 1000, 50, 2, 34, fNoTSO|fFirst|fCksum), desc(tx+1000, 514, 0, 1, 0, fNoTSO)).u8(opClaim, 0x80)
	tso := (&bar0Enc{}).guestMem(tx, frame).
		send(0, desc(tx, 66, 1448, 1, 34, fTSOHdr|fFirst), desc(tx+66, 1448, 1448, 1, 34, fPld|fFirst|fSmall), desc(tx+66+1448, 1552, 1448, 1, 34, fPld|fFirst|fLast|fSmall)).
		u8(opClaim, 0x80)
	commands := (&bar0Enc{})
	for c := range 72 {
		commands.u8(opCmd, byte(c)).u32(0xDEADBEEF).u32(0xDEADBEEF).u32(0xDEADBEEF).u8(1)
	}
	hostile := (&bar0Enc{}).
		u8(opStore, 0).u32(0x3F).u8(1, 0xFF). // mailbox trigger with a stale block
		u8(opCmd, byte(myri10ge.CmdGetSendRingSize)).u32(0).u32(0).u32(0).u8(0).u8(7).u32(7).u32(0).
		u8(opPostRx, 0).u8(1).u8(7).u32(7).u32(0).frame(100, true).
		send(0, desc(fzBase, 100, 0, 1, 0, fNoTSO|fFirst)).
		u8(opSend, 0).u16(1).u8(7).u32(7).u32(0).u16(100).u16(0).u8(1, 0, fNoTSO|fFirst). // outside RAM: halts
		u8(opStore, 6).u32(0x3F).u8(8, 0, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF).               // handoff
		u8(opLink, 1).frame(200, true).u8(opLink, 0)
	return []bar0Seed{{"traffic", traffic.b}, {"plain", plain.b}, {"tso", tso.b}, {"commands", commands.b}, {"hostile", hostile.b}}
}

// nilTB lets seed construction call the frame builders outside a test.
type nilTB struct{ testing.TB }

func (nilTB) Helper()                   {}
func (nilTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

var updateBAR0Seeds = flag.Bool("update-bar0-seeds", false, "rewrite testdata/fuzz/FuzzBAR0Writes")

// TestBAR0Seeds rewrites the committed seeds with -update-bar0-seeds, and
// otherwise checks they are there.
func TestBAR0Seeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzBAR0Writes")
	for _, s := range bar0Seeds() {
		path := filepath.Join(dir, s.name)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.ops)
		if !*updateBAR0Seeds {
			if b, err := os.ReadFile(path); err != nil || string(b) != body {
				t.Errorf("seed %s missing or stale (go test -run TestBAR0Seeds -update-bar0-seeds): %v", s.name, err)
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
