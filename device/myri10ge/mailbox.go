package myri10ge

import (
	"encoding/binary"
	"github.com/myriemu/myriemu/fault"
	"math/bits"
	"time"

	"github.com/myriemu/myriemu/fabric"
	"github.com/sirupsen/logrus"
)

// command is one mailbox request (§4.1) and its reply data.
type command struct {
	cmd             Cmd
	data0, data1    uint32
	data2           uint32
	reply           uint32 // response.data
	respHi, respLow uint32
}

// cmdHandler executes a command and returns its status; it sets c.reply
// when the command returns data.
type cmdHandler func(n *NIC, c *command) Status

// commands is the firmware's command table (§4.3), indexed by command
// number: README.md's command table lists it row by row. A command
// without a handler is answered UNKNOWN, as the real firmware does.
//
// Deliberately UNKNOWN: GET_MAX_TSO6_HDR_SIZE (no TSO6 offered, so the
// driver segments IPv6 itself), GET_DCA_OFFSET (no DCA in a VM), the
// MDIO/I2C/VPUMP/RSS-key/shared-interrupt commands Linux never sends.
var commands = [...]cmdHandler{
	CmdReset:                  (*NIC).cmdReset,
	CmdSetIntrqDMA:            (*NIC).cmdSetIntrqDMA,
	CmdSetBigBufferSize:       (*NIC).cmdSetBigBufferSize,
	CmdSetSmallBufferSize:     (*NIC).cmdSetSmallBufferSize,
	CmdGetSendOffset:          (*NIC).cmdGetSendOffset,
	CmdGetSmallRxOffset:       (*NIC).cmdGetSmallRxOffset,
	CmdGetBigRxOffset:         (*NIC).cmdGetBigRxOffset,
	CmdGetIRQAckOffset:        (*NIC).cmdGetIRQAckOffset,
	CmdGetIRQDeassertOffset:   (*NIC).cmdGetIRQDeassertOffset,
	CmdGetSendRingSize:        (*NIC).cmdGetSendRingSize,
	CmdGetRxRingSize:          (*NIC).cmdGetRxRingSize,
	CmdSetIntrqSize:           (*NIC).cmdSetIntrqSize,
	CmdEthernetUp:             (*NIC).cmdEthernetUp,
	CmdEthernetDown:           (*NIC).cmdEthernetDown,
	CmdSetMTU:                 (*NIC).cmdSetMTU,
	CmdGetIntrCoalDelayOffset: (*NIC).cmdGetIntrCoalDelayOffset,
	CmdSetStatsDMAObsolete:    (*NIC).cmdSetStatsDMAObsolete,
	CmdEnablePromisc:          (*NIC).cmdEnablePromisc,
	CmdDisablePromisc:         (*NIC).cmdDisablePromisc,
	CmdSetMACAddress:          (*NIC).cmdSetMACAddress,
	CmdEnableFlowControl:      (*NIC).cmdEnableFlowControl,
	CmdDisableFlowControl:     (*NIC).cmdDisableFlowControl,
	CmdDMATest:                (*NIC).cmdDMATest,
	CmdEnableAllMulti:         (*NIC).cmdEnableAllMulti,
	CmdDisableAllMulti:        (*NIC).cmdDisableAllMulti,
	CmdJoinMulticastGroup:     (*NIC).cmdJoinMulticast,
	CmdLeaveMulticastGroup:    (*NIC).cmdLeaveMulticast,
	CmdLeaveAllMulticast:      (*NIC).cmdLeaveAllMulticast,
	CmdSetStatsDMAV2:          (*NIC).cmdSetStatsDMAV2,
	CmdUnalignedTest:          (*NIC).cmdDMATest, // completions are always aligned here
	CmdGetMaxRSSQueues:        (*NIC).cmdGetMaxRSSQueues,
	CmdEnableRSSQueues:        (*NIC).cmdEnableRSSQueues,
	CmdGetRSSTableOffset:      (*NIC).cmdGetRSSTableOffset,
	CmdSetRSSTableSize:        (*NIC).cmdSetRSSTableSize,
	CmdSetRSSEnable:           (*NIC).cmdSetRSSEnable,
	CmdSetTSOMode:             (*NIC).cmdAccept,
	CmdSetRSSMCPSlotType:      (*NIC).cmdSetRSSMCPSlotType,
}

