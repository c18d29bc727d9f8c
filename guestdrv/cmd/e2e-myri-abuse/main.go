// Command e2e-myri-abuse runs inside an e2e guest and plays a driver that
// misprograms a Myri-10G (14c1:0008, device/myri10ge) from user space, with
// no driver bound: commands out of order or with bad arguments, a response
// address and DMA outside guest RAM, absurd send descriptors, send
// descriptors that change under the device (torn, rewritten, a producer
// past the consumer), receive buffers posted out of order or outside RAM. For each mistake it checks
// the device's documented answer (device/myri10ge/README.md, "Guest
// mistakes") and prints one result line (guestdrv/result); the exit status
// is 1 if any check failed.
//
//	e2e-myri-abuse -ip 10.0.0.3 -ready 10.0.0.11,10.0.0.12 -done 10.0.0.99
//
// The device's DMA targets are locked pages whose physical addresses come
// from /proc/self/pagemap. Frames reach the NIC as ARP replies from the
// good guests on the same switch: the program waits until every -ready
// address answers (a good guest adds it once its ping runs) before it
// misbehaves, and at the end sends ARP requests from the -done address,
// which the good guests see in their neighbour tables as the signal to
// stop pinging.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/guestdrv/guest"
	"github.com/myriemu/myriemu/guestdrv/result"
)

// outsideRAM is far above any guest RAM or BAR: no DMA there can succeed.
const outsideRAM = 0x7f00_0000_0000

func main() {
	addr := flag.String("addr", "", "PCI address of the Myri-10G to use (default: the only one)")
	ip := flag.String("ip", "10.0.0.3", "IPv4 address this program's ARP requests come from")
	ready := flag.String("ready", "", "comma-separated IPv4 addresses that must answer ARP before the abuse starts; the first is the peer of the round trips")
	done := flag.String("done", "10.0.0.99", "IPv4 address the final ARP requests come from: the good guests' signal to stop")
	wait := flag.Duration("wait", 150*time.Second, "how long to wait for the -ready addresses")
	limit := flag.Duration("limit", 200*time.Second, "the whole run's bound: past it, fail and exit")
	flag.Parse()
	p := &result.Printer{W: os.Stdout}
	a := &abuser{p: p, wait: *wait}
	var err error
	if a.ip, err = netip.ParseAddr(*ip); err != nil || !a.ip.Is4() {
		p.Failf("abuse.args", "-ip %q: want an IPv4 address", *ip)
		os.Exit(1)
	}
	if a.done, err = netip.ParseAddr(*done); err != nil || !a.done.Is4() {
		p.Failf("abuse.args", "-done %q: want an IPv4 address", *done)
		os.Exit(1)
	}
	for _, s := range strings.Split(*ready, ",") {
		r, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !r.Is4() {
			p.Failf("abuse.args", "-ready %q: want IPv4 addresses", *ready)
			os.Exit(1)
		}
		a.ready = append(a.ready, r)
	}
	// Every wait below is bounded; this is the backstop for one that is
	// not (a BAR access that never returns).
	time.AfterFunc(*limit, func() {
		p.Failf("abuse.limit", "the run did not finish within %v", *limit)
		os.Exit(1)
	})
	a.run(*addr)
	if p.Failures > 0 {
		os.Exit(1)
	}
}

type abuser struct {
	p     *result.Printer
	n     nic
	ip    netip.Addr
	done  netip.Addr
	ready []netip.Addr
	wait  time.Duration
}

func (a *abuser) run(addr string) {
	if !a.setup(addr) {
		return
	}
	defer a.n.mem.Close()
	defer a.n.bar.Close()

	err := a.n.bringUp(a.n.fillRx)
	if !a.p.Check("abuse.bringup", err, "RESET, interrupt queue and block, rings filled, ETHERNET_UP: link_up 1 reported") {
		return
	}
	a.p.Check("abuse.peers", a.waitPeers(), fmt.Sprintf("%v answer ARP: the good guests are pinging", a.ready))

	a.commands()
	a.sends()
	a.underPoller()
	a.receives()
	a.signalDone()
}

