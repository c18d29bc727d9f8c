package myri10ge

import "fmt"

// This file holds the firmware ABI the driver speaks (its myri10ge_mcp.h,
// ABI 1.4), in our own words: command numbers, status codes, descriptor
// flags and the layouts of the structures shared with the host. Section
// numbers (§) refer to shared/reference/myri10ge-device-interface.md.

// Cmd is a firmware command number (the mailbox's cmd word, §4.3).
type Cmd uint32

const (
	CmdNone                   Cmd = 0
	CmdReset                  Cmd = 1
	CmdGetMCPVersion          Cmd = 2
	CmdSetIntrqDMA            Cmd = 3
	CmdSetBigBufferSize       Cmd = 4
	CmdSetSmallBufferSize     Cmd = 5
	CmdGetSendOffset          Cmd = 6
	CmdGetSmallRxOffset       Cmd = 7
	CmdGetBigRxOffset         Cmd = 8
	CmdGetIRQAckOffset        Cmd = 9
	CmdGetIRQDeassertOffset   Cmd = 10
	CmdGetSendRingSize        Cmd = 11
	CmdGetRxRingSize          Cmd = 12
	CmdSetIntrqSize           Cmd = 13
	CmdEthernetUp             Cmd = 14
	CmdEthernetDown           Cmd = 15
	CmdSetMTU                 Cmd = 16
	CmdGetIntrCoalDelayOffset Cmd = 17
	CmdSetStatsInterval       Cmd = 18
	CmdSetStatsDMAObsolete    Cmd = 19
	CmdEnablePromisc          Cmd = 20
	CmdDisablePromisc         Cmd = 21
	CmdSetMACAddress          Cmd = 22
	CmdEnableFlowControl      Cmd = 23
	CmdDisableFlowControl     Cmd = 24
	CmdDMATest                Cmd = 25
	CmdEnableAllMulti         Cmd = 26
	CmdDisableAllMulti        Cmd = 27
	CmdJoinMulticastGroup     Cmd = 28
	CmdLeaveMulticastGroup    Cmd = 29
	CmdLeaveAllMulticast      Cmd = 30
	CmdSetStatsDMAV2          Cmd = 31
	CmdUnalignedTest          Cmd = 32
	CmdUnalignedStatus        Cmd = 33
	CmdAlwaysUseNBigBuffers   Cmd = 34
	CmdGetMaxRSSQueues        Cmd = 35
	CmdEnableRSSQueues        Cmd = 36
	CmdGetRSSSharedIntrMask   Cmd = 37
	CmdSetRSSSharedIntrDMA    Cmd = 38
	CmdGetRSSTableOffset      Cmd = 39
	CmdSetRSSTableSize        Cmd = 40
	CmdGetRSSKeyOffset        Cmd = 41
	CmdRSSKeyUpdated          Cmd = 42
	CmdSetRSSEnable           Cmd = 43
	CmdGetMaxTSO6HdrSize      Cmd = 44
	CmdSetTSOMode             Cmd = 45
	CmdMDIORead               Cmd = 46
	CmdMDIOWrite              Cmd = 47
	CmdI2CRead                Cmd = 48
	CmdI2CByte                Cmd = 49
	CmdGetVpumpOffset         Cmd = 50
	CmdResetVpump             Cmd = 51
	CmdSetRSSMCPSlotType      Cmd = 52
	CmdSetThrottleFactor      Cmd = 53
	CmdVpumpUpdate            Cmd = 54
	CmdGetVpumpClk            Cmd = 55
	CmdGetDCAOffset           Cmd = 56
)