// cmdAccept answers OK and changes nothing: the TSO mode, which only changes how the
// stack seeds checksums that the device recomputes anyway.
func (n *NIC) cmdAccept(*command) Status { return StatusOK }

// The offsets and sizes of §2.2, from bar0.go.
func (n *NIC) cmdGetSendOffset(c *command) Status    { return n.sliceOffset(c, sendRingOff) }
func (n *NIC) cmdGetSmallRxOffset(c *command) Status { return n.sliceOffset(c, smallRingOff) }
func (n *NIC) cmdGetBigRxOffset(c *command) Status   { return n.sliceOffset(c, bigRingOff) }
func (n *NIC) cmdGetIRQAckOffset(c *command) Status  { return reply(c, irqAckBase) }
func (n *NIC) cmdGetIRQDeassertOffset(c *command) Status {
	return reply(c, irqDeassertOff)
}
func (n *NIC) cmdGetIntrCoalDelayOffset(c *command) Status { return reply(c, intrCoalOff) }
func (n *NIC) cmdGetRSSTableOffset(c *command) Status      { return reply(c, rssTableOff) }
func (n *NIC) cmdGetSendRingSize(c *command) Status        { return reply(c, sendRingBytes) }
func (n *NIC) cmdGetRxRingSize(c *command) Status          { return reply(c, rxRingBytes) }

// The receive filter's switches (§5.3 step 1).
func (n *NIC) cmdEnablePromisc(*command) Status   { n.fw.promisc = true; return StatusOK }
func (n *NIC) cmdDisablePromisc(*command) Status  { n.fw.promisc = false; return StatusOK }
func (n *NIC) cmdEnableAllMulti(*command) Status  { n.fw.allMulti = true; return StatusOK }
func (n *NIC) cmdDisableAllMulti(*command) Status { n.fw.allMulti = false; return StatusOK }

// reply answers OK with data v.
func reply(c *command, v uint32) Status { c.reply = v; return StatusOK }

// sliceOffset answers a per-slice ring offset command (data0 = slice).
func (n *NIC) sliceOffset(c *command, off func(int) uint64) Status {
	s := int(c.data0)
	if c.data0 >= uint32(len(n.slices)) {
		n.guestErrorLocked("ring offset for absent slice", "slice", s)
		return StatusErrorRange
	}
	c.reply = uint32(off(s))
	return StatusOK
}

// commandLocked runs the command in the mailbox and DMAs the response
// before returning, so a reply can never arrive after the driver gave up
// and re-armed its buffer for the next command (§4.1).
func (n *NIC) commandLocked(int, uint64, int) {
	c := command{
		cmd:     Cmd(n.be32(offCmd + cmdOffCmd)),
		data0:   n.be32(offCmd + cmdOffData0),
		data1:   n.be32(offCmd + cmdOffData1),
		data2:   n.be32(offCmd + cmdOffData2),
		respHi:  n.be32(offCmd + cmdOffRespHi),
		respLow: n.be32(offCmd + cmdOffRespLo),
	}
	n.stats.Commands++
	if n.host.Fault.Armed(fault.FW) && n.commandFaultLocked(&c) {
		return
	}
	status := StatusUnknown
	if c.cmd < Cmd(len(commands)) && commands[c.cmd] != nil {
		status = commands[c.cmd](n, &c)
	}
	switch status {
	case StatusOK:
	case StatusUnknown:
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
func (n *NIC) respondLocked(addr uint64, data uint32, status Status) {
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], data)
	if !n.dmaWriteLocked(nil, "command response", addr+respOffData, w[:]) {
		return
	}
	binary.BigEndian.PutUint32(w[:], uint32(status))
	n.dmaStoreLocked(nil, "command response", addr+respOffResult, w)
}

