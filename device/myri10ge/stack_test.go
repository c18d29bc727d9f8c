package myri10ge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/internal/leaktest"
)

// Traffic between two NICs on one switch, each behind its own vfio-user
// server and driven by its own fake driver: ring selection by length,
// ring wraps and refills, ring full on both sides, TSO, checksum offload,
// VLAN tags; then the link.

// TestStackRingSelection sends frames on both sides of small_bytes and
// jumbo frames over several pages, both ways, and checks each arrives
// byte for byte in the ring and the number of buffers the driver expects.
func TestStackRingSelection(t *testing.T) {
	leaktest.Check(t)
	type frame struct {
		n       int
		vlan    bool
		big     bool
		buffers int
	}
	tests := []struct {
		mtu    int
		frames []frame
	}{
		// MTU 1500: small_bytes 126, big buffers of 2048 bytes.
		{1500, []frame{{60, false, false, 1}, {100, false, false, 1}, {125, false, false, 1}, {126, false, false, 1},
			{127, false, true, 1}, {128, false, true, 1}, {600, false, true, 1}, {1514, false, true, 1},
			{64, true, false, 1}, {126, true, false, 1}, {127, true, true, 1}, {1518, true, true, 1}}},
		// MTU 9000: small_bytes 1518, big buffers of a page, frames up to 9018.
		{9000, []frame{{60, false, false, 1}, {1518, false, false, 1}, {1518, true, false, 1}, {1519, false, true, 1},
			{1520, true, true, 1}, {4094, false, true, 1}, {4095, false, true, 2}, {8190, false, true, 2},
			{8191, false, true, 3}, {9014, false, true, 3}, {9018, true, true, 3}}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("MTU %d", tt.mtu), func(t *testing.T) {
			ctx, a, b := mtuPair(t, 60*time.Second, tt.mtu)
			for _, dir := range []struct {
				name     string
				from, to *nicNode
			}{{"A to B", a, b}, {"B to A", b, a}} {
				var pkts []txPkt
				var want [][]byte
				for i, fr := range tt.frames {
					spec := frameSpec{VLAN: fr.vlan}
					f := buildFrame(t, spec, pattern(fr.n-spec.hdrLen(), byte(i)))
					if dir.from == b {
						f = reversed(f)
					}
					pkts, want = append(pkts, plain(f)), append(want, f)
				}
				got := xfer(t, ctx, dir.from, dir.to, pkts)
				checkFrames(t, dir.name, want, got)
				for i, f := range got {
					if i >= len(tt.frames) {
						break
					}
					if w := tt.frames[i]; f.Big != w.big || f.Buffers != w.buffers {
						t.Errorf("%s: %d-byte frame (VLAN %v): big ring %v in %d buffers, want %v in %d",
							dir.name, w.n, w.vlan, f.Big, f.Buffers, w.big, w.buffers)
					}
				}
			}
			a.checkClean()
			b.checkClean()
		})
	}
}

