package myritest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// WatchdogTick runs one tick of the driver's watchdog timer
// (myri10ge_watchdog_timer, every second while the interface is up, §7.4):
// a slice is stuck when descriptors were outstanding at the previous tick
// and none completed since, unless dropped_pause moved; when no slice moved
// at all it reads the PCI Command register, and a clear MASTER bit counts
// as a rebooted NIC. It reports whether the driver would schedule its
// reset work, which WatchdogReset runs.
func (d *Driver) WatchdogTick() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running != stateRunning {
		return false, fmt.Errorf("%w: watchdog while the interface is down", ErrState)
	}
	pause := d.mem.loadBE32(d.ss[0].stats + irqOffDroppedPause)
	reset, busy := false, 0
	for _, s := range d.ss {
		if reset {
			break
		}
		d.checkSlice(s, &reset, &busy, pause)
	}
	if busy == 0 {
		cmd, err := d.cfgRead16(pciCommand)
		if err != nil {
			return false, err
		}
		if cmd&pciCommandMaster == 0 {
			reset = true
		}
	}
	d.watchdogPause = pause
	return reset, nil
}

// checkSlice is myri10ge_check_slice.
func (d *Driver) checkSlice(s *sliceState, reset *bool, busy *int, pause uint32) {
	t := &s.tx
	if t.req != t.done && t.done == s.watchdogTxDone && s.watchdogTxReq != s.watchdogTxDone {
		if pause != d.watchdogPause {
			d.logf(Warn, "slice %d: TX paused, check link partner", s.idx)
		} else {
			d.logf(Warn, "slice %d: TX stuck %v %d %d %d %d %d", s.idx, t.queueActive, t.req, t.done, t.pktStart, t.pktDone,
				d.mem.loadBE32(s.stats+irqOffSendDoneCount))
			*reset = true
			s.stuck = true
		}
	}
	if s.watchdogTxDone != t.done || s.watchdogRxDone != s.rxDoneCnt {
		*busy++
	}
	s.watchdogTxDone, s.watchdogTxReq, s.watchdogRxDone = t.done, t.req, s.rxDoneCnt
}

// WatchdogReset runs the driver's reset work (myri10ge_watchdog, §7.4).
// With Command.MASTER clear it reads REBOOT_STATUS through the vendor
// capability (config offsets vs+0x10, +0x18, +0x14; with no capability vs
// is 0, as in the driver), closes without ETHERNET_DOWN, restores the
// saved Command register, and (once per driver, myri10ge_reset_recover)
// reloads or adopts the firmware and opens again. Otherwise it re-checks
// the stuck flag (of slice 0 only, whatever the slice count: the driver's
// loop never advances) and, if still stuck, closes, reloads and opens.
func (d *Driver) WatchdogReset(ctx context.Context) error {
	d.mu.Lock()
	d.watchdogResets++
	cmd, err := d.cfgRead16(pciCommand)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	rebooted := false
	if cmd&pciCommandMaster == 0 {
		reboot, err := d.readReboot()
		if err != nil {
			d.mu.Unlock()
			return err
		}
		not := ""
		if d.resetRecovered {
			not = " not"
		}
		d.logf(Err, "NIC rebooted (0x%x),%s resetting", reboot, not)
		if d.resetRecovered {
			d.mu.Unlock()
			return nil
		}
		rebooted = true
		d.rebooted = true
		d.mu.Unlock()
		err = d.Close(ctx)
		d.mu.Lock()
		d.rebooted = false
		d.resetRecovered = true
		if e := d.cfgWrite16(pciCommand, d.savedCommand); e != nil { // pci_restore_state
			err = errors.Join(err, e)
		}
		if err != nil {
			d.mu.Unlock()
			return err
		}
	} else {
		if cmd == 0xffff {
			if gone, err := d.disappeared(); err != nil || gone {
				d.mu.Unlock()
				return err
			}
		}
		reset, busy := false, 0
		pause := d.mem.loadBE32(d.ss[0].stats + irqOffDroppedPause)
		for range d.ss {
			if s := d.ss[0]; s.stuck {
				d.checkSlice(s, &reset, &busy, pause)
				s.stuck = false
			}
		}
		if !reset {
			d.logf(Info, "not resetting")
			d.mu.Unlock()
			return nil
		}
		d.logf(Err, "device timeout, resetting")
	}
	d.mu.Unlock()
	if !rebooted {
		if err := d.Close(ctx); err != nil && !errors.Is(err, ErrTimeout) {
			return err
		}
	}
	d.mu.Lock()
	err = d.loadFirmware(ctx, true)
	if err != nil {
		d.logf(Err, "failed to load firmware")
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	return d.Open(ctx)
}

// readReboot is myri10ge_read_reboot: the vendor capability's read32
// window at REBOOT_STATUS.
func (d *Driver) readReboot() (uint32, error) {
	vs := uint64(d.vsOffset)
	if err := d.bus.WriteConfig(vs+0x10, []byte{3}); err != nil {
		return 0, fmt.Errorf("myritest: config write 1@%#x: %w", vs+0x10, err)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], 0xfffffff0)
	if err := d.bus.WriteConfig(vs+0x18, b[:]); err != nil {
		return 0, fmt.Errorf("myritest: config write 4@%#x: %w", vs+0x18, err)
	}
	if err := d.bus.ReadConfig(vs+0x14, b[:]); err != nil {
		return 0, fmt.Errorf("myritest: config read 4@%#x: %w", vs+0x14, err)
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// Suspend is myri10ge_suspend: close a running interface, then the dummy
// RDMA off.
func (d *Driver) Suspend(ctx context.Context) (wasUp bool, err error) {
	d.mu.Lock()
	wasUp = d.running == stateRunning
	d.mu.Unlock()
	if wasUp {
		d.mu.Lock()
		d.logf(Info, "closing")
		d.mu.Unlock()
		err = d.Close(ctx)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return wasUp, errors.Join(err, d.dummyRDMA(ctx, false))
}

// Resume is myri10ge_resume: the vendor ID check, a reset, the dummy RDMA
// on, and open again if the interface was up.
func (d *Driver) Resume(ctx context.Context, wasUp bool) error {
	d.mu.Lock()
	gone, err := d.disappeared()
	if err != nil {
		d.mu.Unlock()
		return err
	}
	if gone {
		d.mu.Unlock()
		return fmt.Errorf("%w: vendor ID 0xffff on resume (-EIO)", ErrState)
	}
	if err := d.reset(ctx); isFatal(err) {
		d.mu.Unlock()
		return err
	}
	if err := d.dummyRDMA(ctx, true); err != nil {
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	if wasUp {
		return d.Open(ctx)
	}
	return nil
}

// disappeared is the driver's vendor ID check (the watchdog's after a
// command register of 0xffff, and resume's): a function that reads
// 0xffff there is gone from the bus, and "device disappeared!" is logged.
// Called with d.mu held.
func (d *Driver) disappeared() (bool, error) {
	vendor, err := d.cfgRead16(0)
	if err != nil {
		return false, err
	}
	if vendor == 0xffff {
		d.logf(Err, "device disappeared!")
		return true, nil
	}
	return false, nil
}
