package pci

import (
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/msi"
	"github.com/sirupsen/logrus"
)

// SetFaults puts the function's bar and pci fault doors (and fw.reboot)
// under set, naming the function device in every Op. Call it before a
// client attaches.
func (f *Function) SetFaults(set *fault.Set, device string) {
	f.faults, f.device = set, device
}

// SetHostWrap makes Attach hand the device wrap(h) instead of h: the
// server puts the dma and msi fault doors and its error observers there.
// Call it before a client attaches.
func (f *Function) SetHostWrap(wrap func(Host) Host) { f.wrapHost = wrap }

// Remove is a surprise removal as the guest sees it: from now until the
// client goes, every config and BAR read returns all ones and every write
// is dropped (the driver's "device disappeared!" path).
func (f *Function) Remove() {
	if !f.removed.Swap(true) {
		f.log.Warn("function surprise-removed (fault)")
	}
}

// Removed reports whether Remove was called for the current client.
func (f *Function) Removed() bool { return f.removed.Load() }

// Reboot is what a firmware crash does to the function: the device
// resets to power-on and COMMAND.MASTER clears, which is what the
// myri10ge watchdog checks to report "NIC rebooted".
func (f *Function) Reboot() {
	f.mu.Lock()
	c := f.cfg
	old := c.u16(regCommand)
	cmd := old &^ cmdMaster
	var b [2]byte
	b[0], b[1] = byte(cmd), byte(cmd>>8)
	copy(c.data[regCommand:], b[:])
	f.commandWritten(old, cmd)
	f.mu.Unlock()
	f.dev.Reset()
	f.log.Warn("function rebooted (fault): bus master cleared, device reset")
}

// BusMaster reports COMMAND.MASTER.
func (f *Function) BusMaster() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg.u16(regCommand)&cmdMaster != 0
}

// IRQMode reports the interrupt mechanism the client enabled.
func (f *Function) IRQMode() msi.Mode { return f.irq.Mode() }

// removedAccess serves an access to a removed function.
func removedAccess(p []byte, write bool) {
	if !write {
		for i := range p {
			p[i] = 0xff
		}
	}
}

// configFault offers a config read to the pci door.
func (f *Function) configFault(off int, p []byte) {
	act, ok := f.faults.Eval(fault.PCI, &fault.Op{Point: "config", Device: f.device, Addr: uint64(off), Len: len(p)})
	if ok && act.Kind == fault.PCISurpriseRemove {
		f.Remove()
		removedAccess(p, false)
	}
}

// resetFault reports whether the pci door makes this reset fail.
func (f *Function) resetFault() bool {
	act, ok := f.faults.Eval(fault.PCI, &fault.Op{Point: "reset", Device: f.device})
	if ok && act.Kind == fault.PCIResetFail {
		f.log.Warn("device reset ignored (fault pci.reset-fail)")
		return true
	}
	return false
}

// accessBARFaulty is accessBAR with the bar or fw door armed.
func (f *Function) accessBARFaulty(bar int, off uint64, p []byte, write bool) error {
	if write && f.faults.Armed(fault.FW) {
		act, ok := f.faults.Eval(fault.FW, &fault.Op{Point: "write", Device: f.device, Addr: off, Len: len(p)})
		if ok && act.Kind == fault.FWReboot {
			f.Reboot()
			return nil
		}
	}
	if !f.faults.Armed(fault.BAR) {
		return f.accessBARDirect(bar, off, p, write)
	}
	point := "read"
	if write {
		point = "write"
	}
	act, ok := f.faults.Eval(fault.BAR, &fault.Op{Point: point, Device: f.device, Region: barName[bar], Addr: off, Len: len(p)})
	if !ok {
		return f.accessBARDirect(bar, off, p, write)
	}
	switch act.Kind {
	case fault.BARReadAllOnes:
		removedAccess(p, false)
		return nil
	case fault.BARWriteDrop:
		return nil
	case fault.BARWCTear:
		n := len(p) / 2
		if b := act.Int("bytes"); b >= 0 && b < int64(len(p)) {
			n = int(b)
		}
		if n == 0 {
			return nil
		}
		return f.accessBARDirect(bar, off, p[:n], true)
	case fault.BARSRAMCorrupt:
		err := f.accessBARDirect(bar, off, p, false)
		if err == nil && len(p) > 0 {
			p[act.Rand%uint64(len(p))] ^= byte(act.Int("mask"))
		}
		return err
	}
	f.log.WithFields(logrus.Fields{"fault": act.Kind.String()}).Debug("fault kind has no effect at the bar door")
	return f.accessBARDirect(bar, off, p, write)
}

var barName = [6]string{"bar0", "bar1", "bar2", "bar3", "bar4", "bar5"}