// TestStackRingWraps moves thousands of frames of mixed sizes both ways:
// the send rings, both receive rings and the rx_done rings wrap many
// times, the driver refills in groups of 8 as NAPI consumes, and nothing
// is dropped or reordered.
func TestStackRingWraps(t *testing.T) {
	leaktest.Check(t)
	// Each node receives half the frames, half of those in each ring.
	total, wraps := 8000, 3
	if testing.Short() {
		total, wraps = 2400, 1
	}
	ctx, a, b := mtuPair(t, 120*time.Second, 1500)
	const chunk = 64
	small, big := map[*nicNode]int{}, map[*nicNode]int{}
	for sent := 0; sent < total; sent += chunk {
		from, to := a, b
		if sent/chunk%2 == 1 {
			from, to = b, a
		}
		var pkts []txPkt
		var want [][]byte
		for i := range chunk {
			k := sent + i
			// Sizes alternate sides of small_bytes (126).
			n := 60 + (k*37)%67
			if k%2 != 0 {
				n = 127 + (k*131)%1388
			}
			f := sizedFrame(t, n, byte(k))
			if from == b {
				f = reversed(f)
			}
			pkts, want = append(pkts, plain(f)), append(want, f)
		}
		got := xfer(t, ctx, from, to, pkts)
		checkFrames(t, fmt.Sprintf("frames %d..%d", sent, sent+chunk-1), want, got)
		for _, f := range got {
			if f.Big {
				big[to]++
			} else {
				small[to]++
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	for _, n := range []*nicNode{a, b} {
		// 512 entries per receive ring, 1024 per send ring and rx_done ring.
		if small[n] < wraps*512 || big[n] < wraps*512 {
			t.Errorf("%s: %d small and %d big frames: the receive rings did not wrap %d times", n.name, small[n], big[n], wraps)
		}
		st := n.nic.Stats()
		if st.TxPackets < uint64(wraps*1024) || st.RxFrames != uint64(small[n]+big[n]) || st.RxDropped != 0 || st.TxDropped != 0 {
			t.Errorf("%s: NIC stats %+v: want the send ring wrapped %d times, every frame received, none dropped", n.name, st, wraps)
		}
		checkRxRings(t, n)
		n.checkClean()
	}
}

// checkRxRings reads slice 0's receive rings back from BAR0: every group
// of 8 is posted whole (its first addr_low is not the driver's 0xFFFFFFFF
// placeholder) and points into the guest's RAM.
func checkRxRings(t *testing.T, n *nicNode) {
	t.Helper()
	for _, off := range []uint64{0x300000, 0x340000} {
		ring := make([]byte, 512*8)
		if err := n.c.ReadRegion(0, off, ring); err != nil {
			t.Fatal(err)
		}
		for e := 0; e < 512; e++ {
			addr := uint64(binary.BigEndian.Uint32(ring[e*8:]))<<32 | uint64(binary.BigEndian.Uint32(ring[e*8+4:]))
			if addr < stackIOVA || addr >= stackIOVA+stackRAM {
				t.Errorf("%s: ring at %#x entry %d holds %#x, outside guest RAM (group not posted whole?)", n.name, off, e, addr)
				return
			}
		}
	}
}

// TestStackRingFull fills the sender's send ring until Xmit refuses
// (nothing completed while it fills), with the receiver not servicing its
// interrupts: its small ring takes 512 frames, its FIFO holds 128 more and
// it drops the rest, counted in the interrupt block's dropped_no_small;
// then the same for big frames and dropped_no_big. Both recover, and the
// held frames land once the driver reposts.
func TestStackRingFull(t *testing.T) {
	leaktest.Check(t)
	ctx, a, b := mtuPair(t, 60*time.Second, 1500)

	fill := func(name string, size, limit int, blkOff uint64) {
		t.Helper()
		before := b.nic.Stats()
		var want [][]byte
		for len(want) < limit {
			f := sizedFrame(t, size, byte(len(want)))
			err := a.drv.Xmit(0, myritest.FramePacket(f))
			if errors.Is(err, myritest.ErrRingFull) {
				break
			}
			if err != nil {
				t.Fatalf("%s: Xmit %d: %v", name, len(want), err)
			}
			want = append(want, f)
		}
		sent := len(want)
		if limit > 1024 {
			// The send ring holds 1024 descriptors; the driver stops its
			// queue when fewer than 12 would remain.
			if sent < 1000 || !a.drv.QueueStopped(0) {
				t.Fatalf("%s: Xmit refused after %d packets (queue stopped %v), want about 1011", name, sent, a.drv.QueueStopped(0))
			}
			if descs, pkts := a.drv.TxInFlight(0); pkts != sent || descs != sent {
				t.Errorf("%s: %d descriptors and %d packets in flight, want %d", name, descs, pkts, sent)
			}
		}
		// Every frame reaches b's NIC: taken, waiting in its FIFO or
		// dropped.
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := b.nic.Stats()
			if st.RxFrames+st.RxDropped+st.RxHeld-before.RxFrames-before.RxDropped-before.RxHeld >= uint64(sent) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: b's NIC saw %d of %d frames", name, st.RxFrames+st.RxDropped+st.RxHeld-before.RxFrames-before.RxDropped-before.RxHeld, sent)
			}
			time.Sleep(time.Millisecond)
		}
		const held = myri10ge.RxHoldFrames
		dropped := sent - 512 - held
		if c := b.nic.Counters(); c.Stats.RxFrames-before.RxFrames != 512 || c.Stats.RxHeld-before.RxHeld != held ||
			c.Slices[0].Held != held || c.Stats.RxDropped-before.RxDropped != uint64(dropped) {
			t.Errorf("%s: b's NIC took %d frames, holds %d (%d waited) and dropped %d, want 512, %d and %d", name,
				c.Stats.RxFrames-before.RxFrames, c.Slices[0].Held, c.Stats.RxHeld-before.RxHeld, c.Stats.RxDropped-before.RxDropped, held, dropped)
		}
		// The sender's completions wake its queue.
		if _, err := a.drv.WaitTx(ctx, 0); err != nil {
			t.Fatalf("%s: WaitTx: %v", name, err)
		}
		if a.drv.QueueStopped(0) {
			t.Errorf("%s: the send queue is still stopped after every completion", name)
		}
		// The driver's reposting lets the waiting frames land behind the
		// first 512, in order.
		got, err := b.drv.Receive(ctx, 0, 512+held)
		if err != nil {
			t.Fatalf("%s: Receive: %v\n%s", name, err, b.driverLog())
		}
		checkFrames(t, name, want[:512+held], got)
		// The claim that ended the poll made the device report again,
		// with the drop counted.
		if err := b.c.Sync(); err != nil {
			t.Fatal(err)
		}
		blk := b.statsBlock(0)
		if v := be32At(b.mem, blk+blkOff); v != uint32(dropped) {
			t.Errorf("%s: interrupt block counter at %#x = %d, want %d", name, blkOff, v, dropped)
		}
	}
	fill("small frames", 100, 2000, blkDroppedNoSmall)
	fill("big frames", 1000, 700, blkDroppedNoBig)

	// Both directions work again, and nothing is left behind.
	f := sizedFrame(t, 700, 1)
	checkFrames(t, "after", [][]byte{f}, xfer(t, ctx, a, b, []txPkt{plain(f)}))
	checkFrames(t, "after", [][]byte{reversed(f)}, xfer(t, ctx, b, a, []txPkt{plain(reversed(f))}))
	for _, n := range []*nicNode{a, b} {
		if err := n.drv.Close(ctx); err != nil {
			t.Errorf("%s: Close: %v", n.name, err)
		}
		n.checkClean()
	}
}

// TestStackTSO sends TSO chains and checks the segments on the receiving
// side: each built independently and compared byte for byte, IPv4 and TCP
// checksums verified, the payload reassembled, FIN and PSH only on the
// last segment, CWR only on the first.
func TestStackTSO(t *testing.T) {
	leaktest.Check(t)
	type chain struct {
		spec            frameSpec
		payload         int
		hdrCut, fragLen int
	}
	base := frameSpec{TSOpt: true, Seq: 0xFFFFF000, ID: 0xFFF0, FIN: true, PSH: true, CWR: true}
	vlan := base
	vlan.VLAN = true
	tests := []struct {
		mtu, mss int
		chains   []chain
	}{
		{1500, 1448, []chain{
			{base, 20000, 30, 4096},      // not a multiple of the MSS; headers across two descriptors
			{base, 4 * 1448, 14, 1448},   // a multiple
			{base, 1000, 40, 1000},       // one short segment
			{base, 1449, 60, 700},        // a full one and a 1-byte one
			{base, 60000, 34, 9000},      // near the 64 KiB limit
			{vlan, 10000, 20, 3000},      // tagged: segments of 1518 bytes
			{frameSpec{}, 5000, 54, 700}, // 20-byte TCP header, the header cut at its end
		}},
		{9000, 8948, []chain{
			{base, 50000, 30, 8192},
			{base, 3 * 8948, 50, 4096},
			{base, 8949, 40, 20000},
		}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("MSS %d", tt.mss), func(t *testing.T) {
			ctx, a, b := mtuPair(t, 60*time.Second, tt.mtu)
			for i, c := range tt.chains {
				pay := pattern(c.payload, byte(i+1))
				p := superFrame(t, c.spec, pay, tt.mss, c.hdrCut, c.fragLen)
				got := xfer(t, ctx, a, b, []txPkt{p})
				t.Run(fmt.Sprintf("%d bytes", c.payload), func(t *testing.T) {
					checkSegments(t, tsoCase{spec: c.spec, mss: tt.mss}, pay, datas(got))
					for k, f := range got {
						if !csumEq(myritest.Checksum(f.Data[14:]), f.Csum) {
							t.Errorf("segment %d: rx_done checksum %#04x, the sum is %#04x", k, f.Csum, myritest.Checksum(f.Data[14:]))
						}
					}
				})
			}
			// No TSO6 offered (GET_MAX_TSO6_HDR_SIZE is UNKNOWN): the
			// driver refuses an IPv6 TSO packet and the stack segments it.
			v6 := superFrame(t, frameSpec{IPv6: true}, pattern(3000, 9), tt.mss, 20, 1000)
			v6.p.IPv6 = true
			if err := a.drv.Xmit(0, v6.p); !errors.Is(err, myritest.ErrState) {
				t.Errorf("IPv6 TSO: %v, want the driver's refusal (no TSO6)", err)
			}
			if st := a.nic.Stats(); st.TxPackets != uint64(len(tt.chains)) || st.TxDropped != 0 {
				t.Errorf("sender NIC stats %+v: want %d chains, none dropped", st, len(tt.chains))
			}
			a.checkClean()
			b.checkClean()
		})
	}
}

// TestStackChecksumOffload sends frames with CHECKSUM_PARTIAL (the L4
// checksum field holding the pseudo-header seed), some VLAN-tagged and
// cut inside the headers, and checks they arrive as the stack would have
// built them with the checksum in software.
func TestStackChecksumOffload(t *testing.T) {
	leaktest.Check(t)
	ctx, a, b := mtuPair(t, 60*time.Second, 1500)
	tests := []struct {
		name    string
		spec    frameSpec
		payload int
		cut     int
	}{
		{"IPv4 TCP", frameSpec{}, 1460, 54},
		{"IPv4 TCP, cut before the checksum", frameSpec{TSOpt: true}, 1000, 45},
		{"IPv4 UDP", frameSpec{UDP: true}, 1472, 42},
		{"IPv4 UDP, odd length", frameSpec{UDP: true}, 333, 7},
		{"IPv4 UDP, padded to 60", frameSpec{UDP: true}, 6, 48},
		{"IPv6 TCP", frameSpec{IPv6: true}, 1440, 74},
		{"IPv6 UDP", frameSpec{IPv6: true, UDP: true}, 999, 60},
		{"VLAN IPv4 TCP, 1518 bytes", frameSpec{VLAN: true}, 1460, 18},
		{"VLAN IPv6 UDP", frameSpec{VLAN: true, IPv6: true, UDP: true}, 500, 30},
	}
	var pkts []txPkt
	var want [][]byte
	for i, tt := range tests {
		f := buildFrame(t, tt.spec, pattern(tt.payload, byte(i)))
		p := offload(tt.spec, f, min(tt.cut, len(f)-1))
		if len(f) < 60 {
			p = myritest.Packet{Frags: [][]byte{bytes.Join(p.Frags, nil)}, CsumStart: p.CsumStart, CsumOffset: p.CsumOffset}
		}
		pkts, want = append(pkts, txPkt{p, 1}), append(want, f)
	}
	got := xfer(t, ctx, a, b, pkts)
	checkFrames(t, "offloaded", want, got)
	for i, f := range got {
		fi, _, err := decodeFrame(f.Data)
		if err != nil || !fi.IPCsum || !fi.L4Csum {
			t.Errorf("%s: decoded %+v, %v: checksums must verify", tests[i].name, fi, err)
		}
	}
	a.checkClean()
	b.checkClean()
}

// TestStackLink pulls the cable of one port while the interface is up:
// the driver sees link down and up through interrupts, frames sent
// meanwhile complete but are not delivered; then ten close/open cycles
// with traffic in between, each close getting its link_down report.
func TestStackLink(t *testing.T) {
	leaktest.Check(t)
	ctx, a, b := mtuPair(t, 90*time.Second, 1500)

	waitLink := func(want uint32) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for a.drv.Link() != want {
			ev, err := a.drv.ServiceInterrupt(wctx, 0)
			if err != nil {
				t.Fatalf("waiting for link %d (have %d): %v", want, a.drv.Link(), err)
			}
			if len(ev.Frames) != 0 || ev.LinkDown != 0 {
				t.Errorf("link event %+v: frames or link_down in a carrier report", ev)
			}
		}
	}
	a.port.SetLink(false)
	waitLink(myritest.LinkDown)
	before := b.nic.Stats()
	if err := a.drv.Xmit(0, myritest.FramePacket(sizedFrame(t, 300, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := a.drv.WaitTx(ctx, 0); err != nil {
		t.Fatalf("a transmit with the link down must still complete: %v", err)
	}
	if st := a.nic.Stats(); st.TxDropped != 1 {
		t.Errorf("sender NIC TxDropped = %d, want 1 (no carrier)", st.TxDropped)
	}
	b.port.SetLink(true) // no change: a's cable is out, not b's
	a.port.SetLink(true)
	waitLink(myritest.LinkUp)
	if st := b.nic.Stats(); st.RxFrames != before.RxFrames {
		t.Errorf("b received %d frames while a's link was down", st.RxFrames-before.RxFrames)
	}
	f := sizedFrame(t, 400, 2)
	checkFrames(t, "after link up", [][]byte{f}, xfer(t, ctx, a, b, []txPkt{plain(f)}))

	cycles := 10
	for i := range cycles {
		for _, n := range []*nicNode{a, b} {
			if i%2 == 1 && n == b {
				continue // b cycles every other round
			}
			if err := n.drv.Close(ctx); err != nil {
				t.Fatalf("cycle %d: %s: Close: %v", i, n.name, err)
			}
			if err := n.drv.Open(ctx); err != nil {
				t.Fatalf("cycle %d: %s: Open: %v\n%s", i, n.name, err, n.driverLog())
			}
		}
		f := sizedFrame(t, 100+i*50, byte(i))
		checkFrames(t, fmt.Sprintf("cycle %d A to B", i), [][]byte{f}, xfer(t, ctx, a, b, []txPkt{plain(f)}))
		checkFrames(t, fmt.Sprintf("cycle %d B to A", i), [][]byte{reversed(f)}, xfer(t, ctx, b, a, []txPkt{plain(reversed(f))}))
	}
	for _, n := range []*nicNode{a, b} {
		if err := n.drv.Close(ctx); err != nil {
			t.Errorf("%s: final Close: %v", n.name, err)
		}
		n.checkClean()
	}
	// a: one report per open and close, plus the carrier loss.
	if st := a.nic.Stats(); st.LinkDownEvents != uint64(cycles+2) || st.LinkUpEvents != uint64(cycles+2) {
		t.Errorf("a: %d link-down and %d link-up reports, want %d each", st.LinkDownEvents, st.LinkUpEvents, cycles+2)
	}
}

// TestStackRxFilter checks the receive filter the driver programs (its
// MAC, broadcast, the multicast groups Linux joins, then promiscuous and
// all-multicast modes) and the length check against SET_MTU, with each
// drop counted in the interrupt block.
func TestStackRxFilter(t *testing.T) {
	leaktest.Check(t)
	ctx := stackCtx(t, 60*time.Second)
	a, b := newPair(t, ctx, nodeOpts{drv: myritest.Options{MTU: 9000}}, nodeOpts{drv: myritest.Options{MTU: 1500}})
	var (
		bcast   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		joined4 = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01} // all-hosts, joined at open
		joined6 = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
		other   = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}
	)
	type frame struct {
		dst     net.HardwareAddr
		n       int
		deliver bool
	}
	round := func(name string, frames []frame, unicast, multicast, overrun uint32) {
		t.Helper()
		before := b.nic.Stats()
		var want [][]byte
		for i, fr := range frames {
			f := retarget(sizedFrame(t, fr.n, byte(i)), fr.dst, macA)
			if err := a.drv.Xmit(0, myritest.FramePacket(f)); err != nil {
				t.Fatal(err)
			}
			if fr.deliver {
				want = append(want, f)
			}
		}
		if _, err := a.drv.WaitTx(ctx, 0); err != nil {
			t.Fatal(err)
		}
		got, err := b.drv.Receive(ctx, 0, len(want))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkFrames(t, name, want, got)
		waitStats(t, b, func(s myri10ge.Stats) bool {
			return s.RxFrames+s.RxDropped-before.RxFrames-before.RxDropped == uint64(len(frames))
		})
		if err := b.c.Sync(); err != nil {
			t.Fatal(err)
		}
		blk := b.statsBlock(0)
		for _, c := range []struct {
			what string
			off  uint64
			want uint32
		}{{"dropped_unicast_filtered", blkDroppedUnicast, unicast}, {"dropped_multicast_filtered", blkDroppedMulticast, multicast},
			{"dropped_overrun", blkDroppedOverrun, overrun}} {
			if v := be32At(b.mem, blk+c.off); v != c.want {
				t.Errorf("%s: %s = %d, want %d", name, c.what, v, c.want)
			}
		}
	}
	round("filtered", []frame{
		{macNobody, 100, false}, {bcast, 100, true}, {joined4, 200, true}, {other, 300, false},
		{joined6, 400, true}, {macB, 1519, false}, {macB, 1518, true},
	}, 1, 1, 1)
	if err := b.drv.SetRxMode(ctx, myritest.RxMode{Promisc: true}); err != nil {
		t.Fatal(err)
	}
	round("promiscuous", []frame{{macNobody, 100, true}, {other, 300, true}, {macB, 2000, false}, {macB, 64, true}}, 1, 1, 2)
	if err := b.drv.SetRxMode(ctx, myritest.RxMode{AllMulti: true}); err != nil {
		t.Fatal(err)
	}
	round("all-multicast", []frame{{macNobody, 100, false}, {other, 300, true}, {macB, 64, true}}, 2, 1, 2)
	a.checkClean()
	b.checkClean()
}

// TestStackSuspendResume suspends and resumes a running interface (close,
// dummy RDMA off; reset, dummy RDMA on, open) and changes its MTU while
// up; traffic flows after each.
func TestStackSuspendResume(t *testing.T) {
	leaktest.Check(t)
	ctx, a, b := mtuPair(t, 60*time.Second, 1500)
	check := func(what string, n int) {
		t.Helper()
		f := sizedFrame(t, n, byte(n))
		checkFrames(t, what, [][]byte{f}, xfer(t, ctx, a, b, []txPkt{plain(f)}))
		checkFrames(t, what, [][]byte{reversed(f)}, xfer(t, ctx, b, a, []txPkt{plain(reversed(f))}))
	}
	for i := range 3 {
		up, err := a.drv.Suspend(ctx)
		if err != nil || !up {
			t.Fatalf("Suspend: up %v, %v", up, err)
		}
		if err := a.drv.Resume(ctx, up); err != nil {
			t.Fatalf("Resume: %v\n%s", err, a.driverLog())
		}
		check(fmt.Sprintf("after resume %d", i), 300+i)
	}
	for _, n := range []*nicNode{a, b} {
		if err := n.drv.SetMTU(ctx, 9000); err != nil {
			t.Fatalf("%s: SetMTU: %v", n.name, err)
		}
	}
	check("MTU 9000", 9014)
	a.checkClean()
	b.checkClean()
}