var cmdNames = map[Cmd]string{
	CmdReset: "RESET", CmdGetMCPVersion: "GET_MCP_VERSION", CmdSetIntrqDMA: "SET_INTRQ_DMA",
	CmdSetBigBufferSize: "SET_BIG_BUFFER_SIZE", CmdSetSmallBufferSize: "SET_SMALL_BUFFER_SIZE",
	CmdGetSendOffset: "GET_SEND_OFFSET", CmdGetSmallRxOffset: "GET_SMALL_RX_OFFSET",
	CmdGetBigRxOffset: "GET_BIG_RX_OFFSET", CmdGetIRQAckOffset: "GET_IRQ_ACK_OFFSET",
	CmdGetIRQDeassertOffset: "GET_IRQ_DEASSERT_OFFSET", CmdGetSendRingSize: "GET_SEND_RING_SIZE",
	CmdGetRxRingSize: "GET_RX_RING_SIZE", CmdSetIntrqSize: "SET_INTRQ_SIZE",
	CmdEthernetUp: "ETHERNET_UP", CmdEthernetDown: "ETHERNET_DOWN", CmdSetMTU: "SET_MTU",
	CmdGetIntrCoalDelayOffset: "GET_INTR_COAL_DELAY_OFFSET", CmdSetStatsInterval: "SET_STATS_INTERVAL",
	CmdSetStatsDMAObsolete: "SET_STATS_DMA_OBSOLETE", CmdEnablePromisc: "ENABLE_PROMISC",
	CmdDisablePromisc: "DISABLE_PROMISC", CmdSetMACAddress: "SET_MAC_ADDRESS",
	CmdEnableFlowControl: "ENABLE_FLOW_CONTROL", CmdDisableFlowControl: "DISABLE_FLOW_CONTROL",
	CmdDMATest: "DMA_TEST", CmdEnableAllMulti: "ENABLE_ALLMULTI", CmdDisableAllMulti: "DISABLE_ALLMULTI",
	CmdJoinMulticastGroup: "JOIN_MULTICAST_GROUP", CmdLeaveMulticastGroup: "LEAVE_MULTICAST_GROUP",
	CmdLeaveAllMulticast: "LEAVE_ALL_MULTICAST_GROUPS", CmdSetStatsDMAV2: "SET_STATS_DMA_V2",
	CmdUnalignedTest: "UNALIGNED_TEST", CmdUnalignedStatus: "UNALIGNED_STATUS",
	CmdAlwaysUseNBigBuffers: "ALWAYS_USE_N_BIG_BUFFERS", CmdGetMaxRSSQueues: "GET_MAX_RSS_QUEUES",
	CmdEnableRSSQueues: "ENABLE_RSS_QUEUES", CmdGetRSSSharedIntrMask: "GET_RSS_SHARED_INTERRUPT_MASK",
	CmdSetRSSSharedIntrDMA: "SET_RSS_SHARED_INTERRUPT_DMA", CmdGetRSSTableOffset: "GET_RSS_TABLE_OFFSET",
	CmdSetRSSTableSize: "SET_RSS_TABLE_SIZE", CmdGetRSSKeyOffset: "GET_RSS_KEY_OFFSET",
	CmdRSSKeyUpdated: "RSS_KEY_UPDATED", CmdSetRSSEnable: "SET_RSS_ENABLE",
	CmdGetMaxTSO6HdrSize: "GET_MAX_TSO6_HDR_SIZE", CmdSetTSOMode: "SET_TSO_MODE",
	CmdMDIORead: "MDIO_READ", CmdMDIOWrite: "MDIO_WRITE", CmdI2CRead: "I2C_READ",
	CmdI2CByte: "I2C_BYTE", CmdGetVpumpOffset: "GET_VPUMP_OFFSET", CmdResetVpump: "RESET_VPUMP",
	CmdSetRSSMCPSlotType: "SET_RSS_MCP_SLOT_TYPE", CmdSetThrottleFactor: "SET_THROTTLE_FACTOR",
	CmdVpumpUpdate: "VPUMP_UPDATE", CmdGetVpumpClk: "GET_VPUMP_CLK", CmdGetDCAOffset: "GET_DCA_OFFSET",
}

func (c Cmd) String() string {
	if n, ok := cmdNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CMD_%d", uint32(c))
}

// Status is a command's result word (§4.2).
type Status uint32

const (
	StatusOK             Status = 0
	StatusUnknown        Status = 1
	StatusErrorRange     Status = 2
	StatusErrorBusy      Status = 3
	StatusErrorEmpty     Status = 4
	StatusErrorClosed    Status = 5
	StatusErrorHash      Status = 6
	StatusErrorBadPort   Status = 7
	StatusErrorResources Status = 8
	StatusErrorMulticast Status = 9
	StatusErrorUnaligned Status = 10
	StatusNoResponse     Status = 0xFFFFFFFF // the driver's "not answered yet"
)

// statusNames are the firmware's names of the Status words (MXGEFW_CMD_*).
var statusNames = [...]string{
	StatusOK:             "OK",
	StatusUnknown:        "UNKNOWN",
	StatusErrorRange:     "ERROR_RANGE",
	StatusErrorBusy:      "ERROR_BUSY",
	StatusErrorEmpty:     "ERROR_EMPTY",
	StatusErrorClosed:    "ERROR_CLOSED",
	StatusErrorHash:      "ERROR_HASH_ERROR",
	StatusErrorBadPort:   "ERROR_BAD_PORT",
	StatusErrorResources: "ERROR_RESOURCES",
	StatusErrorMulticast: "ERROR_MULTICAST",
	StatusErrorUnaligned: "ERROR_UNALIGNED",
}

func (s Status) String() string {
	if s < Status(len(statusNames)) && statusNames[s] != "" {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint32(s))
}

