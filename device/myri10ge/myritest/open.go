package myritest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Open runs what `ip link set ethX up` does (§4.4 "Open"): myri10ge_open
// (reset sequence, RSS set-up with several slices, interrupts, ring
// offsets and sizes, both receive rings filled in groups of 8, the stats
// block, MTU and buffer sizes, TSO mode, ETHERNET_UP), then it services
// interrupts until the link-up report (Options.LinkTimeout), then runs
// ndo_set_rx_mode's atomic command sequence.
func (d *Driver) Open(ctx context.Context) error {
	d.mu.Lock()
	if err := d.open(ctx); err != nil {
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, d.opts.LinkTimeout)
	defer cancel()
	for d.Link() != LinkUp {
		ev, err := d.ServiceInterrupt(wctx, 0)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				d.mu.Lock()
				defer d.mu.Unlock()
				return fmt.Errorf("%w: no interrupt reporting link up within %v of ETHERNET_UP (link_up %#x)", ErrTimeout, d.opts.LinkTimeout, d.linkState)
			}
			return err
		}
		d.mu.Lock()
		d.backlog = append(d.backlog, ev)
		d.mu.Unlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.setMulticastList(ctx)
}

func (d *Driver) open(ctx context.Context) error {
	if !d.probed {
		return fmt.Errorf("%w: open before probe", ErrState)
	}
	if d.running != stateStopped {
		return fmt.Errorf("%w: open of a running interface (-EBUSY)", ErrState)
	}
	if !validUnicast(d.mac[:]) {
		return fmt.Errorf("%w: address %s is not a valid unicast address (-EADDRNOTAVAIL)", ErrState, net.HardwareAddr(d.mac[:]))
	}
	d.running = stateStarting
	fail := func(err error) error {
		d.running = stateStopped
		return err
	}
	if err := d.reset(ctx); err != nil {
		d.logf(Err, "failed reset")
		return fail(err)
	}
	if d.numSlices > 1 {
		if err := d.openRSS(ctx); err != nil {
			return fail(err)
		}
	}
	if err := d.requestIRQ(); err != nil {
		return fail(err)
	}
	if d.mtu <= ethDataLen {
		d.smallBytes = 128 - rxPad
	} else {
		d.smallBytes = vlanFrameLen
	}
	if d.opts.SmallBytes != nil && *d.opts.SmallBytes >= 0 {
		d.smallBytes = *d.opts.SmallBytes
	}
	d.bigPow2 = d.mtu + ethHLen + vlanHLen + rxPad
	if d.bigPow2 < pageSize/2 {
		for d.bigPow2&(d.bigPow2-1) != 0 {
			d.bigPow2++
		}
		d.bigBytes = d.mtu + ethHLen + vlanHLen + rxPad
	} else {
		d.bigPow2, d.bigBytes = pageSize, pageSize
	}
	abort := func(err error) error {
		for _, s := range d.ss {
			s.napi = false
			d.freeRings(s)
		}
		d.freeIRQ()
		return fail(err)
	}
	for _, s := range d.ss {
		if err := d.getTxRx(ctx, s); err != nil {
			d.logf(Err, "failed to get ring sizes or locations")
			return abort(err)
		}
		if err := d.allocateRings(ctx, s); err != nil {
			return abort(err)
		}
		if s.idx == 0 || d.numTxQueues > 1 {
			if err := d.setStats(ctx, s); err != nil {
				d.logf(Err, "Couldn't set stats DMA")
				return abort(err)
			}
		}
		s.napi = true
	}
	c := d.freshCmd()
	c.d0 = uint32(d.mtu + ethHLen + vlanHLen)
	err := d.sendCmd(ctx, CmdSetMTU, &c, false)
	for _, step := range []struct {
		cmd Cmd
		v   int
	}{{CmdSetSmallBufferSize, d.smallBytes}, {CmdSetBigBufferSize, d.bigPow2}} {
		if isFatal(err) {
			break
		}
		c.d0 = uint32(step.v)
		if e := d.sendCmd(ctx, step.cmd, &c, false); err == nil || isFatal(e) {
			err = e
		}
	}
	if err != nil {
		d.logf(Err, "Couldn't set buffer sizes")
		return abort(err)
	}
	c.d0 = 0 // Linux-style TSO
	if err := d.sendCmd(ctx, CmdSetTSOMode, &c, false); err != nil && !IsUnknown(err) {
		d.logf(Err, "Couldn't set TSO mode")
		return abort(err)
	}
	d.linkState = ^uint32(0)
	d.rdmaTags = rdmaTagsAvailable
	if err := d.sendCmd(ctx, CmdEthernetUp, &c, false); err != nil {
		d.logf(Err, "Couldn't bring up link")
		return abort(err)
	}
	d.running = stateRunning
	for _, s := range d.ss {
		s.tx.stopped = false
		s.watchdogTxDone, s.watchdogTxReq, s.watchdogRxDone, s.stuck = 0, 0, 0, false
	}
	return nil
}

