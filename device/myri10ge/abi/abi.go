// Package abi is the Myri-10G firmware interface as the Linux myri10ge
// driver sees it (its myri10ge_mcp.h, ABI 1.4, in our own words): PCI
// identity, the BAR0 offsets the driver hard-codes, command numbers,
// status codes, descriptor flags and the layouts of the structures shared
// with the host. It imports nothing of the device model, so the model and
// the guest programs take their numbers from here. Section numbers (§)
// refer to shared/reference/myri10ge-device-interface.md.
package abi

import "fmt"

// PCI identity (§1.1).
const (
	VendorID = 0x14C1 // Myricom
	DeviceID = 0x0008 // Z8E
)

// BAR0 offsets the driver hard-codes (§2.1); the rest of the BAR0 map is
// the device's to choose and hand out by command (§2.2).
const (
	BAR0Size     = 16 << 20 // the driver's PIO targets reach 0xFC0200 (§1.2)
	OffHeaderPtr = 0x00003C // BE32 offset of the firmware header
	OffCmd       = 0xF80000 // command mailbox
	OffHandoff   = 0xFC0000 // firmware handoff block
	OffDummyRDMA = 0xFC01C0 // dummy RDMA block
	BlockSize    = 64       // mailbox, handoff and dummy RDMA blocks
)

// Cmd is a firmware command number (the mailbox's cmd word, §4.3). The
// numbers are the order of the driver's enum, which counts from NONE = 0.
type Cmd uint32

const (
	CmdNone Cmd = iota
	CmdReset
	CmdGetMCPVersion
	CmdSetIntrqDMA
	CmdSetBigBufferSize
	CmdSetSmallBufferSize
	CmdGetSendOffset
	CmdGetSmallRxOffset
	CmdGetBigRxOffset
	CmdGetIRQAckOffset
	CmdGetIRQDeassertOffset
	CmdGetSendRingSize
	CmdGetRxRingSize
	CmdSetIntrqSize
	CmdEthernetUp
	CmdEthernetDown
	CmdSetMTU
	CmdGetIntrCoalDelayOffset
	CmdSetStatsInterval
	CmdSetStatsDMAObsolete
	CmdEnablePromisc
	CmdDisablePromisc
	CmdSetMACAddress
	CmdEnableFlowControl
	CmdDisableFlowControl
	CmdDMATest
	CmdEnableAllMulti
	CmdDisableAllMulti
	CmdJoinMulticastGroup
	CmdLeaveMulticastGroup
	CmdLeaveAllMulticast
	CmdSetStatsDMAV2
	CmdUnalignedTest
	CmdUnalignedStatus
	CmdAlwaysUseNBigBuffers
	CmdGetMaxRSSQueues
	CmdEnableRSSQueues
	CmdGetRSSSharedIntrMask
	CmdSetRSSSharedIntrDMA
	CmdGetRSSTableOffset
	CmdSetRSSTableSize
	CmdGetRSSKeyOffset
	CmdRSSKeyUpdated
	CmdSetRSSEnable
	CmdGetMaxTSO6HdrSize
	CmdSetTSOMode
	CmdMDIORead
	CmdMDIOWrite
	CmdI2CRead
	CmdI2CByte
	CmdGetVpumpOffset
	CmdResetVpump
	CmdSetRSSMCPSlotType
	CmdSetThrottleFactor
	CmdVpumpUpdate
	CmdGetVpumpClk
	CmdGetDCAOffset
)

