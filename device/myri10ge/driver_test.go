package myri10ge_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/pci/pcitest"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
)

// The fake Linux driver against the real device over vfio-user: the PCI
// function, the driver's command sequences, every command number, and
// the three interrupt mechanisms.

// TestStackPCIFunction checks the function the guest's PCI core sees:
// pcitest's conformance checks on a fresh function, then the identity,
// BARs and capabilities the driver relies on, read through vfio-user.
func TestStackPCIFunction(t *testing.T) {
	leaktest.Check(t)
	for _, ns := range []int{1, 4} {
		t.Run(fmt.Sprintf("slices=%d", ns), func(t *testing.T) {
			mac := macA
			nic, err := myri10ge.New(myri10ge.Config{Name: "myri0", MAC: mac, Slices: ns,
				Port: fabrictest.NewPort(1), Log: (&logSink{}).logger(logrus.WarnLevel)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nic.Close() })
			f, err := pci.NewFunction(nic, (&logSink{}).logger(logrus.ErrorLevel))
			if err != nil {
				t.Fatal(err)
			}
			if err := pcitest.Check(f); err != nil {
				t.Error(err)
			}

			n := newNode(t, newSwitch(t), "myri0", mac, nodeOpts{slices: ns})
			cfg, err := n.c.ReadConfig(0, 256)
			if err != nil {
				t.Fatal(err)
			}
			le := binary.LittleEndian
			caps := map[byte]int{}
			for p, hops := int(cfg[0x34]), 0; p >= 0x40 && hops < 48; p, hops = int(cfg[p+1]), hops+1 {
				caps[cfg[p]] = p
			}
			got := map[string]any{
				"vendor":       le.Uint16(cfg[0:]),
				"device":       le.Uint16(cfg[2:]),
				"subvendor":    le.Uint16(cfg[0x2C:]),
				"subdevice":    le.Uint16(cfg[0x2E:]),
				"class":        le.Uint32(cfg[8:]) >> 8,
				"BAR0 flags":   le.Uint32(cfg[0x10:]) & 0xF,
				"BAR2 flags":   le.Uint32(cfg[0x18:]) & 0xF,
				"INTx pin":     cfg[0x3D],
				"capabilities": slices.Sorted(maps.Keys(caps)),
			}
			want := map[string]any{
				"vendor": uint16(0x14C1), "device": uint16(0x0008), "subvendor": uint16(0x14C1), "subdevice": uint16(0x0008),
				"class": uint32(0x020000), "BAR0 flags": uint32(0xC), "BAR2 flags": uint32(0x4), "INTx pin": uint8(1),
				"capabilities": []byte{0x01, 0x05, 0x09, 0x10, 0x11},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config space (-want +got):\n%s", diff)
			}
			if p, ok := caps[0x10]; ok {
				if w := le.Uint16(cfg[p+0x12:]) >> 4 & 0x3F; w != 4 {
					t.Errorf("PCIe negotiated link width x%d, want x4 (the simple firmware path)", w)
				}
			}
			if p, ok := caps[0x11]; ok {
				tbl, pba := le.Uint32(cfg[p+4:]), le.Uint32(cfg[p+8:])
				if n := int(le.Uint16(cfg[p+2:])&0x7FF) + 1; n != ns || tbl != 2 || pba != 0x1000|2 {
					t.Errorf("MSI-X: %d vectors, table %#x, PBA %#x; want %d, BIR 2 at 0, BIR 2 at 0x1000", n, tbl, pba, ns)
				}
			}
			if p, ok := caps[0x05]; ok {
				if ctl := le.Uint16(cfg[p+2:]); ctl&0x80 == 0 || ctl>>1&7 != 0 {
					t.Errorf("MSI control %#x: want 64-bit, one vector", ctl)
				}
			}
			for _, r := range []struct {
				index uint32
				size  uint64
			}{{0, 16 << 20}, {2, 8 << 10}} {
				ri, err := n.c.RegionInfo(r.index)
				if err != nil {
					t.Fatal(err)
				}
				ri.Close()
				if ri.Size != r.size || ri.Flags&vfiousertest.RegionFlagMmap != 0 {
					t.Errorf("region %d: %d bytes, flags %#x; want %d, trapped (no mmap)", r.index, ri.Size, ri.Flags, r.size)
				}
			}
			if ii, err := n.c.IRQInfo(vfiousertest.IRQIndexMSIX); err != nil || ii.Count != uint32(ns) {
				t.Errorf("MSI-X IRQ info %+v, %v; want %d vectors", ii, err, ns)
			}
		})
	}
}

