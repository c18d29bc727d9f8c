package myri10ge

import (
	"encoding/binary"
	"math/bits"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/fault"

	"github.com/myriemu/myriemu/fabric"
	"github.com/sirupsen/logrus"
)

// command is one mailbox request (§4.1) and its reply data.
type command struct {
	cmd             abi.Cmd
	data0, data1    uint32
	data2           uint32
	reply           uint32 // response.data
	respHi, respLow uint32
}

// cmdHandler executes a command and returns its status; it sets c.reply
// when the command returns data.
type cmdHandler func(n *NIC, c *command) abi.Status

// commands is the firmware's command table (§4.3), indexed by command
// number: README.md's command table lists it row by row. A command
// without a handler is answered UNKNOWN, as the real firmware does.
//
// Deliberately UNKNOWN: GET_MAX_TSO6_HDR_SIZE (no TSO6 offered, so the
// driver segments IPv6 itself), GET_DCA_OFFSET (no DCA in a VM), the
// MDIO/I2C/VPUMP/RSS-key/shared-interrupt commands Linux never sends.
var commands = [...]cmdHandler{
	abi.CmdReset:                  (*NIC).cmdReset,
	abi.CmdSetIntrqDMA:            (*NIC).cmdSetIntrqDMA,
	abi.CmdSetBigBufferSize:       (*NIC).cmdSetBigBufferSize,
	abi.CmdSetSmallBufferSize:     (*NIC).cmdSetSmallBufferSize,
	abi.CmdGetSendOffset:          (*NIC).cmdGetSendOffset,
	abi.CmdGetSmallRxOffset:       (*NIC).cmdGetSmallRxOffset,
	abi.CmdGetBigRxOffset:         (*NIC).cmdGetBigRxOffset,
	abi.CmdGetIRQAckOffset:        (*NIC).cmdGetIRQAckOffset,
	abi.CmdGetIRQDeassertOffset:   (*NIC).cmdGetIRQDeassertOffset,
	abi.CmdGetSendRingSize:        (*NIC).cmdGetSendRingSize,
	abi.CmdGetRxRingSize:          (*NIC).cmdGetRxRingSize,
	abi.CmdSetIntrqSize:           (*NIC).cmdSetIntrqSize,
	abi.CmdEthernetUp:             (*NIC).cmdEthernetUp,
	abi.CmdEthernetDown:           (*NIC).cmdEthernetDown,
	abi.CmdSetMTU:                 (*NIC).cmdSetMTU,
	abi.CmdGetIntrCoalDelayOffset: (*NIC).cmdGetIntrCoalDelayOffset,
	abi.CmdSetStatsDMAObsolete:    (*NIC).cmdSetStatsDMAObsolete,
	abi.CmdEnablePromisc:          (*NIC).cmdEnablePromisc,
	abi.CmdDisablePromisc:         (*NIC).cmdDisablePromisc,
	abi.CmdSetMACAddress:          (*NIC).cmdSetMACAddress,
	abi.CmdEnableFlowControl:      (*NIC).cmdEnableFlowControl,
	abi.CmdDisableFlowControl:     (*NIC).cmdDisableFlowControl,
	abi.CmdDMATest:                (*NIC).cmdDMATest,
	abi.CmdEnableAllMulti:         (*NIC).cmdEnableAllMulti,
	abi.CmdDisableAllMulti:        (*NIC).cmdDisableAllMulti,
	abi.CmdJoinMulticastGroup:     (*NIC).cmdJoinMulticast,
	abi.CmdLeaveMulticastGroup:    (*NIC).cmdLeaveMulticast,
	abi.CmdLeaveAllMulticast:      (*NIC).cmdLeaveAllMulticast,
	abi.CmdSetStatsDMAV2:          (*NIC).cmdSetStatsDMAV2,
	abi.CmdUnalignedTest:          (*NIC).cmdDMATest, // completions are always aligned here
	abi.CmdGetMaxRSSQueues:        (*NIC).cmdGetMaxRSSQueues,
	abi.CmdEnableRSSQueues:        (*NIC).cmdEnableRSSQueues,
	abi.CmdGetRSSTableOffset:      (*NIC).cmdGetRSSTableOffset,
	abi.CmdSetRSSTableSize:        (*NIC).cmdSetRSSTableSize,
	abi.CmdSetRSSEnable:           (*NIC).cmdSetRSSEnable,
	abi.CmdSetTSOMode:             (*NIC).cmdAccept,
	abi.CmdSetRSSMCPSlotType:      (*NIC).cmdSetRSSMCPSlotType,
}

// cmdAccept answers OK and changes nothing: the TSO mode, which only changes how the
// stack seeds checksums that the device recomputes anyway.
func (n *NIC) cmdAccept(*command) abi.Status { return abi.StatusOK }