// setup finds the function, enables it and maps BAR0 and the DMA buffers.
func (a *abuser) setup(addr string) bool {
	devs, err := guest.FindPCI(guest.SysfsPCI, abi.VendorID, abi.DeviceID)
	if err != nil {
		a.p.Failf("abuse.found", "%v", err)
		return false
	}
	found := false
	for _, d := range devs {
		if addr == "" && len(devs) == 1 || d.Addr == addr {
			a.n.dev, found = d, true
		}
	}
	if !found {
		a.p.Failf("abuse.found", "want one %04x:%04x (or -addr %q), found %d", abi.VendorID, abi.DeviceID, addr, len(devs))
		return false
	}
	if drv, err := os.Readlink(a.n.dev.Dir + "/driver"); err == nil {
		a.p.Failf("abuse.found", "%s is bound to %s; this program needs it without a driver", a.n.dev.Addr, drv)
		return false
	}
	a.p.Passf("abuse.found", "%s, no driver bound", a.n.dev)

	// pci_enable_device and pci_set_master by hand; INTx off: nobody in
	// this guest handles it, and the program polls.
	want := uint16(guest.CommandMemory | guest.CommandMaster | guest.CommandINTxOff)
	cmd, err := a.n.dev.SetCommand(want, 0)
	if err == nil && cmd&want != want {
		err = fmt.Errorf("COMMAND reads %#x after setting %#x", cmd, want)
	}
	if !a.p.Check("abuse.enable", err, fmt.Sprintf("memory, bus mastering on, INTx off (COMMAND=%#06x)", cmd)) {
		return false
	}

	if a.n.bar, err = a.n.dev.MapBAR(0); err == nil && len(a.n.bar.Mem) < abi.BAR0Size {
		a.n.bar.Close()
		err = fmt.Errorf("BAR0 is %d bytes, want %d", len(a.n.bar.Mem), abi.BAR0Size)
	}
	if err == nil {
		err = a.n.readMAC()
		if err != nil {
			a.n.bar.Close()
		}
	}
	if !a.p.Check("abuse.bar0", err, fmt.Sprintf("BAR0 mapped through resource0; EEPROM MAC=%x", a.n.mac)) {
		return false
	}
	if a.n.mem, err = guest.AllocDMA(numPages); err != nil {
		a.n.bar.Close()
		a.p.Failf("abuse.dma", "%v", err)
		return false
	}
	a.p.Passf("abuse.dma", "%d locked pages, response and interrupt block at %#x, rx_done at %#x, frames at %#x",
		numPages, a.n.respAddr(), a.n.rxDoneAddr(), a.n.mem.Phys(pageTx))
	return true
}

// waitPeers sends ARP requests to every -ready address until each has
// answered, for at most a.wait.
func (a *abuser) waitPeers() error {
	start := time.Now()
	left := append([]netip.Addr(nil), a.ready...)
	for len(left) > 0 {
		var still []netip.Addr
		for _, r := range left {
			if err := a.n.arp(a.ip, r, 500*time.Millisecond); err != nil {
				still = append(still, r)
			}
		}
		left = still
		if len(left) > 0 && time.Since(start) > a.wait {
			return fmt.Errorf("%v did not answer ARP within %v", left, a.wait)
		}
	}
	a.p.Infof("abuse.peers.wait", "%.1f s", time.Since(start).Seconds())
	return nil
}

// roundTrip is the proof that the NIC works: an ARP request goes out and
// completes, and the peer's reply lands in a receive buffer.
func (a *abuser) roundTrip() error {
	return a.n.arp(a.ip, a.ready[0], netTimeout)
}

// expect checks a command's status (and data, if wantData is not nil).
func (a *abuser) expect(name string, c abi.Cmd, d0, d1, d2 uint32, want abi.Status, wantData *uint32, why string) {
	v, st, err := a.n.command(c, d0, d1, d2)
	switch {
	case err != nil:
		a.p.Failf(name, "%v (want %v: %s)", err, want, why)
	case st != want:
		a.p.Failf(name, "%v(%#x, %#x, %#x) answered %v (data %#x), want %v: %s", c, d0, d1, d2, st, v, want, why)
	case wantData != nil && v != *wantData:
		a.p.Failf(name, "%v answered %v with data %d, want %d", c, st, v, *wantData)
	default:
		a.p.Passf(name, "%v(%#x, %#x, %#x) answered %v: %s", c, d0, d1, d2, st, why)
	}
}