func (n *NIC) cmdReset(c *command) Status {
	n.resetFirmwareLocked()
	// The interrupt queue size in bytes; probe_slices derives the driver's
	// max_intr_slots from it (§12.1).
	c.reply = uint32(n.fw.intrqSlots * slotSize)
	return StatusOK
}

func (n *NIC) cmdSetIntrqDMA(c *command) Status {
	s, ok := n.sliceArgLocked(c.data2, "SET_INTRQ_DMA")
	if !ok {
		return StatusErrorRange
	}
	s.rxDoneAddr = host64(c.data1, c.data0)
	s.rxDoneSet = true
	s.rxDoneIdx = 0
	return StatusOK
}

func (n *NIC) cmdSetIntrqSize(c *command) Status {
	slots := c.data0 / slotSize
	if c.data0%slotSize != 0 || slots < recvGroup || slots > 1<<16 || bits.OnesCount32(slots) != 1 {
		n.guestErrorLocked("interrupt queue size not a power of two slots", "bytes", c.data0)
		return StatusErrorRange
	}
	n.fw.intrqSlots = int(slots)
	return StatusOK
}

func (n *NIC) cmdSetBigBufferSize(c *command) Status {
	if c.data0 < 256 || c.data0 > 16384 || bits.OnesCount32(c.data0) != 1 {
		n.guestErrorLocked("big buffer size not a power of two in 256..16384", "bytes", c.data0)
		return StatusErrorRange
	}
	n.fw.bigBytes = int(c.data0)
	return StatusOK
}

func (n *NIC) cmdSetSmallBufferSize(c *command) Status {
	if c.data0 < fabric.MinFrame || c.data0 > fabric.MaxFrame {
		n.guestErrorLocked("small buffer size out of range", "bytes", c.data0)
		return StatusErrorRange
	}
	n.fw.smallBytes = int(c.data0)
	return StatusOK
}

func (n *NIC) cmdSetMTU(c *command) Status {
	if c.data0 < 60 || c.data0 > fabric.MaxFrame {
		n.guestErrorLocked("MTU out of range", "frame", c.data0)
		return StatusErrorRange
	}
	n.fw.maxFrame = int(c.data0)
	return StatusOK
}

// cmdEthernetUp starts the data path. The firmware refuses to start
// before it knows where to report: every active slice needs its rx_done
// ring, and slice 0 its interrupt block (§4.4 open sequence).
func (n *NIC) cmdEthernetUp(c *command) Status {
	for _, s := range n.slices[:n.fw.numSlices] {
		if !s.rxDoneSet || (s.idx == 0 && !s.statsSet) {
			n.guestErrorLocked("ETHERNET_UP before SET_INTRQ_DMA/SET_STATS_DMA", "slice", s.idx)
			return StatusErrorBusy
		}
	}
	n.setRunningLocked(true)
	return StatusOK
}

// cmdEthernetDown stops the data path and reports the link-down event the
// driver's close waits for (§7.1).
func (n *NIC) cmdEthernetDown(c *command) Status {
	n.setRunningLocked(false)
	return StatusOK
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
	}
	n.maybeInterruptLocked(n.slices[0])
}

func (n *NIC) cmdSetStatsDMAV2(c *command) Status {
	size := c.data2 & 0xFFFF
	s, ok := n.sliceArgLocked(c.data2>>16, "SET_STATS_DMA_V2")
	if !ok {
		return StatusErrorRange
	}
	if size < irqDataSize {
		n.guestErrorLocked("interrupt block smaller than mcp_irq_data", "bytes", size)
		return StatusErrorRange
	}
	s.statsAddr, s.statsOff, s.statsSet = host64(c.data1, c.data0), 0, true
	return StatusOK
}

// cmdSetStatsDMAObsolete is the legacy 40-byte block: the address given is
// that of send_done_count, offset 0x18 of mcp_irq_data.
func (n *NIC) cmdSetStatsDMAObsolete(c *command) Status {
	s := n.slices[0]
	s.statsAddr, s.statsOff, s.statsSet = host64(c.data1, c.data0), obsoleteStatsOff, true
	return StatusOK
}