// The offsets and sizes of §2.2, from bar0.go.
func (n *NIC) cmdGetSendOffset(c *command) abi.Status    { return n.sliceOffset(c, sendRingOff) }
func (n *NIC) cmdGetSmallRxOffset(c *command) abi.Status { return n.sliceOffset(c, smallRingOff) }
func (n *NIC) cmdGetBigRxOffset(c *command) abi.Status   { return n.sliceOffset(c, bigRingOff) }
func (n *NIC) cmdGetIRQAckOffset(c *command) abi.Status  { return reply(c, irqAckBase) }
func (n *NIC) cmdGetIRQDeassertOffset(c *command) abi.Status {
	return reply(c, irqDeassertOff)
}
func (n *NIC) cmdGetIntrCoalDelayOffset(c *command) abi.Status { return reply(c, intrCoalOff) }
func (n *NIC) cmdGetRSSTableOffset(c *command) abi.Status      { return reply(c, rssTableOff) }
func (n *NIC) cmdGetSendRingSize(c *command) abi.Status        { return reply(c, sendRingBytes) }
func (n *NIC) cmdGetRxRingSize(c *command) abi.Status          { return reply(c, rxRingBytes) }

// The receive filter's switches (§5.3 step 1).
func (n *NIC) cmdEnablePromisc(*command) abi.Status   { n.fw.promisc = true; return abi.StatusOK }
func (n *NIC) cmdDisablePromisc(*command) abi.Status  { n.fw.promisc = false; return abi.StatusOK }
func (n *NIC) cmdEnableAllMulti(*command) abi.Status  { n.fw.allMulti = true; return abi.StatusOK }
func (n *NIC) cmdDisableAllMulti(*command) abi.Status { n.fw.allMulti = false; return abi.StatusOK }

// reply answers OK with data v.
func reply(c *command, v uint32) abi.Status { c.reply = v; return abi.StatusOK }

// sliceOffset answers a per-slice ring offset command (data0 = slice).
func (n *NIC) sliceOffset(c *command, off func(int) uint64) abi.Status {
	s := int(c.data0)
	if c.data0 >= uint32(len(n.slices)) {
		n.guestErrorLocked("ring offset for absent slice", "slice", s)
		return abi.StatusErrorRange
	}
	c.reply = uint32(off(s))
	return abi.StatusOK
}

// commandLocked runs the command in the mailbox and DMAs the response
// before returning, so a reply can never arrive after the driver gave up
// and re-armed its buffer for the next command (§4.1).
func (n *NIC) commandLocked(int, uint64, int) {
	c := command{
		cmd:     abi.Cmd(n.be32(abi.OffCmd + abi.CmdOffCmd)),
		data0:   n.be32(abi.OffCmd + abi.CmdOffData0),
		data1:   n.be32(abi.OffCmd + abi.CmdOffData1),
		data2:   n.be32(abi.OffCmd + abi.CmdOffData2),
		respHi:  n.be32(abi.OffCmd + abi.CmdOffRespHi),
		respLow: n.be32(abi.OffCmd + abi.CmdOffRespLo),
	}
	n.stats.Commands++
	if n.host.Fault.Armed(fault.FW) && n.commandFaultLocked(&c) {
		return
	}
	status := abi.StatusUnknown
	if c.cmd < abi.Cmd(len(commands)) && commands[c.cmd] != nil {
		status = commands[c.cmd](n, &c)
	}
	switch status {
	case abi.StatusOK:
	case abi.StatusUnknown:
		n.stats.UnknownCmds++
	default:
		n.stats.FailedCmds++
	}
	if n.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		n.log.WithFields(map[string]any{"cmd": c.cmd.String(), "data0": c.data0, "data1": c.data1,
			"data2": c.data2, "status": status.String(), "reply": c.reply}).Debug("command")
	}
	n.respondLocked(host64(c.respHi, c.respLow), c.reply, status)
}

// respondLocked DMAs response.data, then response.result as its own store:
// the driver takes result != NO_RESPONSE as "data is valid" (§4.1).
func (n *NIC) respondLocked(addr uint64, data uint32, status abi.Status) {
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], data)
	if !n.dmaWriteLocked(nil, "command response", addr+abi.RespOffData, w[:]) {
		return
	}
	binary.BigEndian.PutUint32(w[:], uint32(status))
	n.dmaStoreLocked(nil, "command response", addr+abi.RespOffResult, w)
}

func (n *NIC) cmdReset(c *command) abi.Status {
	n.resetFirmwareLocked()
	// The interrupt queue size in bytes; probe_slices derives the driver's
	// max_intr_slots from it (§12.1).
	c.reply = uint32(n.fw.intrqSlots * abi.SlotSize)
	return abi.StatusOK
}

