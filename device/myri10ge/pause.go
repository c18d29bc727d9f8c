package myri10ge

import (
	"encoding/binary"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
)

// Flow control (IEEE 802.3 annex 31B): the NIC counts the PAUSE frames
// its link partner sends (dropped_pause in the interrupt block, §6.1) and,
// while ENABLE_FLOW_CONTROL is on, holds transmission for the quanta they
// ask. The driver's watchdog reads dropped_pause: TX that is stuck while
// it moves is "TX paused, check link partner", not a reset (§7.4).

const (
	etherTypeMACControl = 0x8808
	macControlPause     = 0x0001
	// quantumTime is one pause quantum, 512 bit times, at 10 Gb/s.
	quantumTime = 512 * time.Second / 10e9
)

// isPause reports whether f is a MAC control PAUSE frame.
func isPause(f []byte) bool {
	return len(f) >= 18 && binary.BigEndian.Uint16(f[12:]) == etherTypeMACControl &&
		binary.BigEndian.Uint16(f[14:]) == macControlPause
}

// cmdFlowControl is ENABLE_FLOW_CONTROL and DISABLE_FLOW_CONTROL.
func (n *NIC) cmdEnableFlowControl(*command) abi.Status {
	n.fw.flowControl = true
	return abi.StatusOK
}

func (n *NIC) cmdDisableFlowControl(*command) abi.Status {
	n.fw.flowControl = false
	n.resumeTxLocked()
	return abi.StatusOK
}

// pauseLocked takes a PAUSE frame: count it, report the count in slice
// 0's next interrupt block, and with flow control on hold transmission
// for its quanta from now (a later PAUSE replaces the time left; quanta 0
// resumes at once).
func (n *NIC) pauseLocked(f []byte) {
	n.drops.pause++
	if n.fw.flowControl {
		d := time.Duration(binary.BigEndian.Uint16(f[16:])) * quantumTime
		n.fw.pauseUntil = time.Now().Add(d)
		if d == 0 {
			n.resumeTxLocked()
		} else if !n.fw.txPaused {
			n.fw.txPaused = true
			n.pauseTimerLocked(d)
		}
	}
	n.maybeInterruptLocked(n.slices[0])
}

// pauseTimerLocked ends the pause after d, or later if a PAUSE extended
// it meanwhile. A reset or detach (a new epoch) voids it.
func (n *NIC) pauseTimerLocked(d time.Duration) {
	epoch := n.epoch
	time.AfterFunc(d, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.epoch != epoch || !n.fw.txPaused {
			return
		}
		if left := time.Until(n.fw.pauseUntil); left > 0 {
			n.pauseTimerLocked(left)
			return
		}
		n.resumeTxLocked()
	})
}

// resumeTxLocked ends a pause: the packets the driver posted meanwhile go
// out now.
func (n *NIC) resumeTxLocked() {
	if !n.fw.txPaused {
		return
	}
	n.fw.txPaused = false
	for _, s := range n.slices {
		n.transmitLocked(s)
	}
}