// openRSS is the multi-slice part of myri10ge_open (§9 step 6).
func (d *Driver) openRSS(ctx context.Context) error {
	c := d.freshCmd()
	c.d0, c.d1 = uint32(d.numSlices), rssIntrOnePerSlice
	if d.numTxQueues > 1 {
		c.d1 |= rssMultipleTx
	}
	if err := d.sendCmd(ctx, CmdEnableRSSQueues, &c, false); err != nil {
		d.logf(Err, "failed to set number of slices")
		return err
	}
	c.d0 = uint32(d.numSlices)
	err := d.sendCmd(ctx, CmdSetRSSTableSize, &c, false)
	if isFatal(err) {
		return err
	}
	if e := d.sendCmd(ctx, CmdGetRSSTableOffset, &c, false); err == nil || isFatal(e) {
		err = e
	}
	if err != nil {
		d.logf(Err, "failed to setup rss tables")
		return err
	}
	if err := d.checkOffset(CmdGetRSSTableOffset, c.d0, d.numSlices); err != nil {
		return err
	}
	for i := range d.numSlices {
		if err := d.writeB(uint64(c.d0)+uint64(i), byte(i)); err != nil {
			return err
		}
	}
	c.d0, c.d1 = 1, uint32(d.opts.RSSHash)
	if err := d.sendCmd(ctx, CmdSetRSSEnable, &c, false); err != nil {
		d.logf(Err, "failed to enable slices")
		return err
	}
	return nil
}

// getTxRx is myri10ge_get_txrx: the ring offsets of one slice.
func (d *Driver) getTxRx(ctx context.Context, s *sliceState) error {
	c := d.freshCmd()
	var err error
	keep := func(e error) {
		if err == nil || isFatal(e) {
			err = e
		}
	}
	if s.idx == 0 || d.numTxQueues > 1 {
		c.d0 = uint32(s.idx)
		keep(d.sendCmd(ctx, CmdGetSendOffset, &c, false))
		s.tx.lanai = uint64(c.d0)
	}
	for _, r := range []struct {
		cmd  Cmd
		ring *rxRing
	}{{CmdGetSmallRxOffset, &s.small}, {CmdGetBigRxOffset, &s.big}} {
		if isFatal(err) {
			return err
		}
		c.d0 = uint32(s.idx)
		keep(d.sendCmd(ctx, r.cmd, &c, false))
		r.ring.lanai = uint64(c.d0)
	}
	s.tx.sendGo = OffSendGo + 64*uint64(s.idx)
	s.tx.sendStop = OffSendStop + 64*uint64(s.idx)
	return err
}

// setStats is myri10ge_set_stats: SET_STATS_DMA_V2, or the obsolete form
// (slice 0 only) when the firmware does not know V2.
func (d *Driver) setStats(ctx context.Context, s *sliceState) error {
	c := cmdWords{uint32(s.stats), uint32(s.stats >> 32), irqDataSize | uint32(s.idx)<<16}
	err := d.sendCmd(ctx, CmdSetStatsDMAV2, &c, false)
	if IsUnknown(err) {
		if s.idx != 0 {
			return fmt.Errorf("myritest: SET_STATS_DMA_V2 for slice %d: %w (-EINVAL)", s.idx, err)
		}
		bus := s.stats + irqOffSendDoneCount
		c.d0, c.d1 = uint32(bus), uint32(bus>>32)
		if err := d.sendCmd(ctx, CmdSetStatsDMAObsolete, &c, false); isFatal(err) {
			return err
		}
		d.mcastFW = false
		return nil
	}
	if isFatal(err) {
		return err
	}
	d.mcastFW = true
	return nil
}

