package myri10ge

import (
	"encoding/binary"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fault"
)

// The fw fault door (docs/faults.md): the mailbox asks the host's fault
// set about each command, and the confirmation and stats-block DMAs ask
// the dma door with their region, when a rule is armed there.

// slowResponse is a command response held back by fw.cmd.slow.
type slowResponse struct {
	timer *time.Timer
}

// stopSlowLocked cancels a held-back response (reset, detach).
func (n *NIC) stopSlowLocked() {
	if n.slow.timer != nil {
		n.slow.timer.Stop()
		n.slow.timer = nil
	}
}

// commandFaultLocked offers command c to the fw door. It returns true if
// a fault took the command over (the caller then does nothing more).
func (n *NIC) commandFaultLocked(c *command) bool {
	point := "cmd"
	switch c.cmd {
	case abi.CmdDMATest, abi.CmdUnalignedTest:
		point = "dmatest"
	case abi.CmdGetSendRingSize, abi.CmdGetRxRingSize, abi.CmdGetMaxRSSQueues:
		point = "caps"
	}
	act, ok := n.host.Fault.Eval(fault.FW, &fault.Op{Point: point, Device: n.cfg.Name,
		Opcode: int(c.cmd), OpName: "MXGEFW_CMD_" + c.cmd.String(), Slice: int(c.data0), Queue: int(c.data0)})
	if !ok {
		return false
	}
	addr := host64(c.respHi, c.respLow)
	switch act.Kind {
	case fault.FWCmdTimeout:
		// No response at all: the driver's poll sees NO_RESPONSE and
		// gives up, "command N timed out" (§4.1).
		n.stats.FailedCmds++
		return true
	case fault.FWCmdError:
		status := map[string]abi.Status{"unknown": abi.StatusUnknown, "unaligned": abi.StatusErrorUnaligned,
			"range": abi.StatusErrorRange, "other": abi.StatusErrorBusy}[act.Arg("code")]
		n.stats.FailedCmds++
		n.respondLocked(addr, 0, status)
		return true
	case fault.FWDMATestFail:
		if c.cmd != abi.CmdDMATest && c.cmd != abi.CmdUnalignedTest {
			return false
		}
		n.stats.FailedCmds++
		n.respondLocked(addr, 0, abi.StatusErrorBusy)
		return true
	case fault.FWCapsLie:
		switch c.cmd {
		case abi.CmdGetSendRingSize, abi.CmdGetRxRingSize, abi.CmdGetMaxRSSQueues:
		default:
			return false
		}
		status := commands[c.cmd](n, c)
		n.respondLocked(addr, uint32(act.Int("value")), status)
		return true
	case fault.FWCmdSlow:
		// The command runs now; its response lands after the delay, as
		// from firmware that is slow to answer (the driver waits 15 ms,
		// 1 ms for atomic callers). A response after the driver gave up
		// lands in the buffer of its next command, as on hardware.
		status := abi.StatusUnknown
		if c.cmd < abi.Cmd(len(commands)) && commands[c.cmd] != nil {
			status = commands[c.cmd](n, c)
		}
		n.stopSlowLocked()
		epoch, reply := n.epoch, c.reply
		n.slow.timer = time.AfterFunc(act.Duration("delay"), func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.epoch != epoch {
				return // reset or detached since
			}
			n.slow.timer = nil
			n.respondLocked(addr, reply, status)
		})
		return true
	}
	return false
}

// confirmMissingLocked reports whether the dma door drops the
// confirmation word of a handoff or dummy RDMA (dma.confirm.missing).
func (n *NIC) confirmMissingLocked(what string) bool {
	act, ok := n.host.Fault.Eval(fault.DMA, &fault.Op{Point: "confirm", Device: n.cfg.Name, Region: "cmd", Slice: -1})
	if ok && act.Kind == fault.DMAConfirmMissing {
		n.log.WithField("dma", what).Debug("confirmation dropped (fault)")
		return true
	}
	return false
}

// statsFrozenLocked reports whether the dma door freezes this update of
// slice s's stats block (dma.stats.freeze): the valid word still lands,
// the counters and link state do not.
func (n *NIC) statsFrozenLocked(s *slice) bool {
	act, ok := n.host.Fault.Eval(fault.DMA, &fault.Op{Point: "stats", Device: n.cfg.Name, Region: "stats", Slice: s.idx})
	return ok && act.Kind == fault.DMAStatsFreeze
}

// rxDoneStoreLocked writes slice s's rx_done slot w at addr (§5.3 step 6)
// labelled for the dma door, so that a rule can lose exactly a receive
// completion: dma.write=drop; region=rx_done; slice=N. On failure it
// aborts like every other DMA (dmaAbortLocked).
func (n *NIC) rxDoneStoreLocked(s *slice, addr uint64, w [4]byte) bool {
	r := dma.Region{Name: "rx_done", Slice: s.idx}
	if err := dma.Store32In(n.host.Mem, r, addr, binary.NativeEndian.Uint32(w[:])); err != nil {
		n.dmaAbortLocked(s, "rx_done slot", err)
		return false
	}
	return true
}

// mcpTypeBad is the firmware type fw.header.bad shows: not "ETH ".
const mcpTypeBad = 0x42414421 // "BAD!"

// headerFaultLocked offers the running firmware's header to the fw door
// (fw.header.bad) when the SRAM image is written (power-on, reset) and
// when a client attaches, before its driver adopts the firmware: a
// firing makes the header's mcp_type something other than ETH until the
// next power-on, and the driver's adopt (probe, or the reload after a
// watchdog reset) fails with "Bad firmware type" (§3.5).
func (n *NIC) headerFaultLocked() {
	act, ok := n.host.Fault.Eval(fault.FW, &fault.Op{Point: "header", Device: n.cfg.Name, Slice: -1})
	if ok && act.Kind == fault.FWHeaderBad {
		binary.BigEndian.PutUint32(n.bar0[offHeader+abi.HdrOffType:], mcpTypeBad)
		n.log.Debug("firmware header made bad (fault)")
	}
}
