package myritest

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testBase = 1 << 32 // guest memory above 4 GiB: high address words are not 0

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newTestDriver(t *testing.T, o fakeOpts, opts Options) (*Driver, *fakeDev, *Memory) {
	t.Helper()
	mem := NewMemory(make([]byte, 8<<20), testBase)
	fd := newFakeDev(t, mem, o)
	return New(fd, mem, fd, opts), fd, mem
}

// upDriver probes and opens a driver on a well-behaved fake.
func upDriver(t *testing.T, o fakeOpts, opts Options) (*Driver, *fakeDev, *Memory) {
	t.Helper()
	d, fd, mem := newTestDriver(t, o, opts)
	ctx := testCtx(t)
	if err := d.Probe(ctx); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if err := d.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	return d, fd, mem
}

func wantErr(t *testing.T, err, sentinel error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v containing %q", sentinel, substr)
	}
	if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q, want %v containing %q", err, sentinel, substr)
	}
}

var (
	resetSeq = []Cmd{CmdReset, CmdDMATest, CmdDMATest, CmdDMATest, CmdSetRSSMCPSlotType, CmdSetIntrqSize,
		CmdSetIntrqDMA, CmdGetIRQAckOffset, CmdGetIRQDeassertOffset, CmdGetIntrCoalDelayOffset,
		CmdSetMACAddress, CmdEnableFlowControl}
	rxModeSeq = []Cmd{CmdDisablePromisc, CmdEnableAllMulti, CmdLeaveAllMulticast,
		CmdJoinMulticastGroup, CmdJoinMulticastGroup, CmdJoinMulticastGroup, CmdDisableAllMulti}
	ringSeq = []Cmd{CmdGetSendOffset, CmdGetSmallRxOffset, CmdGetBigRxOffset, CmdGetSendRingSize, CmdGetRxRingSize,
		CmdSetStatsDMAV2, CmdSetMTU, CmdSetSmallBufferSize, CmdSetBigBufferSize, CmdSetTSOMode, CmdEthernetUp}
)

func cat(parts ...[]Cmd) []Cmd {
	var out []Cmd
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestCommandSequences replays probe, open, close and a second open
// against §4.4 and §8's expected sequence.
func TestCommandSequences(t *testing.T) {
	d, fd, _ := newTestDriver(t, fakeOpts{}, Options{})
	ctx := testCtx(t)
	steps := []struct {
		name string
		run  func() error
		want []Cmd
	}{
		{"probe", func() error { return d.Probe(ctx) }, cat([]Cmd{CmdGetMaxTSO6HdrSize, CmdGetRxRingSize}, resetSeq, []Cmd{CmdDisablePromisc})},
		{"open", func() error { return d.Open(ctx) }, cat(resetSeq, []Cmd{CmdDisablePromisc}, ringSeq, rxModeSeq)},
		{"close", func() error { return d.Close(ctx) }, []Cmd{CmdEthernetDown}},
		// From the second open on, the reset runs the full rx mode too.
		{"reopen", func() error { return d.Open(ctx) }, cat(resetSeq, rxModeSeq, ringSeq, rxModeSeq)},
		{"remove", func() error { return d.Remove(ctx) }, []Cmd{CmdEthernetDown}},
	}
	for _, st := range steps {
		fd.clearLogs()
		if err := st.run(); err != nil {
			t.Fatalf("%s: %v\nlog: %v", st.name, err, d.Log())
		}
		if diff := cmp.Diff(st.want, fd.commands()); diff != "" {
			t.Errorf("%s: commands (-want +got):\n%s", st.name, diff)
		}
	}
	if err := d.CheckClean(); err != nil {
		t.Error(err)
	}
}

// TestCommandWords checks the words the driver sends, stale and
// uninitialised ones included, and the mailbox's store pattern.
func TestCommandWords(t *testing.T) {
	for _, zero := range []bool{false, true} {
		d, fd, _ := newTestDriver(t, fakeOpts{}, Options{ZeroUninit: zero})
		ctx := testCtx(t)
		if err := d.Probe(ctx); err != nil {
			t.Fatal(err)
		}
		g := uint32(Garbage)
		if zero {
			g = 0
		}
		find := func(c Cmd) fakeCmd {
			for _, x := range fd.cmds {
				if x.Cmd == c {
					return x
				}
			}
			t.Fatalf("no %s sent", c)
			return fakeCmd{}
		}
		rxDone := d.ss[0].rxDone
		want := []fakeCmd{
			{CmdGetMaxTSO6HdrSize, g, g, g, g},
			{CmdGetRxRingSize, g, g, g, g}, // TSO6 answered UNKNOWN: data0 stays garbage
			{CmdReset, 0, 0, 0, g},
			{CmdSetIntrqSize, 4 * 2 * 64, 0, 0, g},
			{CmdSetIntrqDMA, uint32(rxDone), uint32(rxDone >> 32), 0, g},
			{CmdGetIRQAckOffset, 0, uint32(rxDone >> 32), 0, g}, // stale: SET_INTRQ_DMA's reply and words
			{CmdGetIRQDeassertOffset, fkAck, uint32(rxDone >> 32), 0, g},
			{CmdSetMACAddress, 0x0060dd47, 0x0001, g, g},
			{CmdEnableFlowControl, g, g, g, g},
			{CmdDisablePromisc, g, g, g, g},
		}
		var got []fakeCmd
		for _, w := range want {
			got = append(got, find(w.Cmd))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("zero=%v: command words (-want +got):\n%s", zero, diff)
		}
		// Every command is eight ascending 8-byte stores.
		var mbox []fakeAccess
		for _, a := range fd.access {
			if a.Write && a.Off >= OffCmd && a.Off < OffCmd+cmdBlockSize {
				mbox = append(mbox, fakeAccess{Write: true, Off: a.Off, Size: a.Size})
			}
		}
		for i, a := range mbox {
			if w := (fakeAccess{Write: true, Off: OffCmd + uint64(i%8)*8, Size: 8}); a.Off != w.Off || a.Size != w.Size {
				t.Fatalf("mailbox store %d: %+v, want %+v", i, a, w)
			}
		}
		if len(mbox) != 8*len(fd.cmds) {
			t.Errorf("%d mailbox stores for %d commands", len(mbox), len(fd.cmds))
		}
		if err := d.Open(ctx); err != nil {
			t.Fatal(err)
		}
		var joins [][2]uint32
		for _, c := range fd.cmds {
			if c.Cmd == CmdJoinMulticastGroup {
				joins = append(joins, [2]uint32{c.D0, c.D1})
			}
		}
		wantJoins := [][2]uint32{{0x01005e00, 0x00010000}, {0x33330000, 0x00010000}, {0x3333ff47, 0x00010000}}
		if diff := cmp.Diff(wantJoins, joins); diff != "" {
			t.Errorf("JOIN_MULTICAST_GROUP data0/data1 (-want +got):\n%s", diff)
		}
		fd.clearLogs()
		if err := d.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]fakeCmd{{CmdEthernetDown, g, g, g, g}}, fd.cmds); diff != "" {
			t.Errorf("ETHERNET_DOWN words (-want +got):\n%s", diff)
		}
	}
}