// commands: out of order and with bad arguments (§4.3, README
// "Commands"), then the device still answers.
func (a *abuser) commands() {
	if _, err := a.n.mustCommand(abi.CmdReset, 0, 0, 0); err != nil {
		a.p.Failf("cmd.reset", "%v", err)
		return
	}
	a.expect("cmd.up_after_reset", abi.CmdEthernetUp, 0, 0, 0, abi.StatusErrorBusy, nil,
		"ETHERNET_UP right after RESET, before SET_INTRQ_DMA/SET_STATS_DMA")
	rxd := a.n.rxDoneAddr()
	if _, err := a.n.mustCommand(abi.CmdSetIntrqDMA, uint32(rxd), uint32(rxd>>32), 0); err != nil {
		a.p.Failf("cmd.up_before_stats", "%v", err)
	} else {
		a.expect("cmd.up_before_stats", abi.CmdEthernetUp, 0, 0, 0, abi.StatusErrorBusy, nil,
			"ETHERNET_UP after SET_INTRQ_DMA but before SET_STATS_DMA")
	}
	a.expect("cmd.absent_slice", abi.CmdGetSendOffset, 99, 0, 0, abi.StatusErrorRange, nil, "send ring of slice 99")
	a.expect("cmd.unknown", abi.Cmd(99), 1, 2, 3, abi.StatusUnknown, nil, "no command 99")
	a.expect("cmd.unknown_mcp_version", abi.Cmd(2), 0, 0, 0, abi.StatusUnknown, nil, "GET_MCP_VERSION is not implemented, as on real firmware")
	a.expect("cmd.intrq_size", abi.CmdSetIntrqSize, 1000, 0, 0, abi.StatusErrorRange, nil, "1000 bytes: 250 slots, not a power of two")
	a.expect("cmd.dma_test_outside_ram", abi.CmdDMATest, uint32(outsideRAM&0xFFFFFFFF), uint32(outsideRAM>>32), 4096<<16, abi.StatusErrorRange, nil,
		fmt.Sprintf("DMA_TEST reading a page at %#x, outside guest RAM", uint64(outsideRAM)))
	ringBytes := uint32(4096)
	a.expect("cmd.still_answers", abi.CmdGetRxRingSize, 0, 0, 0, abi.StatusOK, &ringBytes, "a well-formed command after the mistakes")

	// A response address outside RAM: no answer can arrive anywhere the
	// guest can see; the next command is answered.
	a.n.postCommand(outsideRAM, abi.CmdGetSendRingSize, 0, 0, 0)
	a.n.getBE32(abi.OffHeaderPtr) // a read completes after the store is handled
	ctrl := a.n.mem.Page(pageCtrl)
	var err error
	if r := abi.Status(loadBE32(ctrl, 4)); r != abi.StatusNoResponse {
		err = fmt.Errorf("the guest's response buffer changed to %v though the command named %#x", r, uint64(outsideRAM))
	} else {
		var v uint32
		var st abi.Status
		v, st, err = a.n.command(abi.CmdGetRxRingSize, 0, 0, 0)
		if err == nil && (st != abi.StatusOK || v != ringBytes) {
			err = fmt.Errorf("the next command, GET_RX_RING_SIZE, answered %v %d; want OK %d", st, v, ringBytes)
		}
	}
	a.p.Check("cmd.response_outside_ram", err, fmt.Sprintf("GET_SEND_RING_SIZE answering to %#x: nothing arrived; the next command answered OK %d",
		uint64(outsideRAM), ringBytes))
}