// cmdNames are the firmware's names of the commands (MXGEFW_CMD_*).
var cmdNames = [...]string{
	CmdNone:                   "NONE",
	CmdReset:                  "RESET",
	CmdGetMCPVersion:          "GET_MCP_VERSION",
	CmdSetIntrqDMA:            "SET_INTRQ_DMA",
	CmdSetBigBufferSize:       "SET_BIG_BUFFER_SIZE",
	CmdSetSmallBufferSize:     "SET_SMALL_BUFFER_SIZE",
	CmdGetSendOffset:          "GET_SEND_OFFSET",
	CmdGetSmallRxOffset:       "GET_SMALL_RX_OFFSET",
	CmdGetBigRxOffset:         "GET_BIG_RX_OFFSET",
	CmdGetIRQAckOffset:        "GET_IRQ_ACK_OFFSET",
	CmdGetIRQDeassertOffset:   "GET_IRQ_DEASSERT_OFFSET",
	CmdGetSendRingSize:        "GET_SEND_RING_SIZE",
	CmdGetRxRingSize:          "GET_RX_RING_SIZE",
	CmdSetIntrqSize:           "SET_INTRQ_SIZE",
	CmdEthernetUp:             "ETHERNET_UP",
	CmdEthernetDown:           "ETHERNET_DOWN",
	CmdSetMTU:                 "SET_MTU",
	CmdGetIntrCoalDelayOffset: "GET_INTR_COAL_DELAY_OFFSET",
	CmdSetStatsInterval:       "SET_STATS_INTERVAL",
	CmdSetStatsDMAObsolete:    "SET_STATS_DMA_OBSOLETE",
	CmdEnablePromisc:          "ENABLE_PROMISC",
	CmdDisablePromisc:         "DISABLE_PROMISC",
	CmdSetMACAddress:          "SET_MAC_ADDRESS",
	CmdEnableFlowControl:      "ENABLE_FLOW_CONTROL",
	CmdDisableFlowControl:     "DISABLE_FLOW_CONTROL",
	CmdDMATest:                "DMA_TEST",
	CmdEnableAllMulti:         "ENABLE_ALLMULTI",
	CmdDisableAllMulti:        "DISABLE_ALLMULTI",
	CmdJoinMulticastGroup:     "JOIN_MULTICAST_GROUP",
	CmdLeaveMulticastGroup:    "LEAVE_MULTICAST_GROUP",
	CmdLeaveAllMulticast:      "LEAVE_ALL_MULTICAST_GROUPS",
	CmdSetStatsDMAV2:          "SET_STATS_DMA_V2",
	CmdUnalignedTest:          "UNALIGNED_TEST",
	CmdUnalignedStatus:        "UNALIGNED_STATUS",
	CmdAlwaysUseNBigBuffers:   "ALWAYS_USE_N_BIG_BUFFERS",
	CmdGetMaxRSSQueues:        "GET_MAX_RSS_QUEUES",
	CmdEnableRSSQueues:        "ENABLE_RSS_QUEUES",
	CmdGetRSSSharedIntrMask:   "GET_RSS_SHARED_INTERRUPT_MASK_OFFSET",
	CmdSetRSSSharedIntrDMA:    "SET_RSS_SHARED_INTERRUPT_DMA",
	CmdGetRSSTableOffset:      "GET_RSS_TABLE_OFFSET",
	CmdSetRSSTableSize:        "SET_RSS_TABLE_SIZE",
	CmdGetRSSKeyOffset:        "GET_RSS_KEY_OFFSET",
	CmdRSSKeyUpdated:          "RSS_KEY_UPDATED",
	CmdSetRSSEnable:           "SET_RSS_ENABLE",
	CmdGetMaxTSO6HdrSize:      "GET_MAX_TSO6_HDR_SIZE",
	CmdSetTSOMode:             "SET_TSO_MODE",
	CmdMDIORead:               "MDIO_READ",
	CmdMDIOWrite:              "MDIO_WRITE",
	CmdI2CRead:                "I2C_READ",
	CmdI2CByte:                "I2C_BYTE",
	CmdGetVpumpOffset:         "GET_VPUMP_OFFSET",
	CmdResetVpump:             "RESET_VPUMP",
	CmdSetRSSMCPSlotType:      "SET_RSS_MCP_SLOT_TYPE",
	CmdSetThrottleFactor:      "SET_THROTTLE_FACTOR",
	CmdVpumpUpdate:            "VPUMP_UP",
	CmdGetVpumpClk:            "GET_VPUMP_CLK",
	CmdGetDCAOffset:           "GET_DCA_OFFSET",
}

func (c Cmd) String() string { return name(cmdNames[:], c, "CMD_%d") }