// Mailbox block layout (mcp_cmd, §4.1); all words big-endian.
const (
	cmdOffCmd     = 0x00
	cmdOffData0   = 0x04
	cmdOffData1   = 0x08
	cmdOffData2   = 0x0C
	cmdOffRespHi  = 0x10
	cmdOffRespLo  = 0x14
	respSize      = 8 // mcp_cmd_response: data BE32, result BE32
	respOffData   = 0
	respOffResult = 4
)

// Send descriptor (mcp_kreq_ether_send, §5.4): 16 bytes.
const (
	sendDescSize        = 16
	sendOffAddrHigh     = 0x0
	sendOffAddrLow      = 0x4
	sendOffPseudoHdrOff = 0x8 // non-TSO: checksum position; TSO: MSS
	sendOffLength       = 0xA
	sendOffPad          = 0xC
	sendOffRDMACount    = 0xD
	sendOffCksumOffset  = 0xE
	sendOffFlags        = 0xF

	// sendDoorbellOff is where the driver's final 4-byte store lands:
	// bytes 12..15 of the first descriptor, carrying its real flags.
	sendDoorbellOff = 0xC
)

// Send descriptor flags. Several names share a value: the meaning depends
// on whether the packet is TSO (its first descriptor lacks flagNoTSO).
const (
	flagSmall    = 0x01 // non-TSO: packet <= 1520 bytes
	flagTSOHdr   = 0x01 // TSO: header descriptor
	flagFirst    = 0x02 // first descriptor of a packet (TSO: of each segment)
	flagAlignOdd = 0x04
	flagCksum    = 0x08 // non-TSO: checksum offload requested
	flagTSOLast  = 0x08 // TSO: descriptor of the final segment
	flagNoTSO    = 0x10 // non-TSO packet
	flagTSOChop  = 0x10 // TSO: a segment boundary falls inside
	flagTSOPld   = 0x20 // TSO: payload descriptor
)

const (
	maxSendDesc    = 12   // descriptors in a non-TSO packet (MXGEFW_MAX_SEND_DESC)
	maxSendDescTSO = 64   // descriptors in a TSO chain
	sendSmallSize  = 1520 // MXGEFW_SEND_SMALL_SIZE
	maxTSOBytes    = 65536 + 1024
)

// Receive ring entry (mcp_kreq_ether_recv, §5.2): BE32 addr_high, addr_low.
const (
	recvDescSize    = 8
	recvOffAddrHigh = 0
	recvOffAddrLow  = 4
	recvGroup       = 8 // entries are posted in aligned groups of 8
	// recvInvalidLow is what the driver stores in a group's first
	// addr_low while it copies the group; the real value is the doorbell.
	recvInvalidLow = 0xFFFFFFFF
)

// rx_done slot (mcp_slot, §5.1): BE16 checksum, BE16 length.
const slotSize = 4

// MXGEFW_PAD: two bytes ahead of every received frame, so the IP header
// lands 4-byte aligned.
const rxPad = 2

// Interrupt/stats block (mcp_irq_data, §6.1): 64 bytes, BE32 fields.
const (
	irqDataSize               = 64
	irqOffDroppedPause        = 0x04
	irqOffDroppedUnicast      = 0x08
	irqOffDroppedBadCRC       = 0x0C
	irqOffDroppedBadPhy       = 0x10
	irqOffDroppedMulticast    = 0x14
	irqOffSendDoneCount       = 0x18
	irqOffLinkUp              = 0x1C
	irqOffDroppedLinkOverflow = 0x20
	irqOffDroppedLinkError    = 0x24
	irqOffDroppedRunt         = 0x28
	irqOffDroppedOverrun      = 0x2C
	irqOffDroppedNoSmall      = 0x30
	irqOffDroppedNoBig        = 0x34
	irqOffRDMATags            = 0x38
	irqOffFlagsWord           = 0x3C // tx_stopped, link_down, stats_updated, valid

	// obsoleteStatsOff is where the 40-byte block of SET_STATS_DMA_OBSOLETE
	// starts inside mcp_irq_data.
	obsoleteStatsOff = 0x18

	rdmaTagsAvailable = 15 // the driver complains about any other value
)

// link_up values in the interrupt block.
const (
	linkDown = 0
	linkUp   = 1
)

// Firmware header (mcp_gen_header, §3.2).
const (
	hdrSize            = 0xC0
	hdrOffLength       = 0x00
	hdrOffType         = 0x04
	hdrOffVersion      = 0x08
	hdrVersionLen      = 128
	hdrOffSRAMSize     = 0x8C
	hdrOffStringSpecs  = 0x90
	hdrOffStringLen    = 0x94
	hdrOffLEDPattern   = 0xB8
	hdrOffLEDDefault   = 0xBC
	mcpTypeETH         = 0x45544820 // "ETH "
	eepromStringsSize  = 256
	fwVersion          = "1.4.57 -- myriemu"
	fwHandoffConfirmed = 0xFFFFFFFF
)
