package myri10ge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/sirupsen/logrus"
)

// A guest that misprograms the card: raw BAR0 stores over the vfio-user
// client, not the fake driver's well-behaved paths. Each mistake gets the
// device's error behaviour (a status, a dropped chain, a halted slice), a
// counter and a log line; the server never panics, and two other NICs on
// the same switch, served by the same process, keep passing traffic.

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
			cmd            abi.Cmd
			d0, d1, d2     uint32
			want           abi.Status
			guestErr, dmas uint64
		}{
			{"reset", abi.CmdReset, 0, 0, 0, abi.StatusOK, 0, 0},
			{"up before SET_INTRQ_DMA", abi.CmdEthernetUp, 0, 0, 0, abi.StatusErrorBusy, 1, 0},
			{"rx_done of an absent slice", abi.CmdSetIntrqDMA, uint32(g.rxDone), 1, 5, abi.StatusErrorRange, 1, 0},
			{"rx_done", abi.CmdSetIntrqDMA, uint32(g.rxDone), 1, 0, abi.StatusOK, 0, 0},
			{"up before SET_STATS_DMA", abi.CmdEthernetUp, 0, 0, 0, abi.StatusErrorBusy, 1, 0},
			{"interrupt block of 16 bytes", abi.CmdSetStatsDMAV2, uint32(g.stats), 1, 16, abi.StatusErrorRange, 1, 0},
			{"big buffers of 3000 bytes", abi.CmdSetBigBufferSize, 3000, 0, 0, abi.StatusErrorRange, 1, 0},
			{"MTU 20000", abi.CmdSetMTU, 20000, 0, 0, abi.StatusErrorRange, 1, 0},
			{"interrupt queue of 1000 bytes", abi.CmdSetIntrqSize, 1000, 0, 0, abi.StatusErrorRange, 1, 0},
			{"DMA test outside RAM", abi.CmdDMATest, uint32(outsideRAM & 0xFFFFFFFF), outsideRAM >> 32, 4096 << 16, abi.StatusErrorRange, 0, 1},
			{"DMA test of 64 KiB", abi.CmdDMATest, uint32(g.txBuf), 1, 0xFFFF, abi.StatusErrorRange, 1, 0},
			{"join a unicast group", abi.CmdJoinMulticastGroup, 0x0260dd00, 0x00010000, 0, abi.StatusErrorMulticast, 1, 0},
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
		if v, st := g.cmdAt(outsideRAM, abi.CmdGetSendRingSize, 0, 0, 0); st != abi.StatusNoResponse || v != 0 {
			t.Errorf("response outside RAM: the guest's buffer holds %#x, %s; want it untouched", v, st)
		}
		// Half in: data lands in the last word of RAM, the result past it.
		if _, st := g.cmdAt(stackIOVA+stackRAM-4, abi.CmdGetSendRingSize, 0, 0, 0); st != abi.StatusNoResponse {
			t.Errorf("response straddling the end of RAM: %s", st)
		}
		if d := statsDelta(gb, m.nic.Stats()); d.DMAErrors != 2 || d.Commands != 2 {
			t.Errorf("responses outside RAM: %d commands, %d DMA errors; want 2 and 2", d.Commands, d.DMAErrors)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "DMA failed", map[string]string{"dma": "command response"})
		if v, st := g.cmd(abi.CmdGetSendRingSize, 0, 0, 0); st != abi.StatusOK || v != 16384 {
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
		if _, st := g.cmd(abi.CmdGetSendRingSize, 0, 0, 0); st != abi.StatusNoResponse {
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
			if st.want != abi.StatusOK {
				failed++
			}
		}
		if d := statsDelta(before, m.nic.Stats()); d.FailedCmds != failed {
			t.Errorf("%d commands answered with an error, want %d", d.FailedCmds, failed)
		}
	})

	t.Run("commands in order", func(t *testing.T) {
		g.restart(t) // recovers from all of the above
		g.noIntr(20*time.Millisecond, "after the link report")
	})

	t.Run("send chains", func(t *testing.T) {
		g.restart(t)
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
		g.restart(t)
		mark := m.logs.mark()
		before := m.nic.Stats()
		g.postRx(false, 1, g.rxBuf) // group 1 before group 0
		g.sync()
		if d := statsDelta(before, m.nic.Stats()); d.GuestErrors != 1 {
			t.Errorf("group 1 posted first: %d guest errors, want 1", d.GuestErrors)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "receive buffers posted out of order", map[string]string{"group": "1"})
		// Nothing was posted: a frame waits in the slice's FIFO, no interrupt.
		held := peerFrame(100, 1)
		peer.send(held)
		waitStats(t, m, func(s myri10ge.Stats) bool { return s.RxHeld > before.RxHeld })
		g.noIntr(20*time.Millisecond, "held frame")
		if c := m.nic.Counters(); c.Slices[0].Held != 1 || c.Stats.RxDropped != before.RxDropped {
			t.Errorf("slice 0 holds %d frames, %d dropped; want 1 held, none dropped", c.Slices[0].Held, c.Stats.RxDropped-before.RxDropped)
		}
		// All 64 groups in order: the held frame lands in buffer 0 at the
		// first; then one more group is an overfill.
		for grp := range 64 {
			g.postRx(false, grp, func(i int) uint64 { return g.rxBuf(i % 128) })
		}
		g.sync()
		g.intr()
		if csum, n := g.rxDoneSlot(); int(n) != len(held) || !csumEq(csum, myritest.Checksum(held[14:])) {
			t.Errorf("held frame's rx_done slot: length %d, checksum %#04x; want %d", n, csum, len(held))
		}
		if got := g.bytesAt(g.rxBuf(0)+2, len(held)); !bytes.Equal(got, held) {
			t.Errorf("buffer 0 does not hold the held frame")
		}
		g.claim(0)
		g.claim(1)
		gb := m.nic.Stats()
		g.postRx(false, 0, g.rxBuf)
		g.sync()
		if d := statsDelta(gb, m.nic.Stats()); d.GuestErrors != 1 {
			t.Errorf("overfill: %d guest errors, want 1", d.GuestErrors)
		}
		wantLog(t, m, mark, logrus.WarnLevel, "receive ring overfilled", nil)
		// A frame now lands in buffer 1, behind the pad, with its slot.
		f := peerFrame(100, 2)
		peer.send(f)
		blk := g.intr()
		if blk[0x3F] != 1 {
			t.Errorf("valid %#x, want 1 (RX token passed)", blk[0x3F])
		}
		if v := binary.BigEndian.Uint32(blk[blkDroppedNoSmall:]); v != 0 {
			t.Errorf("dropped_no_small %d, want 0: the frame without a buffer waited", v)
		}
		csum, n := g.rxDoneSlot()
		if int(n) != len(f) || !csumEq(csum, myritest.Checksum(f[14:])) {
			t.Errorf("rx_done slot: length %d, checksum %#04x; want %d, %#04x", n, csum, len(f), myritest.Checksum(f[14:]))
		}
		if got := g.bytesAt(g.rxBuf(1)+2, len(f)); !bytes.Equal(got, f) {
			t.Errorf("buffer 1 does not hold the frame")
		}
		g.claim(0)
		g.claim(1)
	})

	t.Run("receive buffers outside RAM", func(t *testing.T) {
		g.restart(t)
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
		g.restart(t)
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