func (n *NIC) cmdSetIntrqDMA(c *command) abi.Status {
	s, ok := n.sliceArgLocked(c.data2, "SET_INTRQ_DMA")
	if !ok {
		return abi.StatusErrorRange
	}
	s.rxDoneAddr = host64(c.data1, c.data0)
	s.rxDoneSet = true
	s.rxDoneIdx = 0
	return abi.StatusOK
}

func (n *NIC) cmdSetIntrqSize(c *command) abi.Status {
	slots := c.data0 / abi.SlotSize
	if c.data0%abi.SlotSize != 0 || slots < abi.RecvGroup || slots > 1<<16 || bits.OnesCount32(slots) != 1 {
		n.guestErrorLocked("interrupt queue size not a power of two slots", "bytes", c.data0)
		return abi.StatusErrorRange
	}
	n.fw.intrqSlots = int(slots)
	return abi.StatusOK
}

func (n *NIC) cmdSetBigBufferSize(c *command) abi.Status {
	if c.data0 < 256 || c.data0 > 16384 || bits.OnesCount32(c.data0) != 1 {
		n.guestErrorLocked("big buffer size not a power of two in 256..16384", "bytes", c.data0)
		return abi.StatusErrorRange
	}
	n.fw.bigBytes = int(c.data0)
	return abi.StatusOK
}

func (n *NIC) cmdSetSmallBufferSize(c *command) abi.Status {
	if c.data0 < fabric.MinFrame || c.data0 > fabric.MaxFrame {
		n.guestErrorLocked("small buffer size out of range", "bytes", c.data0)
		return abi.StatusErrorRange
	}
	n.fw.smallBytes = int(c.data0)
	return abi.StatusOK
}

func (n *NIC) cmdSetMTU(c *command) abi.Status {
	if c.data0 < 60 || c.data0 > fabric.MaxFrame {
		n.guestErrorLocked("MTU out of range", "frame", c.data0)
		return abi.StatusErrorRange
	}
	n.fw.maxFrame = int(c.data0)
	return abi.StatusOK
}

// cmdEthernetUp starts the data path. The firmware refuses to start
// before it knows where to report: every active slice needs its rx_done
// ring, and slice 0 its interrupt block (§4.4 open sequence).
func (n *NIC) cmdEthernetUp(c *command) abi.Status {
	for _, s := range n.slices[:n.fw.numSlices] {
		if !s.rxDoneSet || (s.idx == 0 && !s.statsSet) {
			n.guestErrorLocked("ETHERNET_UP before SET_INTRQ_DMA/SET_STATS_DMA", "slice", s.idx)
			return abi.StatusErrorBusy
		}
	}
	n.setRunningLocked(true)
	return abi.StatusOK
}

// cmdEthernetDown stops the data path and reports the link-down event the
// driver's close waits for (§7.1).
func (n *NIC) cmdEthernetDown(c *command) abi.Status {
	n.setRunningLocked(false)
	return abi.StatusOK
}

// setRunningLocked starts or stops the data path, if it is not so
// already, and reports the link event through slice 0's interrupt block
// (§7.1).
func (n *NIC) setRunningLocked(up bool) {
	if n.fw.running == up {
		return
	}
	n.fw.running = up
	if up {
		n.fw.linkEvent = linkEventUp
		n.log.Info("ethernet up")
	} else {
		n.fw.linkEvent = linkEventDown
		n.log.Info("ethernet down")
		for _, s := range n.slices {
			n.discardHeldLocked(s)
		}
	}
	n.maybeInterruptLocked(n.slices[0])
}

func (n *NIC) cmdSetStatsDMAV2(c *command) abi.Status {
	size := c.data2 & 0xFFFF
	s, ok := n.sliceArgLocked(c.data2>>16, "SET_STATS_DMA_V2")
	if !ok {
		return abi.StatusErrorRange
	}
	if size < abi.IRQDataSize {
		n.guestErrorLocked("interrupt block smaller than mcp_irq_data", "bytes", size)
		return abi.StatusErrorRange
	}
	s.statsAddr, s.statsOff, s.statsSet = host64(c.data1, c.data0), 0, true
	return abi.StatusOK
}

// cmdSetStatsDMAObsolete is the legacy 40-byte block: the address given is
// that of send_done_count, offset 0x18 of mcp_irq_data.
func (n *NIC) cmdSetStatsDMAObsolete(c *command) abi.Status {
	s := n.slices[0]
	s.statsAddr, s.statsOff, s.statsSet = host64(c.data1, c.data0), abi.ObsoleteStatsOff, true
	return abi.StatusOK
}

func (n *NIC) cmdSetMACAddress(c *command) abi.Status {
	n.fw.mac = [6]byte{
		byte(c.data0 >> 24), byte(c.data0 >> 16), byte(c.data0 >> 8), byte(c.data0),
		byte(c.data1 >> 8), byte(c.data1),
	}
	return abi.StatusOK
}