func (n *NIC) cmdSetMACAddress(c *command) Status {
	n.fw.mac = [6]byte{
		byte(c.data0 >> 24), byte(c.data0 >> 16), byte(c.data0 >> 8), byte(c.data0),
		byte(c.data1 >> 8), byte(c.data1),
	}
	return StatusOK
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

func (n *NIC) cmdJoinMulticast(c *command) Status {
	a := multicastArg(c)
	if a[0]&1 == 0 {
		n.guestErrorLocked("join of a unicast address", "addr", macString(a))
		return StatusErrorMulticast
	}
	if _, ok := n.fw.mcast[a]; !ok && len(n.fw.mcast) >= maxMulticast {
		return StatusErrorMulticast
	}
	n.fw.mcast[a] = struct{}{}
	return StatusOK
}

func (n *NIC) cmdLeaveMulticast(c *command) Status {
	delete(n.fw.mcast, multicastArg(c))
	return StatusOK
}

func (n *NIC) cmdLeaveAllMulticast(*command) Status {
	clear(n.fw.mcast)
	return StatusOK
}

func (n *NIC) cmdGetMaxRSSQueues(c *command) Status {
	c.reply = uint32(len(n.slices))
	return StatusOK
}

func (n *NIC) cmdEnableRSSQueues(c *command) Status {
	if c.data0 < 1 || c.data0 > uint32(len(n.slices)) {
		n.guestErrorLocked("ENABLE_RSS_QUEUES beyond the slices offered", "slices", c.data0)
		return StatusErrorRange
	}
	// data1's multi-TX bit needs nothing: every slice's send ring is
	// served at its own doorbell either way.
	n.fw.numSlices = int(c.data0)
	return StatusOK
}

func (n *NIC) cmdSetRSSTableSize(c *command) Status {
	if c.data0 < 1 || c.data0 > 256 {
		n.guestErrorLocked("RSS table size out of range", "size", c.data0)
		return StatusErrorRange
	}
	n.fw.rssTableSize = int(c.data0)
	return StatusOK
}

func (n *NIC) cmdSetRSSEnable(c *command) Status {
	// data1, the hash type, is not used: any steering is acceptable (§9)
	// and steerLocked always hashes addresses and ports.
	n.fw.rssEnabled = c.data0 != 0
	return StatusOK
}

func (n *NIC) cmdSetRSSMCPSlotType(c *command) Status {
	if c.data0 != 0 {
		return StatusErrorRange // only the 4-byte mcp_slot exists here
	}
	return StatusOK
}

// dmaTestRounds is how many transfers of each kind DMA_TEST performs.
const dmaTestRounds = 32

// cmdDMATest runs the driver's DMA benchmark for real against its page
// (§4.3 #25): data2 holds read length << 16 | write length. The reply is
// transfers << 16 | elapsed ticks of 0.5 µs, never 0 ticks: the driver
// divides by them.
func (n *NIC) cmdDMATest(c *command) Status {
	addr := host64(c.data1, c.data0)
	readLen, writeLen := int(c.data2>>16), int(c.data2&0xFFFF)
	if readLen > 4096 || writeLen > 4096 || readLen+writeLen == 0 {
		n.guestErrorLocked("DMA test length out of range", "data2", c.data2)
		return StatusErrorRange
	}
	buf := make([]byte, max(readLen, writeLen))
	start := time.Now()
	for i := 0; i < dmaTestRounds; i++ {
		if readLen > 0 && !n.dmaReadLocked(nil, "DMA test read", addr, buf[:readLen]) {
			return StatusErrorRange
		}
		if writeLen > 0 && !n.dmaWriteLocked(nil, "DMA test write", addr, buf[:writeLen]) {
			return StatusErrorRange
		}
	}
	ticks := uint32(min(max(time.Since(start)/(500*time.Nanosecond), 1), 0xFFFF))
	c.reply = dmaTestRounds<<16 | ticks
	return StatusOK
}

// sliceArgLocked checks a slice number from a command.
func (n *NIC) sliceArgLocked(v uint32, what string) (*slice, bool) {
	if v >= uint32(len(n.slices)) {
		n.guestErrorLocked(what+" for absent slice", "slice", v)
		return nil, false
	}
	return n.slices[v], true
}