// TestRxPosting checks both rings are filled completely in aligned groups
// of 8: two 32-byte PIO copies with the first addr_low invalid, then the
// real addr_low in one 4-byte store (§5.2).
func TestRxPosting(t *testing.T) {
	d, fd, _ := newTestDriver(t, fakeOpts{}, Options{MTU: 1500})
	ctx := testCtx(t)
	if err := d.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	fd.clearLogs()
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ring := range []struct {
		base  uint64
		bytes int // buffer stride in the pages
	}{{fkSmall, 128}, {fkBig, 1536}} {
		var acc []fakeAccess
		for _, a := range fd.access {
			if a.Write && a.Off >= ring.base && a.Off < ring.base+0x1000 {
				acc = append(acc, a)
			}
		}
		if len(acc) != 9*fd.rxEntries/recvGroup {
			t.Fatalf("ring %#x: %d stores, want 9 per group of 8", ring.base, len(acc))
		}
		var prev uint64
		for g := 0; g < fd.rxEntries/recvGroup; g++ {
			grp := acc[9*g : 9*g+9]
			base := ring.base + uint64(64*g)
			for i := range 8 {
				if grp[i].Off != base+uint64(8*i) || grp[i].Size != 8 {
					t.Fatalf("group %d store %d: %d@%#x, want 8@%#x", g, i, grp[i].Size, grp[i].Off, base+uint64(8*i))
				}
			}
			if low := binary.BigEndian.Uint32(grp[0].Data[4:]); low != recvInvalidLow {
				t.Errorf("group %d: first addr_low copied as %#x, want 0xffffffff", g, low)
			}
			bell := grp[8]
			if bell.Off != base+4 || bell.Size != 4 {
				t.Fatalf("group %d doorbell: %d@%#x, want 4@%#x", g, bell.Size, bell.Off, base+4)
			}
			addr := uint64(binary.BigEndian.Uint32(grp[0].Data[0:]))<<32 | uint64(binary.BigEndian.Uint32(bell.Data))
			if addr>>32 != testBase>>32 {
				t.Errorf("group %d: buffer %#x, want a high word of %#x", g, addr, testBase>>32)
			}
			// Buffers are carved from pages at cache-line strides.
			if off := int(addr & (pageSize - 1)); off%ring.bytes != 0 || off+ring.bytes > pageSize {
				t.Errorf("group %d: buffer at page offset %d, want a multiple of %d", g, off, ring.bytes)
			}
			if addr == prev {
				t.Errorf("group %d: same buffer as the group before", g)
			}
			prev = addr
		}
	}
	if got := fd.sl[0].posted; got != [2]int{fd.rxEntries, fd.rxEntries} {
		t.Errorf("posted %v, want both rings full (%d)", got, fd.rxEntries)
	}
}