type cmds = []abi.Cmd

// The driver's command sequences (§4.4), single slice, no firmware file.
var (
	seqResetHead = cmds{abi.CmdReset, abi.CmdDMATest, abi.CmdDMATest, abi.CmdDMATest,
		abi.CmdSetRSSMCPSlotType, abi.CmdSetIntrqSize, abi.CmdSetIntrqDMA, abi.CmdGetIRQAckOffset,
		abi.CmdGetIRQDeassertOffset, abi.CmdGetIntrCoalDelayOffset}
	seqResetTail = cmds{abi.CmdSetMACAddress, abi.CmdEnableFlowControl}
	seqRxMode    = cmds{abi.CmdDisablePromisc, abi.CmdEnableAllMulti, abi.CmdLeaveAllMulticast,
		abi.CmdJoinMulticastGroup, abi.CmdJoinMulticastGroup, abi.CmdJoinMulticastGroup, abi.CmdDisableAllMulti}
	seqRings = cmds{abi.CmdGetSendOffset, abi.CmdGetSmallRxOffset, abi.CmdGetBigRxOffset,
		abi.CmdGetSendRingSize, abi.CmdGetRxRingSize, abi.CmdSetStatsDMAV2, abi.CmdSetMTU,
		abi.CmdSetSmallBufferSize, abi.CmdSetBigBufferSize, abi.CmdSetTSOMode, abi.CmdEthernetUp}
)

func names(cs ...cmds) []string {
	var out []string
	for _, c := range cs {
		for _, x := range c {
			out = append(out, x.String())
		}
	}
	return out
}