// requestIRQ is myri10ge_request_irq.
func (d *Driver) requestIRQ() error {
	d.mode = 0
	want := ModeINTx
	if !d.opts.NoMSI {
		if d.numSlices > 1 {
			want = ModeMSIX
		} else if d.msiCap != 0 {
			want = ModeMSI
		} else {
			d.logf(Err, "Error -22 setting up MSI; falling back to xPIC")
		}
	}
	if d.irq == nil {
		d.mode = want
		return nil
	}
	switch want {
	case ModeMSIX:
		if err := d.irq.Enable(ModeMSIX, d.numSlices); err != nil {
			d.logf(Err, "Error %v setting up MSI-X", err)
			return fmt.Errorf("myritest: enable MSI-X with %d vectors: %w", d.numSlices, err)
		}
	case ModeMSI:
		if err := d.irq.Enable(ModeMSI, 1); err != nil {
			d.logf(Err, "Error %v setting up MSI; falling back to xPIC", err)
			want = ModeINTx
		}
	}
	if want == ModeINTx {
		if err := d.irq.Enable(ModeINTx, 1); err != nil {
			d.logf(Err, "failed to allocate IRQ")
			return fmt.Errorf("myritest: enable INTx: %w", err)
		}
	}
	d.mode = want
	return nil
}

// freeIRQ is myri10ge_free_irq.
func (d *Driver) freeIRQ() {
	if d.mode != 0 && d.irq != nil {
		if err := d.irq.Disable(); err != nil {
			d.logf(Err, "disable %s: %v", d.mode, err)
		}
	}
	d.mode = 0
}

// Close runs what `ip link set ethX down` does (myri10ge_close): NAPI
// off, ETHERNET_DOWN, up to 1 s of interrupt servicing for the report with
// link_down set, interrupts off, rings freed (unfinished transmits count
// as dropped). A missing link-down report is an error wrapping ErrTimeout
// ("never got down irq"), returned after the teardown.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.running != stateRunning || len(d.ss) == 0 || d.ss[0].tx.info == nil {
		d.mu.Unlock()
		return nil
	}
	d.running = stateStopping
	for _, s := range d.ss {
		s.napi = false
		s.tx.stopped = true
	}
	oldDown := d.downCnt
	var downErr error
	rebooted := d.rebooted
	if !rebooted { // a rebooted NIC is not told
		c := d.freshCmd()
		downErr = d.sendCmd(ctx, CmdEthernetDown, &c, false)
		if downErr != nil {
			d.logf(Err, "Couldn't bring down link")
		}
	}
	d.mu.Unlock()

	var waitErr error
	if !isFatal(downErr) && !rebooted {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		for d.downCount() == oldDown {
			ev, err := d.ServiceInterrupt(wctx, 0)
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
					waitErr = err
				}
				break
			}
			d.mu.Lock()
			d.backlog = append(d.backlog, ev)
			d.mu.Unlock()
		}
		cancel()
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if waitErr == nil && d.downCnt == oldDown && !isFatal(downErr) && !rebooted {
		d.logf(Err, "never got down irq")
		waitErr = fmt.Errorf("%w: no interrupt with link_down set within 1 s of ETHERNET_DOWN (never got down irq)", ErrTimeout)
	}
	d.freeIRQ()
	for _, s := range d.ss {
		d.freeRings(s)
	}
	d.running = stateStopped
	return errors.Join(downErr, waitErr)
}

func (d *Driver) downCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.downCnt
}