// TestReceiveSmallBig checks the ring choice by length <= small_bytes and
// multi-page big frames, for both MTUs.
func TestReceiveSmallBig(t *testing.T) {
	for _, tc := range []struct {
		mtu    int
		length int
		big    bool
		bufs   int
	}{
		{1500, 60, false, 1},
		{1500, 126, false, 1},
		{1500, 127, true, 1},
		{1500, 1518, true, 1},
		{9000, 1518, false, 1},
		{9000, 1519, true, 1},
		{9000, 4094, true, 1},
		{9000, 4095, true, 2},
		{9000, 9018, true, 3},
	} {
		d, fd, _ := upDriver(t, fakeOpts{}, Options{MTU: tc.mtu})
		frame := testFrame(tc.length)
		if err := fd.deliver(0, frame); err != nil {
			t.Fatal(err)
		}
		got, err := d.Receive(testCtx(t), 0, 1)
		if err != nil {
			t.Fatalf("MTU %d, %d bytes: %v", tc.mtu, tc.length, err)
		}
		if len(got) != 1 || got[0].Big != tc.big || got[0].Buffers != tc.bufs || !cmp.Equal(got[0].Data, frame) {
			t.Errorf("MTU %d, %d bytes: got %d frames, big %v buffers %d, want big %v buffers %d and the same bytes",
				tc.mtu, tc.length, len(got), got[0].Big, got[0].Buffers, tc.big, tc.bufs)
		}
	}
}

// testFrame is an Ethernet frame to the fake's MAC with a counting payload.
func testFrame(n int) []byte {
	b := make([]byte, n)
	copy(b, []byte{0x00, 0x60, 0xdd, 0x47, 0x00, 0x01, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00})
	for i := 14; i < n; i++ {
		b[i] = byte(i * 13)
	}
	return b
}