// sends: absurd descriptors after a proper bring-up (§5.4, §5.5).
func (a *abuser) sends() {
	n := &a.n
	if err := n.bringUp(n.fillRx); err != nil {
		a.p.Failf("tx.bringup", "%v", err)
		return
	}
	// A request for the program's own address: nobody answers it, so no
	// frame comes back to disturb the counts.
	silent := arpFrame(n.mac, a.ip, a.ip)
	hdr := make([]byte, 54) // Ethernet, IPv4, TCP; contents never matter here
	absurd := []struct {
		name  string
		descs [][abi.SendDescSize]byte
		why   string
	}{
		{"tx.rdma_count_200", [][abi.SendDescSize]byte{desc(n.txFrame(silent), len(silent), 0, 200, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall)},
			"a packet claiming 200 descriptors (at most 12)"},
		{"tx.length_ffff", [][abi.SendDescSize]byte{desc(n.txFrame(silent), 0xFFFF, 0, 1, 0, abi.FlagNoTSO|abi.FlagFirst)},
			"a segment of 65535 bytes (frames are at most 9018)"},
		{"tx.tso_mss0", [][abi.SendDescSize]byte{
			desc(n.txFrame(hdr), len(hdr), 0, 1, 34, abi.FlagTSOHdr|abi.FlagFirst),
			desc(n.txFrame(silent), 46, 0, 1, 34, abi.FlagTSOPld|abi.FlagFirst|abi.FlagTSOLast)},
			"a TSO chain with MSS 0"},
	}
	for _, t := range absurd {
		before := n.sent
		_, err := n.send(t.descs...)
		a.p.Check(t.name, err, fmt.Sprintf("%s: consumed (%d descriptors read back zeroed from BAR0) and dropped; send_done_count %d -> %d counts it done",
			t.why, len(t.descs), before, n.sent))
	}
	a.p.Check("tx.after_malformed", a.roundTrip(), "the slice is not halted: an ARP request goes out, completes, and the reply comes back")

	// A descriptor whose buffer is outside guest RAM: a DMA abort. The
	// chain is consumed, the slice halts and reports nothing more.
	if err := n.bringUp(n.fillRx); err != nil {
		a.p.Failf("tx.outside_ram", "bring-up: %v", err)
		return
	}
	_, err := n.sendFrame(silent) // one good packet first: send_done_count is 1
	var idx int
	if err == nil {
		idx, err = n.post(desc(outsideRAM, len(silent), 0, 1, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall))
	}
	if err == nil {
		n.txIdx++
		if err = n.consumed(idx, 1); err == nil {
			err = n.quietAfterHalt(1)
		}
	}
	a.p.Check("tx.outside_ram", err, fmt.Sprintf("a frame at %#x: the descriptor read back zeroed, then no interrupt block: send_done_count stays 1",
		uint64(outsideRAM)))

	idx, err = n.post(desc(n.txFrame(silent), len(silent), 0, 1, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall))
	if err == nil {
		time.Sleep(quiet)
		if r := n.ring(idx, 1); r[abi.SendOffFlags] == 0 {
			err = fmt.Errorf("the halted slice took the next packet (descriptor now % x)", r)
		} else if err = n.noBlock(quiet); err != nil {
			err = fmt.Errorf("halted: %w", err)
		}
	}
	a.p.Check("tx.halted", err, fmt.Sprintf("the next packet is not taken: its descriptor is still in BAR0 after %v, no interrupt block", quiet))

	err = n.bringUp(n.fillRx)
	if err == nil {
		err = a.roundTrip()
	}
	a.p.Check("tx.recovered", err, "after RESET and bring-up: an ARP request goes out, completes (send_done_count 1), and the reply comes back")
}