// TestStackLifecycle replays probe, open, close, a second open and close,
// and remove, and checks the commands the device executed against the
// driver's sequences (§4.4), the device's counters against the driver's,
// and that the driver found nothing to complain about.
func TestStackLifecycle(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name       string
		opts       myritest.Options
		mtu        uint32 // SET_MTU
		small, big uint32 // SET_SMALL_BUFFER_SIZE, SET_BIG_BUFFER_SIZE
	}{
		{"default", myritest.Options{}, 9018, 1518, 4096},
		{"MTU 1500", myritest.Options{MTU: 1500}, 1518, 126, 2048},
		{"MTU 9000", myritest.Options{MTU: 9000}, 9018, 1518, 4096},
		{"DCA, zeroed words", myritest.Options{MTU: 1500, DCA: true, ZeroUninit: true}, 1518, 126, 2048},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := stackCtx(t, 60*time.Second)
			n := newNode(t, newSwitch(t), "myri0", macA, nodeOpts{drv: tt.opts})
			reset := slices.Concat(seqResetHead, seqResetTail)
			if tt.opts.DCA {
				reset = slices.Concat(seqResetHead, cmds{abi.CmdGetDCAOffset}, seqResetTail)
			}
			steps := []struct {
				name string
				run  func() error
				want []string
			}{
				{"probe", func() error { return n.drv.Probe(ctx) },
					names(cmds{abi.CmdGetMaxTSO6HdrSize, abi.CmdGetRxRingSize}, reset, cmds{abi.CmdDisablePromisc})},
				{"open", func() error { return n.drv.Open(ctx) },
					names(reset, cmds{abi.CmdDisablePromisc}, seqRings, seqRxMode)},
				{"close", func() error { return n.drv.Close(ctx) }, names(cmds{abi.CmdEthernetDown})},
				// From the second open on, the reset runs the whole rx mode.
				{"reopen", func() error { return n.drv.Open(ctx) }, names(reset, seqRxMode, seqRings, seqRxMode)},
				{"close again", func() error { return n.drv.Close(ctx) }, names(cmds{abi.CmdEthernetDown})},
				{"remove", func() error { return n.drv.Remove(ctx) }, nil},
			}
			for _, st := range steps {
				mark := n.logs.mark()
				before, dBefore := n.nic.Stats(), n.drv.Stats()
				if err := st.run(); err != nil {
					t.Fatalf("%s: %v\n%s", st.name, err, n.driverLog())
				}
				got := n.logs.commands(mark)
				if diff := cmp.Diff(st.want, got); diff != "" {
					t.Errorf("%s: commands the device executed (-want +got):\n%s", st.name, diff)
				}
				after, dAfter := n.nic.Stats(), n.drv.Stats()
				unknown := 0
				for _, c := range got {
					if c == abi.CmdGetMaxTSO6HdrSize.String() || c == abi.CmdGetDCAOffset.String() {
						unknown++
					}
				}
				if d := after.Commands - before.Commands; d != uint64(len(got)) || int(d) != dAfter.Commands-dBefore.Commands {
					t.Errorf("%s: the NIC counted %d commands, its log %d, the driver sent %d", st.name, d, len(got), dAfter.Commands-dBefore.Commands)
				}
				if d := after.UnknownCmds - before.UnknownCmds; d != uint64(unknown) {
					t.Errorf("%s: %d commands answered UNKNOWN, want %d (only GET_MAX_TSO6_HDR_SIZE and GET_DCA_OFFSET)", st.name, d, unknown)
				}
				if d := after.FailedCmds - before.FailedCmds; d != 0 {
					t.Errorf("%s: %d commands failed", st.name, d)
				}
				if err := n.drv.CheckClean(); err != nil {
					t.Errorf("%s: %v", st.name, err)
				}
			}
			// The buffer sizes the driver asked for, from the device's log.
			for _, c := range []struct {
				cmd  abi.Cmd
				want uint32
			}{{abi.CmdSetMTU, tt.mtu}, {abi.CmdSetSmallBufferSize, tt.small}, {abi.CmdSetBigBufferSize, tt.big}} {
				var last any
				for _, l := range n.logs.since(0) {
					if l.Msg == "command" && l.Fields["cmd"] == c.cmd.String() {
						last = l.Fields["data0"]
					}
				}
				if last != c.want {
					t.Errorf("%s data0 = %v, want %d", c.cmd, last, c.want)
				}
			}
			st := n.nic.Stats()
			if st.LinkUpEvents != 2 || st.LinkDownEvents != 2 || st.GuestErrors != 0 || st.DMAErrors != 0 {
				t.Errorf("NIC stats %+v: want 2 link-up and 2 link-down reports, no guest or DMA errors", st)
			}
			if name, _, bndry := n.drv.Firmware(); name != "adopted" || bndry != 2048 {
				t.Errorf("firmware %q, tx boundary %d; want the adopted firmware, 2048", name, bndry)
			}
			if u := n.mem.InUse(); u != 0 {
				t.Errorf("%d bytes of guest memory still allocated after remove", u)
			}
		})
	}
}