// TestRefillGroupsOf8 checks the NAPI refill: below the fill threshold the
// ring is refilled, and only complete groups of 8 are posted.
func TestRefillGroupsOf8(t *testing.T) {
	d, fd, _ := upDriver(t, fakeOpts{}, Options{FillThresh: 16})
	ctx := testCtx(t)
	for i := range 50 {
		if err := fd.deliver(0, testFrame(100+i)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Receive(ctx, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	// 64 posted at open; after the 49th frame 15 < 16 remain: refill to
	// 49+64 = 113 buffers, of which the 6 complete groups (48) are posted.
	if got, want := fd.sl[0].posted[0], 64+48; got != want {
		t.Errorf("small ring: %d buffers posted, want %d", got, want)
	}
	if s := d.ss[0].small; s.fill != 113 || s.cnt != 50 {
		t.Errorf("driver fill %d cnt %d, want 113 and 50", s.fill, s.cnt)
	}
}

// TestTransmitAndRingWrap sends enough multi-fragment packets to wrap the
// send ring many times (backward copies at the wrap) and checks every byte
// arrives and every descriptor is freed.
func TestTransmitAndRingWrap(t *testing.T) {
	d, fd, mem := upDriver(t, fakeOpts{}, Options{MTU: 1500})
	ctx := testCtx(t)
	before := mem.InUse()
	var want [][]byte
	for i := range 100 {
		frame := testFrame(200 + 13*i)
		cut1, cut2 := 60, 100+i
		p := Packet{Frags: [][]byte{frame[:cut1], frame[cut1:cut2], frame[cut2:]}, Offsets: []int{0, 4000, 2040}}
		if err := d.Xmit(0, p); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		want = append(want, frame)
		if i%7 == 6 {
			if _, err := d.WaitTx(ctx, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := d.WaitTx(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, fd.sent(0)); diff != "" {
		t.Errorf("frames on the wire (-want +got):\n%s", diff)
	}
	if fd.sl[0].txIdx < 3*fd.txEntries {
		t.Errorf("only %d descriptors used: the ring did not wrap thrice", fd.sl[0].txIdx)
	}
	if got := mem.InUse(); got != before {
		t.Errorf("%d bytes in use after every packet completed, want %d", got, before)
	}
	if err := d.CheckClean(); err != nil {
		t.Error(err)
	}
}

// TestRingFull fills the send ring without completions: the queue stops
// once fewer than 12 slots remain, Xmit then refuses, and completions
// wake it below half the ring.
func TestRingFull(t *testing.T) {
	d, _, _ := upDriver(t, fakeOpts{}, Options{MTU: 1500})
	ctx := testCtx(t)
	n := 0
	for ; n < 100; n++ {
		if err := d.Xmit(0, FramePacket(testFrame(100))); err != nil {
			if !errors.Is(err, ErrRingFull) {
				t.Fatal(err)
			}
			break
		}
	}
	// 64 entries: avail = 62 - in flight; the packet posted at avail 12
	// leaves 11 < 12 and stops the queue: 51 posted.
	if n != 51 || !d.QueueStopped(0) {
		t.Fatalf("%d packets before the ring was full (stopped %v), want 51", n, d.QueueStopped(0))
	}
	if _, err := d.WaitTx(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if d.QueueStopped(0) {
		t.Error("queue still stopped after every completion")
	}
	if err := d.Xmit(0, FramePacket(testFrame(100))); err != nil {
		t.Errorf("after the wake-up: %v", err)
	}
	// A TSO packet needs 64 free slots: never on a 64-entry ring.
	tso := tsoPacket(3000, 1000)
	err := d.Xmit(0, tso)
	wantErr(t, err, ErrRingFull, "NETDEV_TX_BUSY")
}

// tsoPacket is an IPv4/TCP packet of n bytes with a 54-byte header.
func tsoPacket(n, mss int) Packet {
	f := testFrame(n)
	f[14] = 0x45
	f[23] = 6
	f[14+20+12] = 5 << 4
	return Packet{Frags: [][]byte{f[:54], f[54:]}, CsumStart: 34, CsumOffset: 16, MSS: mss, HdrLen: 54}
}

// TestXmitEdgeCases: TSO chains, linearizing, padding, software checksum.
func TestXmitEdgeCases(t *testing.T) {
	d, fd, _ := newTestDriver(t, fakeOpts{}, Options{MTU: 1500})
	fd.txEntries = 256
	ctx := testCtx(t)
	if err := d.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}

	// A TSO chain is one packet for send_done_count.
	tso := tsoPacket(20000, 1448)
	if err := d.Xmit(0, tso); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitTx(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := fd.sent(0); len(got) != 1 || len(got[0]) != 20000 {
		t.Fatalf("TSO: %d chains on the wire", len(got))
	}
	last := fd.sl[0].descs[len(fd.sl[0].descs)-1]
	if last[txOffFlags]&txFlagTSOLast == 0 {
		t.Errorf("TSO: last descriptor flags %#x lack TSO_LAST", last[txOffFlags])
	}

	// More than 64 descriptors: the driver drops a TSO packet.
	f := testFrame(4000)
	frags := [][]byte{f[:54]}
	for i := 54; i < len(f); i += 40 {
		frags = append(frags, f[i:min(i+40, len(f))])
	}
	big := Packet{Frags: frags, CsumStart: 34, CsumOffset: 16, MSS: 1448, HdrLen: 54}
	wantErr(t, d.Xmit(0, big), ErrDropped, "too many")

	// More than 12 for a plain packet: linearized and sent.
	plain := Packet{Frags: frags[:20]}
	if err := d.Xmit(0, plain); err != nil {
		t.Fatal(err)
	}
	if d.Stats().Linearized != 1 {
		t.Errorf("Linearized = %d, want 1", d.Stats().Linearized)
	}

	// Short two-piece frame: linearized and padded with zeros to 60.
	short := testFrame(40)
	if err := d.Xmit(0, Packet{Frags: [][]byte{short[:20], short[20:]}}); err != nil {
		t.Fatal(err)
	}

	// Checksum too far in to offload: the driver computes it.
	long := testFrame(400)
	long[306], long[307] = 0, 0 // a zero pseudo-header seed: the sum then checks to 0xffff
	if err := d.Xmit(0, Packet{Frags: [][]byte{long}, CsumStart: 300, CsumOffset: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitTx(ctx, 0); err != nil {
		t.Fatal(err)
	}
	got := fd.sent(0)
	if !cmp.Equal(got[1], linearize(plain.Frags)) {
		t.Error("linearized packet arrived changed")
	}
	if want := append(append([]byte(nil), short...), make([]byte, 20)...); !cmp.Equal(got[2], want) {
		t.Errorf("short frame on the wire: % x, want % x", got[2], want)
	}
	if Checksum(got[3][300:]) != 0xffff {
		t.Errorf("software checksum: the sum over [300:] is %#x, want 0xffff", Checksum(got[3][300:]))
	}
	if diff := cmp.Diff([]string{"err: TSO but wanted to linearize?!?!?"}, d.Complaints()); diff != "" {
		t.Errorf("complaints (-want +got):\n%s", diff)
	}
}

// TestDeviceMisbehaviour proves each check: a fake that misbehaves in one
// way must make the driver fail with a descriptive error.
func TestDeviceMisbehaviour(t *testing.T) {
	type step func(t *testing.T, d *Driver, fd *fakeDev) error
	rx := func(t *testing.T, d *Driver, fd *fakeDev) error {
		if err := fd.deliver(0, testFrame(100)); err != nil {
			t.Fatal(err)
		}
		_, err := d.Receive(testCtx(t), 0, 1)
		return err
	}
	tx := func(t *testing.T, d *Driver, fd *fakeDev) error {
		if err := d.Xmit(0, FramePacket(testFrame(100))); err != nil {
			t.Fatal(err)
		}
		_, err := d.WaitTx(testCtx(t), 0)
		return err
	}
	for _, tc := range []struct {
		name     string
		opts     Options
		knob     func(fd *fakeDev)
		probeErr bool // the failure shows at Probe, not Open
		run      step
		sentinel error
		want     string
	}{
		{name: "no response", knob: func(fd *fakeDev) {
			fd.answer[CmdSetMTU] = func(fakeCmd) (uint32, Status, bool) { return 0, 0, false }
		}, sentinel: ErrTimeout, want: "SET_MTU"},
		{name: "zero DMA ticks", knob: func(fd *fakeDev) {
			fd.answer[CmdDMATest] = func(fakeCmd) (uint32, Status, bool) { return 0x00010000, StatusOK, true }
		}, probeErr: true, sentinel: ErrProtocol, want: "divides"},
		{name: "bad rx ring size", knob: func(fd *fakeDev) {
			fd.answer[CmdGetRxRingSize] = func(fakeCmd) (uint32, Status, bool) { return 100 * 8, StatusOK, true }
		}, probeErr: true, sentinel: ErrProtocol, want: "power-of-two"},
		{name: "ack offset outside BAR0", knob: func(fd *fakeDev) {
			fd.answer[CmdGetIRQAckOffset] = func(fakeCmd) (uint32, Status, bool) { return BAR0Size - 4, StatusOK, true }
		}, probeErr: true, sentinel: ErrProtocol, want: "outside"},
		{name: "no link up", opts: Options{LinkTimeout: 50 * time.Millisecond}, knob: func(fd *fakeDev) { fd.noLinkUp = true },
			sentinel: ErrTimeout, want: "link up"},
		{name: "rdma tags", knob: func(fd *fakeDev) {
			fd.blockHook = func(_ int, b []byte) { binary.BigEndian.PutUint32(b[irqOffRDMATags:], 14) }
		}, sentinel: ErrProtocol, want: "rdma_tags_available 14"},
		{name: "send_done_count ahead", run: tx, knob: func(fd *fakeDev) {
			fd.blockHook = func(_ int, b []byte) {
				if c := binary.BigEndian.Uint32(b[irqOffSendDoneCount:]); c > 0 {
					binary.BigEndian.PutUint32(b[irqOffSendDoneCount:], c+3)
				}
			}
		}, sentinel: ErrProtocol, want: "send_done_count 4"},
		{name: "spurious interrupt", run: func(t *testing.T, d *Driver, fd *fakeDev) error {
			if err := rx(t, d, fd); err != nil {
				t.Fatal(err)
			}
			_, err := d.ServiceInterrupt(testCtx(t), 0)
			return err
		}, knob: func(fd *fakeDev) { fd.spurious = true }, sentinel: ErrProtocol, want: "valid == 0"},
		{name: "rx token twice", run: func(t *testing.T, d *Driver, fd *fakeDev) error {
			fd.ignoreRx = true
			if err := fd.deliver(0, testFrame(100)); err != nil {
				t.Fatal(err)
			}
			if err := fd.deliver(0, testFrame(100)); err != nil {
				t.Fatal(err)
			}
			_, err := d.Receive(testCtx(t), 0, 2)
			return err
		}, sentinel: ErrProtocol, want: "RX token"},
		{name: "wrong ring", run: rx, knob: func(fd *fakeDev) { fd.wrongRing = true },
			sentinel: ErrProtocol, want: "wrong ring"},
		{name: "past the frame", run: rx, knob: func(fd *fakeDev) { fd.overrun = 4 },
			sentinel: ErrProtocol, want: "past the end"},
		{name: "checksum", run: rx, knob: func(fd *fakeDev) { fd.badCsum = true },
			sentinel: ErrProtocol, want: "checksum"},
		{name: "slot skipped", run: rx, knob: func(fd *fakeDev) { fd.skipSlot = true },
			sentinel: ErrProtocol, want: "never see it"},
		{name: "frame beyond MTU", opts: Options{MTU: 1500}, run: func(t *testing.T, d *Driver, fd *fakeDev) error {
			fd.mtu = 9018 // the device ignores SET_MTU
			fd.smallBytes = 126
			f := testFrame(2000)
			fd.bigBytes = 4096
			if err := fd.deliver(0, f); err != nil {
				t.Fatal(err)
			}
			_, err := d.Receive(testCtx(t), 0, 1)
			return err
		}, sentinel: ErrProtocol, want: "exceeds SET_MTU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, fd, _ := newTestDriver(t, fakeOpts{}, tc.opts)
			if tc.knob != nil {
				tc.knob(fd)
			}
			ctx := testCtx(t)
			err := d.Probe(ctx)
			if tc.probeErr {
				wantErr(t, err, tc.sentinel, tc.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = d.Open(ctx)
			if tc.run == nil {
				wantErr(t, err, tc.sentinel, tc.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantErr(t, tc.run(t, d, fd), tc.sentinel, tc.want)
		})
	}
}

// TestNoLinkDown: without the link-down report Close waits 1 s, then
// tears down and reports "never got down irq".
func TestNoLinkDown(t *testing.T) {
	d, fd, mem := upDriver(t, fakeOpts{}, Options{})
	fd.noLinkDown = true
	start := time.Now()
	err := d.Close(testCtx(t))
	wantErr(t, err, ErrTimeout, "never got down irq")
	if el := time.Since(start); el < time.Second {
		t.Errorf("Close gave up after %v, want the driver's 1 s", el)
	}
	if err := d.Remove(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := mem.InUse(); n != 0 {
		t.Errorf("%d bytes still allocated after Remove", n)
	}
}

// TestDMATestUnknown: an UNKNOWN DMA_TEST is a warning, and the driver
// skips the other two tests.
func TestDMATestUnknown(t *testing.T) {
	d, fd, _ := newTestDriver(t, fakeOpts{}, Options{})
	fd.answer[CmdDMATest] = func(fakeCmd) (uint32, Status, bool) { return 0, StatusUnknown, true }
	if err := d.Probe(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range fd.commands() {
		if c == CmdDMATest {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d DMA_TEST commands, want 1", n)
	}
	if diff := cmp.Diff([]string{"warn: DMA read benchmark failed: -38"}, d.Complaints()); diff != "" {
		t.Errorf("complaints (-want +got):\n%s", diff)
	}
}

// TestINTx: without an MSI capability the driver falls back to INTx,
// writes the deassert register and waits for the device to clear valid.
func TestINTx(t *testing.T) {
	d, fd, _ := upDriver(t, fakeOpts{noMSI: true}, Options{})
	if d.IRQMode() != ModeINTx {
		t.Fatalf("mode %s, want INTx", d.IRQMode())
	}
	if err := fd.deliver(0, testFrame(100)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Receive(testCtx(t), 0, 1); err != nil {
		t.Fatal(err)
	}
	fd.noDeassert = true
	if err := fd.deliver(0, testFrame(100)); err != nil {
		t.Fatal(err)
	}
	_, err := d.Receive(testCtx(t), 0, 1)
	wantErr(t, err, ErrProtocol, "never cleared valid")
}

// TestMultiSlice runs the RSS path: firmware file (PIO copy, read back,
// handoff), probe_slices, MSI-X, per-slice commands, and catches a block
// rewritten inside the handler's window (at the SEND_STOP store).
func TestMultiSlice(t *testing.T) {
	fw := fakeFirmware(512)
	d, fd, _ := newTestDriver(t, fakeOpts{msix: 2}, Options{MaxSlices: -1, Firmware: map[string][]byte{FWRSSAligned: fw, FWAligned: fw}})
	ctx := testCtx(t)
	if err := d.Probe(ctx); err != nil {
		t.Fatalf("Probe: %v\n%v", err, d.Log())
	}
	if d.Slices() != 2 {
		t.Fatalf("%d slices, want 2", d.Slices())
	}
	// The file went to 0x100000 in 256-byte chunks of 8-byte stores, each
	// chunk followed by a 1-byte read of BAR0 offset 0.
	var seq []string
	for _, a := range fd.access {
		switch {
		case a.Write && a.Off >= OffFWStaging && a.Off < OffFWStaging+uint64(len(fw)):
			if a.Size != 8 {
				t.Fatalf("firmware store of %d bytes", a.Size)
			}
			if (a.Off-OffFWStaging)%256 == 0 {
				seq = append(seq, "chunk")
			}
		case !a.Write && a.Off == 0 && a.Size == 1:
			seq = append(seq, "readb")
		}
	}
	// Two loads (aligned at probe, RSS in probe_slices), two chunks each.
	if want := strings.Repeat("chunk readb ", 4); strings.Join(seq, " ")+" " != want {
		t.Errorf("firmware load pattern %q, want %q", strings.Join(seq, " "), want)
	}
	if fd.handoffs != 2 {
		t.Errorf("%d handoffs, want 2", fd.handoffs)
	}
	fd.clearLogs()
	if err := d.Open(ctx); err != nil {
		t.Fatalf("Open: %v\n%v", err, d.Log())
	}
	if d.IRQMode() != ModeMSIX {
		t.Errorf("mode %s, want MSI-X", d.IRQMode())
	}
	var rss []fakeCmd
	for _, c := range fd.cmds {
		switch c.Cmd {
		case CmdEnableRSSQueues, CmdSetRSSTableSize, CmdSetRSSEnable:
			rss = append(rss, fakeCmd{Cmd: c.Cmd, D0: c.D0, D1: c.D1})
		}
	}
	want := []fakeCmd{{Cmd: CmdEnableRSSQueues, D0: 2, D1: 3}, {Cmd: CmdEnableRSSQueues, D0: 2, D1: 3},
		{Cmd: CmdSetRSSTableSize, D0: 2, D1: 3}, {Cmd: CmdSetRSSEnable, D0: 1, D1: rssHashSrcDstPort}}
	if diff := cmp.Diff(want, rss); diff != "" {
		t.Errorf("RSS commands (-want +got):\n%s", diff)
	}
	// Both slices transmit and receive on their own vectors.
	for s := range 2 {
		if err := d.Xmit(s, FramePacket(testFrame(100))); err != nil {
			t.Fatal(err)
		}
		if _, err := d.WaitTx(ctx, s); err != nil {
			t.Fatalf("slice %d: %v", s, err)
		}
		if err := fd.deliver(s, testFrame(300)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Receive(ctx, s, 1); err != nil {
			t.Fatalf("slice %d: %v", s, err)
		}
	}
	// A device that DMAs a new block while the handler runs.
	fd.onSendStop = func(s int) {
		sl := fd.sl[s]
		b := fd.mem.mustBytes(sl.stats, irqDataSize)
		b[irqOffValid] = 2
	}
	if err := d.Xmit(1, FramePacket(testFrame(100))); err != nil {
		t.Fatal(err)
	}
	_, err := d.WaitTx(ctx, 1)
	wantErr(t, err, ErrProtocol, "rewritten")
}

// TestFirmwareLoadFailures: the driver's CRC check and its fall-back to
// adoption.
func TestFirmwareLoadFailures(t *testing.T) {
	t.Run("crc", func(t *testing.T) {
		d, fd, _ := newTestDriver(t, fakeOpts{}, Options{Firmware: map[string][]byte{FWAligned: fakeFirmware(512)}})
		fd.stagingFault = true
		err := d.Probe(testCtx(t))
		if err == nil || !strings.Contains(err.Error(), "differs") {
			t.Fatalf("Probe: %v, want a CRC failure (no adoption after -EIO)", err)
		}
	})
	t.Run("tail not a multiple of 8", func(t *testing.T) {
		// __iowrite64_copy drops the last 4 bytes: the read back differs.
		d, _, _ := newTestDriver(t, fakeOpts{}, Options{Firmware: map[string][]byte{FWAligned: fakeFirmware(516)}})
		if err := d.Probe(testCtx(t)); err == nil {
			t.Fatal("Probe of a 516-byte firmware succeeded")
		}
	})
	t.Run("bad header falls back to adopt", func(t *testing.T) {
		fw := fakeFirmware(512)
		fw[0x40+hdrOffType] = 'X'
		d, fd, _ := newTestDriver(t, fakeOpts{}, Options{Firmware: map[string][]byte{FWAligned: fw}})
		if err := d.Probe(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if name, _, _ := d.Firmware(); name != fwAdopted || fd.handoffs != 0 {
			t.Errorf("firmware %q after %d handoffs, want adopted", name, fd.handoffs)
		}
	})
	t.Run("no dummy RDMA confirmation is only logged", func(t *testing.T) {
		d, fd, _ := newTestDriver(t, fakeOpts{}, Options{})
		fd.noConfirm = true
		if err := d.Probe(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"err: dummy rdma enable failed"}, d.Complaints()); diff != "" {
			t.Errorf("complaints (-want +got):\n%s", diff)
		}
	})
}

// TestRemoveFreesEverything is the leak check of guest memory.
func TestRemoveFreesEverything(t *testing.T) {
	d, fd, mem := upDriver(t, fakeOpts{}, Options{})
	for i := range 5 {
		if err := d.Xmit(0, FramePacket(testFrame(100+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := fd.deliver(0, testFrame(5000)); err != nil {
		t.Fatal(err)
	}
	// Close with packets in flight: they count as dropped.
	if err := d.Remove(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := mem.InUse(); n != 0 {
		t.Errorf("%d bytes still allocated after Remove", n)
	}
	if got := d.Stats().TxDropped + d.Stats().TxCompleted; got != 5 {
		t.Errorf("dropped+completed %d, want 5", got)
	}
}

// TestSetMTUReopens: a running interface is closed and opened again with
// the new buffer sizes.
func TestSetMTUReopens(t *testing.T) {
	d, fd, _ := upDriver(t, fakeOpts{}, Options{})
	fd.clearLogs()
	if err := d.SetMTU(testCtx(t), 1500); err != nil {
		t.Fatal(err)
	}
	var sizes []fakeCmd
	for _, c := range fd.cmds {
		switch c.Cmd {
		case CmdSetMTU, CmdSetSmallBufferSize, CmdSetBigBufferSize:
			sizes = append(sizes, fakeCmd{Cmd: c.Cmd, D0: c.D0})
		}
	}
	want := []fakeCmd{{Cmd: CmdSetMTU, D0: 1518}, {Cmd: CmdSetSmallBufferSize, D0: 126}, {Cmd: CmdSetBigBufferSize, D0: 2048}}
	if diff := cmp.Diff(want, sizes); diff != "" {
		t.Errorf("buffer commands (-want +got):\n%s", diff)
	}
	if cmds := fd.commands(); cmds[0] != CmdEthernetDown {
		t.Errorf("first command %s, want ETHERNET_DOWN", cmds[0])
	}
}

// TestPollingMode: without Interrupts the driver polls the valid byte.
func TestPollingMode(t *testing.T) {
	mem := NewMemory(make([]byte, 8<<20), testBase)
	fd := newFakeDev(t, mem, fakeOpts{})
	d := New(fd, mem, nil, Options{})
	ctx := testCtx(t)
	if err := d.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Xmit(0, FramePacket(testFrame(100))); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitTx(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := fd.deliver(0, testFrame(300)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Receive(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckClean(); err != nil {
		t.Error(err)
	}
}

// TestRSSSingleTxFallback: firmware that refuses multiple TX queues
// (ERROR_RANGE with the bit) gets ENABLE_RSS_QUEUES again without it; the
// other slices are then receive-only: no send ring, no stats block, and
// their handler only schedules NAPI.
func TestRSSSingleTxFallback(t *testing.T) {
	fw := fakeFirmware(256)
	// No plain firmware file: the driver adopts, and then asks for the
	// unaligned RSS file (its name is "adopted", not the aligned one).
	d, fd, _ := newTestDriver(t, fakeOpts{msix: 2}, Options{MaxSlices: 2, Firmware: map[string][]byte{FWRSSUnaligned: fw}})
	fd.answer[CmdEnableRSSQueues] = func(c fakeCmd) (uint32, Status, bool) {
		if c.D1&rssMultipleTx != 0 {
			return 0, StatusErrorRange, true
		}
		return 0, StatusOK, true
	}
	ctx := testCtx(t)
	if err := d.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}
	var got []fakeCmd
	for _, c := range fd.cmds {
		switch c.Cmd {
		case CmdEnableRSSQueues, CmdGetSendOffset, CmdSetStatsDMAV2:
			got = append(got, fakeCmd{Cmd: c.Cmd, D0: c.D0 & 0xffff, D1: c.D1 & 0xff})
		}
	}
	// Probe's reset: (2, 3) refused, (2, 1); open's reset: (2, 1); open: (2, 1).
	want := []fakeCmd{{Cmd: CmdEnableRSSQueues, D0: 2, D1: 3}, {Cmd: CmdEnableRSSQueues, D0: 2, D1: 1},
		{Cmd: CmdEnableRSSQueues, D0: 2, D1: 1}, {Cmd: CmdEnableRSSQueues, D0: 2, D1: 1},
		{Cmd: CmdGetSendOffset, D0: 0, D1: 0xef}, {Cmd: CmdSetStatsDMAV2, D0: uint32(d.ss[0].stats) & 0xffff, D1: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if err := d.Xmit(1, FramePacket(testFrame(100))); !errors.Is(err, ErrState) {
		t.Errorf("Xmit on a receive-only slice: %v, want ErrState", err)
	}
	if err := fd.deliver(1, testFrame(200)); err != nil {
		t.Fatal(err)
	}
	ev, err := d.ServiceInterrupt(ctx, 1)
	if err != nil || len(ev.Frames) != 1 || ev.Valid != 0 {
		t.Fatalf("receive-only slice: %d frames, valid %d, %v", len(ev.Frames), ev.Valid, err)
	}
	for _, a := range fd.access {
		if a.Write && a.Off == fkAck+8+4 {
			t.Error("claim word 1 of a receive-only slice written")
		}
	}
}

// TestWideLinkFirmwareProbe: with 8 lanes or more the driver loads the
// aligned firmware and runs UNALIGNED_TEST; ERROR_UNALIGNED sends it to
// the unaligned firmware (here absent: adopted) without a warning (§3.4).
func TestWideLinkFirmwareProbe(t *testing.T) {
	for _, tc := range []struct {
		status   Status
		wantName string
		wantTxB  int
	}{
		{StatusOK, FWAligned, 4096},
		{StatusErrorUnaligned, fwAdopted, 2048},
	} {
		fw := fakeFirmware(512)
		d, fd, _ := newTestDriver(t, fakeOpts{linkWidth: 8}, Options{Firmware: map[string][]byte{FWAligned: fw}})
		st := tc.status
		fd.answer[CmdUnalignedTest] = func(fakeCmd) (uint32, Status, bool) { return 0x01000100, st, true }
		if err := d.Probe(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		name, _, txb := d.Firmware()
		if name != tc.wantName || txb != tc.wantTxB {
			t.Errorf("UNALIGNED_TEST %s: firmware %q tx boundary %d, want %q %d", st, name, txb, tc.wantName, tc.wantTxB)
		}
		var tests []uint32
		for _, c := range fd.cmds {
			if c.Cmd == CmdUnalignedTest {
				tests = append(tests, c.D2)
			}
		}
		want := []uint32{4096 << 16, 4096, 4096 * 0x10001}
		if st != StatusOK {
			want = want[:1]
		}
		if diff := cmp.Diff(want, tests); diff != "" {
			t.Errorf("UNALIGNED_TEST %s: data2 of the tests (-want +got):\n%s", st, diff)
		}
		if mrrs := binary.LittleEndian.Uint16(fd.cfg[0x80+pcieDevCtl:]) & pcieDevCtlMRRS; mrrs != 5<<12 {
			t.Errorf("DEVCTL.MRRS %#x, want 4096 (5<<12)", mrrs)
		}
		if err := d.CheckClean(); err != nil {
			t.Error(err)
		}
	}
}