// maxMulticast is the multicast filter's capacity; a full table answers
// ERROR_MULTICAST and the driver falls back to ALLMULTI.
const maxMulticast = 256

// multicastArg decodes JOIN/LEAVE's address: the last two bytes sit in
// the HIGH half of data1, unlike SET_MAC_ADDRESS (§4.3 #28).
func multicastArg(c *command) [6]byte {
	return [6]byte{
		byte(c.data0 >> 24), byte(c.data0 >> 16), byte(c.data0 >> 8), byte(c.data0),
		byte(c.data1 >> 24), byte(c.data1 >> 16),
	}
}

func (n *NIC) cmdJoinMulticast(c *command) abi.Status {
	a := multicastArg(c)
	if a[0]&1 == 0 {
		n.guestErrorLocked("join of a unicast address", "addr", macString(a))
		return abi.StatusErrorMulticast
	}
	if _, ok := n.fw.mcast[a]; !ok && len(n.fw.mcast) >= maxMulticast {
		return abi.StatusErrorMulticast
	}
	n.fw.mcast[a] = struct{}{}
	return abi.StatusOK
}

func (n *NIC) cmdLeaveMulticast(c *command) abi.Status {
	delete(n.fw.mcast, multicastArg(c))
	return abi.StatusOK
}

func (n *NIC) cmdLeaveAllMulticast(*command) abi.Status {
	clear(n.fw.mcast)
	return abi.StatusOK
}

func (n *NIC) cmdGetMaxRSSQueues(c *command) abi.Status {
	c.reply = uint32(len(n.slices))
	return abi.StatusOK
}

func (n *NIC) cmdEnableRSSQueues(c *command) abi.Status {
	if c.data0 < 1 || c.data0 > uint32(len(n.slices)) {
		n.guestErrorLocked("ENABLE_RSS_QUEUES beyond the slices offered", "slices", c.data0)
		return abi.StatusErrorRange
	}
	// data1's multi-TX bit needs nothing: every slice's send ring is
	// served at its own doorbell either way.
	n.fw.numSlices = int(c.data0)
	return abi.StatusOK
}

func (n *NIC) cmdSetRSSTableSize(c *command) abi.Status {
	if c.data0 < 1 || c.data0 > 256 {
		n.guestErrorLocked("RSS table size out of range", "size", c.data0)
		return abi.StatusErrorRange
	}
	n.fw.rssTableSize = int(c.data0)
	return abi.StatusOK
}

func (n *NIC) cmdSetRSSEnable(c *command) abi.Status {
	// data1, the hash type, is not used: any steering is acceptable (§9)
	// and steerLocked always hashes addresses and ports.
	n.fw.rssEnabled = c.data0 != 0
	return abi.StatusOK
}

func (n *NIC) cmdSetRSSMCPSlotType(c *command) abi.Status {
	if c.data0 != 0 {
		return abi.StatusErrorRange // only the 4-byte mcp_slot exists here
	}
	return abi.StatusOK
}

// dmaTestRounds is how many transfers of each kind DMA_TEST performs.
const dmaTestRounds = 32

// cmdDMATest runs the driver's DMA benchmark for real against its page
// (§4.3 #25): data2 holds read length << 16 | write length. The reply is
// transfers << 16 | elapsed ticks of 0.5 µs, never 0 ticks: the driver
// divides by them.
func (n *NIC) cmdDMATest(c *command) abi.Status {
	addr := host64(c.data1, c.data0)
	readLen, writeLen := int(c.data2>>16), int(c.data2&0xFFFF)
	if readLen > 4096 || writeLen > 4096 || readLen+writeLen == 0 {
		n.guestErrorLocked("DMA test length out of range", "data2", c.data2)
		return abi.StatusErrorRange
	}
	buf := make([]byte, max(readLen, writeLen))
	start := time.Now()
	for i := 0; i < dmaTestRounds; i++ {
		if readLen > 0 && !n.dmaReadLocked(nil, "DMA test read", addr, buf[:readLen]) {
			return abi.StatusErrorRange
		}
		if writeLen > 0 && !n.dmaWriteLocked(nil, "DMA test write", addr, buf[:writeLen]) {
			return abi.StatusErrorRange
		}
	}
	ticks := uint32(min(max(time.Since(start)/(500*time.Nanosecond), 1), 0xFFFF))
	c.reply = dmaTestRounds<<16 | ticks
	return abi.StatusOK
}

// sliceArgLocked checks a slice number from a command.
func (n *NIC) sliceArgLocked(v uint32, what string) (*slice, bool) {
	if v >= uint32(len(n.slices)) {
		n.guestErrorLocked(what+" for absent slice", "slice", v)
		return nil, false
	}
	return n.slices[v], true
}