// name is v's entry in table, or v printed with format past the table's end.
func name[T ~uint32](table []string, v T, format string) string {
	if uint64(v) < uint64(len(table)) {
		return table[v]
	}
	return fmt.Sprintf(format, uint32(v))
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

// statusNames are the firmware's names of the Status words (MXGEFW_CMD_*),
// one for each up to the last.
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

func (s Status) String() string { return name(statusNames[:], s, "Status(%d)") }

// Mailbox block layout (mcp_cmd, §4.1); all words big-endian.
const (
	CmdOffCmd     = 0x00
	CmdOffData0   = 0x04
	CmdOffData1   = 0x08
	CmdOffData2   = 0x0C
	CmdOffRespHi  = 0x10
	CmdOffRespLo  = 0x14
	RespSize      = 8 // mcp_cmd_response: data BE32, result BE32
	RespOffData   = 0
	RespOffResult = 4
)

// Send descriptor (mcp_kreq_ether_send, §5.4): 16 bytes.
const (
	SendDescSize        = 16
	SendOffAddrHigh     = 0x0
	SendOffAddrLow      = 0x4
	SendOffPseudoHdrOff = 0x8 // non-TSO: checksum position; TSO: MSS
	SendOffLength       = 0xA
	SendOffPad          = 0xC
	SendOffRDMACount    = 0xD
	SendOffCksumOffset  = 0xE
	SendOffFlags        = 0xF

	// SendDoorbellOff is where the driver's final 4-byte store lands:
	// bytes 12..15 of the first descriptor, carrying its real flags.
	SendDoorbellOff = 0xC
)

// Send descriptor flags. Several names share a value: the meaning depends
// on whether the packet is TSO (its first descriptor lacks FlagNoTSO).
const (
	FlagSmall    = 0x01 // non-TSO: packet <= 1520 bytes
	FlagTSOHdr   = 0x01 // TSO: header descriptor
	FlagFirst    = 0x02 // first descriptor of a packet (TSO: of each segment)
	FlagAlignOdd = 0x04
	FlagCksum    = 0x08 // non-TSO: checksum offload requested
	FlagTSOLast  = 0x08 // TSO: descriptor of the final segment
	FlagNoTSO    = 0x10 // non-TSO packet
	FlagTSOChop  = 0x10 // TSO: a segment boundary falls inside
	FlagTSOPld   = 0x20 // TSO: payload descriptor
)

const (
	MaxSendDesc    = 12   // descriptors in a non-TSO packet (MXGEFW_MAX_SEND_DESC)
	MaxSendDescTSO = 64   // descriptors in a TSO chain
	SendSmallSize  = 1520 // MXGEFW_SEND_SMALL_SIZE
)

// Receive ring entry (mcp_kreq_ether_recv, §5.2): BE32 addr_high, addr_low.
const (
	RecvDescSize    = 8
	RecvOffAddrHigh = 0
	RecvOffAddrLow  = 4
	RecvGroup       = 8 // entries are posted in aligned groups of 8
	// RecvInvalidLow is what the driver stores in a group's first
	// addr_low while it copies the group; the real value is the doorbell.
	RecvInvalidLow = 0xFFFFFFFF
)

// rx_done slot (mcp_slot, §5.1): BE16 checksum, BE16 length.
const SlotSize = 4

// MXGEFW_PAD: two bytes ahead of every received frame, so the IP header
// lands 4-byte aligned.
const RxPad = 2

// Interrupt/stats block (mcp_irq_data, §6.1): 64 bytes, BE32 fields.
const (
	IRQDataSize               = 64
	IRQOffDroppedPause        = 0x04
	IRQOffDroppedUnicast      = 0x08
	IRQOffDroppedBadCRC       = 0x0C
	IRQOffDroppedBadPhy       = 0x10
	IRQOffDroppedMulticast    = 0x14
	IRQOffSendDoneCount       = 0x18
	IRQOffLinkUp              = 0x1C
	IRQOffDroppedLinkOverflow = 0x20
	IRQOffDroppedLinkError    = 0x24
	IRQOffDroppedRunt         = 0x28
	IRQOffDroppedOverrun      = 0x2C
	IRQOffDroppedNoSmall      = 0x30
	IRQOffDroppedNoBig        = 0x34
	IRQOffRDMATags            = 0x38
	IRQOffFlagsWord           = 0x3C // tx_stopped, link_down, stats_updated, valid

	// ObsoleteStatsOff is where the 40-byte block of SET_STATS_DMA_OBSOLETE
	// starts inside mcp_irq_data.
	ObsoleteStatsOff = 0x18

	RDMATagsAvailable = 15 // the driver complains about any other value
)

// link_up values in the interrupt block.
const (
	LinkDown = 0
	LinkUp   = 1
)

// Firmware header (mcp_gen_header, §3.2).
const (
	HdrSize            = 0xC0
	HdrOffLength       = 0x00
	HdrOffType         = 0x04
	HdrOffVersion      = 0x08
	HdrVersionLen      = 128
	HdrOffSRAMSize     = 0x8C
	HdrOffStringSpecs  = 0x90
	HdrOffStringLen    = 0x94
	HdrOffLEDPattern   = 0xB8
	HdrOffLEDDefault   = 0xBC
	MCPTypeETH         = 0x45544820 // "ETH "
	EEPROMStringsSize  = 256
	FWHandoffConfirmed = 0xFFFFFFFF
)