// Remove runs myri10ge_remove: close, dummy RDMA off, and everything
// freed. Memory then holds nothing the driver allocated.
func (d *Driver) Remove(ctx context.Context) error {
	err := d.Close(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.probed {
		if e := d.dummyRDMA(ctx, false); e != nil {
			err = errors.Join(err, e)
		}
	}
	d.freeSlices()
	if d.cmdBus != 0 {
		d.mem.Free(d.cmdBus)
		d.cmdBus = 0
	}
	d.probed = false
	return err
}

// SetMTU is ndo_change_mtu: a running interface is closed and reopened
// with the new MTU (68..9000).
func (d *Driver) SetMTU(ctx context.Context, mtu int) error {
	if mtu < minMTU || mtu > maxEtherMTU-ethHLen {
		return fmt.Errorf("%w: MTU %d outside %d..%d (-EINVAL)", ErrState, mtu, minMTU, maxEtherMTU-ethHLen)
	}
	d.mu.Lock()
	d.logf(Info, "changing mtu from %d to %d", d.mtu, mtu)
	running := d.running != stateStopped
	if !running {
		d.mtu = mtu
	}
	d.mu.Unlock()
	if !running {
		return nil
	}
	err := d.Close(ctx)
	d.mu.Lock()
	d.mtu = mtu
	d.mu.Unlock()
	return errors.Join(err, d.Open(ctx))
}

// SetMACAddress is ndo_set_mac_address: SET_MAC_ADDRESS, up or down.
func (d *Driver) SetMACAddress(ctx context.Context, mac net.HardwareAddr) error {
	if !validUnicast(mac) {
		return fmt.Errorf("%w: %s is not a valid unicast address (-EADDRNOTAVAIL)", ErrState, mac)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.updateMACAddress(ctx, [6]byte(mac)); err != nil {
		d.logf(Err, "changing mac address failed with %d", errnoOf(err))
		return err
	}
	d.mac = [6]byte(mac)
	return nil
}

// RxMode is the interface's receive filter state.
type RxMode struct {
	Promisc, AllMulti bool
	Multicast         []net.HardwareAddr
}

// SetRxMode changes the receive filter; on a running interface it runs
// ndo_set_rx_mode (atomic commands, §4.4), as the stack does.
func (d *Driver) SetRxMode(ctx context.Context, m RxMode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.promisc, d.allMulti = m.Promisc, m.AllMulti
	d.mcast = append([]net.HardwareAddr{}, m.Multicast...)
	if d.running != stateRunning {
		return nil
	}
	return d.setMulticastList(ctx)
}

// SetPause is ethtool -A: ENABLE_ or DISABLE_FLOW_CONTROL.
func (d *Driver) SetPause(ctx context.Context, on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changePause(ctx, on)
}

// SetCoalesce is ethtool -C rx-usecs: one 4-byte store to the register
// GET_INTR_COAL_DELAY_OFFSET named at the last reset.
func (d *Driver) SetCoalesce(us int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.probed {
		return fmt.Errorf("%w: coalescing before probe", ErrState)
	}
	d.coalDelay = us
	return d.putBE32(d.coalOff, uint32(us))
}

// LED is ethtool -p (myri10ge_led): on writes 0xfffffffe to the header's
// LED word, off copies the default pattern back (§7.7).
func (d *Driver) LED(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	hdr, err := d.readBE32(OffHeaderPtr)
	if err != nil {
		return err
	}
	if hdr&3 != 0 || uint64(hdr)+hdrSize > uint64(d.sramSize) {
		d.logf(Err, "Running firmware has bad header offset (%d)", int32(hdr))
		return fmt.Errorf("%w: header offset %#x (-EIO)", ErrProtocol, hdr)
	}
	hdrLen, err := d.readBE32(uint64(hdr) + hdrOffLength)
	if err != nil {
		return err
	}
	pattern := uint64(hdr) + hdrOffLEDPattern
	if pattern >= uint64(hdrLen)+uint64(hdr) {
		d.logf(Info, "Firmware does not support LED identification")
		return fmt.Errorf("%w: header_length %d has no LED word (-EINVAL)", ErrState, hdrLen)
	}
	v := uint32(0xfffffffe)
	if !on {
		if v, err = d.readBE32(pattern + 4); err != nil {
			return err
		}
	}
	return d.putBE32(pattern, v)
}

// validUnicast is is_valid_ether_addr.
func validUnicast(a []byte) bool {
	if len(a) != 6 || a[0]&1 != 0 {
		return false
	}
	for _, b := range a {
		if b != 0 {
			return true
		}
	}
	return false
}