// receives: buffers posted out of order, then outside guest RAM (§5.2).
func (a *abuser) receives() {
	n := &a.n
	canary := func(i int) byte { return byte(0xA5 ^ i) }
	// Group 1 before group 0: the device must not take it.
	err := n.bringUp(func() error {
		for i := abi.RecvGroup; i < 2*abi.RecvGroup; i++ {
			_, b := n.rxBuf(i)
			for j := range b {
				b[j] = canary(i)
			}
		}
		n.postGroup(1, func(i int) uint64 { addr, _ := n.rxBuf(i); return addr })
		return nil
	})
	if err != nil {
		a.p.Failf("rx.out_of_order", "bring-up: %v", err)
		return
	}
	arp := arpFrame(n.mac, a.ip, a.ready[0])
	err = errors.New("no frame was dropped for lack of a small buffer")
	// The replies wait in the NIC's receive FIFO (128 frames) for buffers
	// that never come; the one after those is dropped.
	deadline := time.Now().Add(4 * netTimeout)
	for time.Now().Before(deadline) {
		// Each request draws a reply; each completion brings a block with
		// the drop counters.
		b, err2 := n.sendFrame(arp)
		if err2 != nil {
			err = err2
			break
		}
		if b.noSmall() > 0 {
			err = nil
			a.p.Infof("rx.out_of_order.drops", "dropped_no_small_buffer %d after %d ARP requests", b.noSmall(), n.sent)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err == nil {
		if w := loadBE32(n.mem.Page(pageRxDone), 0); w != 0 {
			err = fmt.Errorf("rx_done slot 0 holds %#x", w)
		}
		for i := abi.RecvGroup; i < 2*abi.RecvGroup && err == nil; i++ {
			if _, b := n.rxBuf(i); !allEqual(b, canary(i)) {
				err = fmt.Errorf("the device wrote receive buffer %d of the group posted out of order", i)
			}
		}
	}
	a.p.Check("rx.out_of_order", err, "group 1 posted before group 0 is not taken: the peer's replies waited in the NIC's FIFO until it was full, then one was dropped (dropped_no_small_buffer), no rx_done slot, the group's buffers untouched")

	// In order now, without a reset: the next reply lands.
	n.rxPosted = 0
	err = n.fillRx()
	if err == nil {
		err = a.roundTrip()
	}
	a.p.Check("rx.in_order_after", err, "groups 0, 1, ... posted in order: the waiting ARP replies and the new one land in buffers and their rx_done slots")

	// Buffers outside guest RAM: the first frame is a DMA abort.
	err = n.bringUp(func() error {
		n.postGroup(0, func(i int) uint64 { return outsideRAM + uint64(i)*rxBufSize })
		return nil
	})
	if err != nil {
		a.p.Failf("rx.outside_ram", "bring-up: %v", err)
		return
	}
	err = errors.New("the slice never halted")
	deadline = time.Now().Add(netTimeout)
	for time.Now().Before(deadline) {
		idx, perr := n.post(desc(n.txFrame(arp), len(arp), 0, 1, 0, abi.FlagNoTSO|abi.FlagFirst|abi.FlagSmall))
		if perr != nil {
			err = perr
			break
		}
		time.Sleep(quiet)
		if r := n.ring(idx, 1); r[abi.SendOffFlags] != 0 {
			// Not taken: halted by the reply an earlier request drew (or
			// by any other frame: each one needs a buffer).
			err = n.quietAfterHalt(n.sent)
			break
		}
		n.txIdx++
		n.sent++
		// Its completion, unless the reply halted the slice first.
		n.awaitBlock(quiet, "send completion", func(b *irqBlock) bool { return b.sendDone() >= n.sent })
	}
	if err == nil {
		if w := loadBE32(n.mem.Page(pageRxDone), 0); w != 0 {
			err = fmt.Errorf("rx_done slot 0 holds %#x", w)
		}
	}
	a.p.Check("rx.outside_ram", err, fmt.Sprintf("buffers at %#x: after %d ARP requests the reply cannot be written; no rx_done slot, the slice halts (the next packet is not taken, no interrupt block)",
		uint64(outsideRAM), n.sent))

	err = n.bringUp(n.fillRx)
	if err == nil {
		err = a.roundTrip()
	}
	a.p.Check("rx.recovered", err, "after RESET and bring-up: ARP request out, reply in")
}

func allEqual(b []byte, v byte) bool {
	for _, c := range b {
		if c != v {
			return false
		}
	}
	return true
}

// signalDone tells the good guests the abuse is over: ARP requests from the
// -done address to each of theirs put it in their neighbour tables. The
// NIC is brought up afresh, whatever the checks left it in.
func (a *abuser) signalDone() {
	n := &a.n
	err := n.bringUp(n.fillRx)
	for i := 0; i < 3 && err == nil; i++ {
		for _, r := range a.ready {
			if _, err = n.sendFrame(arpFrame(n.mac, a.done, r)); err != nil {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.p.Check("abuse.done", err, fmt.Sprintf("ARP requests from %v to %v: the good guests may stop", a.done, a.ready))
}