// TestStackEveryCommand sends every command number 0..70 with the words
// the driver leaves uninitialised (0xDEADBEEF) and with zeros, and checks
// each answer against the README's table. Every command is answered: an
// unanswered one is a timeout in Cmd.
func TestStackEveryCommand(t *testing.T) {
	leaktest.Check(t)
	const slices = 2
	type answer struct {
		status abi.Status
		data   uint32 // checked when status is OK and data is not 0
	}
	ok := func(d uint32) answer { return answer{abi.StatusOK, d} }
	var (
		okAny   = answer{status: abi.StatusOK}
		unknown = answer{status: abi.StatusUnknown}
		rng     = answer{status: abi.StatusErrorRange}
		busy    = answer{status: abi.StatusErrorBusy}
		mcast   = answer{status: abi.StatusErrorMulticast}
	)
	// By data word: garbage, then zero. What both share is in common.
	common := map[abi.Cmd]answer{
		abi.CmdReset:                  ok(4096),
		abi.CmdSetBigBufferSize:       rng,
		abi.CmdSetSmallBufferSize:     rng,
		abi.CmdGetIRQAckOffset:        ok(0x3E0000),
		abi.CmdGetIRQDeassertOffset:   ok(0x3E0400),
		abi.CmdGetSendRingSize:        ok(16384),
		abi.CmdGetRxRingSize:          ok(4096),
		abi.CmdSetIntrqSize:           rng,
		abi.CmdEthernetUp:             busy, // before SET_STATS_DMA: commands out of order
		abi.CmdEthernetDown:           okAny,
		abi.CmdSetMTU:                 rng,
		abi.CmdGetIntrCoalDelayOffset: ok(0x3E0408),
		abi.CmdSetStatsDMAObsolete:    okAny,
		abi.CmdEnablePromisc:          okAny,
		abi.CmdDisablePromisc:         okAny,
		abi.CmdSetMACAddress:          okAny,
		abi.CmdEnableFlowControl:      okAny,
		abi.CmdDisableFlowControl:     okAny,
		abi.CmdDMATest:                rng,
		abi.CmdEnableAllMulti:         okAny,
		abi.CmdDisableAllMulti:        okAny,
		abi.CmdJoinMulticastGroup:     mcast, // 0xDE.. and 00.. are unicast
		abi.CmdLeaveMulticastGroup:    okAny,
		abi.CmdLeaveAllMulticast:      okAny,
		abi.CmdSetStatsDMAV2:          rng, // slice 0xDEAD, or a 0-byte block
		abi.CmdUnalignedTest:          rng,
		abi.CmdGetMaxRSSQueues:        ok(slices),
		abi.CmdEnableRSSQueues:        rng,
		abi.CmdGetRSSTableOffset:      ok(0x3E0800),
		abi.CmdSetRSSTableSize:        rng,
		abi.CmdSetRSSEnable:           okAny,
		abi.CmdSetTSOMode:             okAny,
	}
	byData := map[uint32]map[abi.Cmd]answer{
		myritest.Garbage: {
			abi.CmdSetIntrqDMA:       rng, // slice 0xDEADBEEF
			abi.CmdGetSendOffset:     rng,
			abi.CmdGetSmallRxOffset:  rng,
			abi.CmdGetBigRxOffset:    rng,
			abi.CmdSetRSSMCPSlotType: rng,
		},
		0: {
			abi.CmdSetIntrqDMA:       okAny,
			abi.CmdGetSendOffset:     ok(0x200000),
			abi.CmdGetSmallRxOffset:  ok(0x300000),
			abi.CmdGetBigRxOffset:    ok(0x340000),
			abi.CmdSetRSSMCPSlotType: okAny,
		},
	}
	for _, data := range []uint32{myritest.Garbage, 0} {
		t.Run(fmt.Sprintf("data=%#x", data), func(t *testing.T) {
			ctx := stackCtx(t, 60*time.Second)
			n := newNode(t, newSwitch(t), "myri0", macA, nodeOpts{slices: slices})
			if err := n.drv.Probe(ctx); err != nil { // bus mastering on: before it nothing can answer
				t.Fatal(err)
			}
			before := n.nic.Stats()
			var wantUnknown, wantFailed uint64
			for c := abi.Cmd(0); c <= 70; c++ {
				want, found := byData[data][c]
				if !found {
					want, found = common[c]
				}
				if !found {
					want = unknown
				}
				switch want.status {
				case abi.StatusOK:
				case abi.StatusUnknown:
					wantUnknown++
				default:
					wantFailed++
				}
				got, status, err := n.drv.Cmd(ctx, myritest.Cmd(c), data, data, data, false)
				if err != nil {
					t.Errorf("%s: %v", c, err) // NO_RESPONSE
					continue
				}
				if abi.Status(status) != want.status || (want.data != 0 && got != want.data) {
					t.Errorf("%s (%d): %s, data %#x; want %s, data %#x", c, uint32(c), abi.Status(status), got, want.status, want.data)
				}
			}
			st := n.nic.Stats()
			if d := st.Commands - before.Commands; d != 71 {
				t.Errorf("%d commands executed, want 71", d)
			}
			if d := st.UnknownCmds - before.UnknownCmds; d != wantUnknown {
				t.Errorf("%d UNKNOWN answers, want %d", d, wantUnknown)
			}
			if d := st.FailedCmds - before.FailedCmds; d != wantFailed {
				t.Errorf("%d error answers, want %d", d, wantFailed)
			}
			// Nothing the sweep did survives the driver's reset.
			if err := n.drv.Open(ctx); err != nil {
				t.Fatalf("Open after the sweep: %v\n%s", err, n.driverLog())
			}
			if err := n.drv.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := n.drv.CheckClean(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestStackInterrupts runs traffic both ways under each interrupt
// mechanism: MSI (one slice), INTx with and without deassert_wait, and
// MSI-X with 2 and 4 slices through the firmware-file path with RSS
// steering flows onto every slice.
func TestStackInterrupts(t *testing.T) {
	leaktest.Check(t)
	t.Run("MSI", func(t *testing.T) {
		ctx := stackCtx(t, 60*time.Second)
		a, b := newPair(t, ctx, nodeOpts{drv: myritest.Options{MTU: 1500}}, nodeOpts{drv: myritest.Options{MTU: 1500}})
		for _, n := range []*nicNode{a, b} {
			if m := n.drv.IRQMode(); m != myritest.ModeMSI {
				t.Errorf("%s: %s, want MSI", n.name, m)
			}
		}
		pingPong(t, ctx, a, b, 50)
	})
	for _, noWait := range []bool{false, true} {
		t.Run(fmt.Sprintf("INTx/deassert_wait=%v", !noWait), func(t *testing.T) {
			ctx := stackCtx(t, 60*time.Second)
			o := nodeOpts{drv: myritest.Options{MTU: 1500, NoMSI: true, NoDeassertWait: noWait}}
			a, b := newPair(t, ctx, o, o)
			for _, n := range []*nicNode{a, b} {
				if m := n.drv.IRQMode(); m != myritest.ModeINTx {
					t.Errorf("%s: %s, want INTx", n.name, m)
				}
			}
			pingPong(t, ctx, a, b, 50)
		})
	}
	for _, ns := range []int{2, 4} {
		t.Run(fmt.Sprintf("MSI-X/%d slices", ns), func(t *testing.T) {
			ctx := stackCtx(t, 60*time.Second)
			fw := map[string][]byte{}
			for _, name := range myri10ge.FirmwareNames {
				fw[name] = myri10ge.FirmwareImage()
			}
			o := nodeOpts{slices: 4, drv: myritest.Options{MTU: 1500, MaxSlices: ns, Firmware: fw}}
			a, b := newPair(t, ctx, o, o)
			for _, n := range []*nicNode{a, b} {
				if m, s := n.drv.IRQMode(), n.drv.Slices(); m != myritest.ModeMSIX || s != ns {
					t.Fatalf("%s: %s with %d slices, want MSI-X with %d", n.name, m, s, ns)
				}
				if name, _, _ := n.drv.Firmware(); name != myritest.FWRSSAligned {
					t.Errorf("%s: firmware %q, want %s", n.name, name, myritest.FWRSSAligned)
				}
				if h := n.nic.Stats().Handoffs; h < 2 {
					t.Errorf("%s: %d firmware handoffs, want at least 2 (probe and probe_slices)", n.name, h)
				}
			}
			rssFlows(t, ctx, a, b, ns)
			for _, n := range []*nicNode{a, b} {
				if err := n.drv.Close(ctx); err != nil {
					t.Errorf("%s: Close: %v", n.name, err)
				}
				n.checkClean()
			}
		})
	}
}

// pingPong sends rounds of a small and a big frame each way and closes
// both interfaces.
func pingPong(t *testing.T, ctx context.Context, a, b *nicNode, rounds int) {
	t.Helper()
	var ab, ba []txPkt
	var wab, wba [][]byte
	for i := range rounds {
		f1, f2 := sizedFrame(t, 60+i, byte(i)), sizedFrame(t, 1000+i, byte(i))
		ab, wab = append(ab, plain(f1), plain(f2)), append(wab, f1, f2)
		r1, r2 := reversed(sizedFrame(t, 80+i, byte(i+1))), reversed(sizedFrame(t, 1400+i, byte(i+1)))
		ba, wba = append(ba, plain(r1), plain(r2)), append(wba, r1, r2)
	}
	for i := 0; i < len(ab); i += 10 {
		checkFrames(t, "A to B", wab[i:i+10], xfer(t, ctx, a, b, ab[i:i+10]))
		checkFrames(t, "B to A", wba[i:i+10], xfer(t, ctx, b, a, ba[i:i+10]))
	}
	for _, n := range []*nicNode{a, b} {
		if err := n.drv.Close(ctx); err != nil {
			t.Errorf("%s: Close: %v", n.name, err)
		}
		n.checkClean()
		if st := n.nic.Stats(); st.Interrupts < 10 || st.RxDropped != 0 {
			t.Errorf("%s: NIC stats %+v: want interrupts and no drops", n.name, st)
		}
	}
}

// rssFlows sends 32 flows, three frames each, from a (flow i on transmit
// queue i mod ns) to b, which services every slice's vector in its own
// goroutine: 16 TCP connections to one server port from even source
// ports, as Linux's connect() picks them, and 16 UDP flows. Every flow
// must land on one slice, every slice must get flows, every transmit
// queue must complete on its own vector.
func rssFlows(t *testing.T, ctx context.Context, a, b *nicNode, ns int) {
	t.Helper()
	const flows, per = 32, 3
	want := map[string]int{} // frame -> flow
	var sent [][]byte
	for i := range flows {
		for k := range per {
			pay := append([]byte{byte(i), byte(k)}, pattern(100+i*13, byte(i))...)
			var f []byte
			if i < flows/2 {
				f = flowFrame(t, macA, macB, false, uint16(40000+2*i), 5201, pay)
			} else {
				f = flowFrame(t, macA, macB, true, uint16(33000+i*7), uint16(4000+i), pay)
			}
			want[string(f)] = i
			sent = append(sent, f)
		}
	}

	type got struct {
		slice int
		f     myritest.Frame
	}
	var (
		mu       sync.Mutex
		received []got
		vectors  = make([]int, ns)
		errs     []error
		all      = make(chan struct{}) // closed when every frame arrived, or a receiver failed
		closed   bool
		wg       sync.WaitGroup
	)
	finish := func() { // mu held
		if !closed {
			closed = true
			close(all)
		}
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	for s := range ns {
		wg.Go(func() {
			for {
				ev, err := b.drv.ServiceInterrupt(rctx, s)
				mu.Lock()
				if err != nil {
					if rctx.Err() == nil {
						errs = append(errs, fmt.Errorf("slice %d: %w", s, err))
						finish()
					}
					mu.Unlock()
					return
				}
				vectors[s]++
				for _, f := range ev.Frames {
					received = append(received, got{s, f})
				}
				if len(received) >= len(sent) {
					finish()
				}
				mu.Unlock()
			}
		})
	}
	txEvents := make([]int, ns)
	for i, f := range sent {
		q := (i / per) % ns
		if err := a.drv.Xmit(q, myritest.FramePacket(f)); err != nil {
			t.Fatalf("Xmit on queue %d: %v", q, err)
		}
		if i%8 == 7 || i == len(sent)-1 {
			for q := range ns {
				evs, err := a.drv.WaitTx(ctx, q)
				if err != nil {
					t.Fatalf("WaitTx %d: %v\n%s", q, err, a.driverLog())
				}
				for _, ev := range evs {
					if ev.Slice != q {
						t.Errorf("WaitTx(%d): event of slice %d", q, ev.Slice)
					}
					if ev.TxDone > 0 {
						txEvents[q]++
					}
				}
			}
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
	}
	stop()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(received) != len(sent) {
		t.Errorf("%d of %d frames received before the deadline", len(received), len(sent))
	}

	slicesOf := make([]map[int]bool, flows)
	perSlice := make([]int, ns)
	for _, g := range received {
		i, ok := want[string(g.f.Data)]
		if !ok {
			t.Errorf("slice %d: a frame nobody sent (%d bytes)", g.slice, len(g.f.Data))
			continue
		}
		if !csumEq(myritest.Checksum(g.f.Data[14:]), g.f.Csum) {
			t.Errorf("flow %d: rx_done checksum %#04x is not the sum over frame[14:]", i, g.f.Csum)
		}
		if slicesOf[i] == nil {
			slicesOf[i] = map[int]bool{}
		}
		slicesOf[i][g.slice] = true
		perSlice[g.slice]++
	}
	for i, m := range slicesOf {
		if len(m) != 1 {
			t.Errorf("flow %d landed on slices %v, want exactly one", i, m)
		}
	}
	tcpSlices := map[int]bool{}
	for _, m := range slicesOf[:flows/2] {
		for s := range m {
			tcpSlices[s] = true
		}
	}
	if len(tcpSlices) != ns {
		t.Errorf("16 TCP connections from even source ports used slices %v of %d: steering ignores most of the port bits", tcpSlices, ns)
	}
	for s := range ns {
		if perSlice[s] == 0 || vectors[s] == 0 {
			t.Errorf("slice %d: %d frames, vector fired %d times; want both", s, perSlice[s], vectors[s])
		}
		if txEvents[s] == 0 {
			t.Errorf("transmit queue %d: no completion on its own vector", s)
		}
	}
	t.Logf("frames per slice %v, interrupts per slice %v, tx completions per queue %v", perSlice, vectors, txEvents)
}
