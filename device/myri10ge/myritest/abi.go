package myritest

import "fmt"

// The firmware ABI as the driver uses it (myri10ge_mcp.h, ABI 1.4),
// transcribed from the header on purpose rather than imported from
// device/myri10ge/abi: the oracle keeps its own copy so that a wrong number
// in the model's table fails a test instead of being shared by both sides.
// Section numbers (§) refer to shared/reference/myri10ge-device-interface.md.

// Fixed BAR0 offsets the driver hard-codes (§2.1).
const (
	OffHeaderPtr   = 0x00003C // BE32 offset of the firmware header
	OffFWStaging   = 0x100000 // MYRI10GE_FW_OFFSET: firmware file staging area
	OffSendGo      = 0x380000 // + 64*slice: multi-TX-queue "go" doorbell
	OffSendStop    = 0x3C0000 // + 64*slice: multi-TX-queue "stop" doorbell
	OffCmd         = 0xF80000 // MXGEFW_ETH_CMD: command mailbox, 64 bytes
	OffBootHandoff = 0xFC0000 // MXGEFW_BOOT_HANDOFF, 64 bytes
	OffDummyRDMA   = 0xFC01C0 // MXGEFW_BOOT_DUMMY_RDMA, 64 bytes

	// BAR0Size is the BAR0 length of a real board (the driver's board_span).
	BAR0Size = 16 << 20
)

// Cmd is a firmware command number (§4.3).
type Cmd uint32

// The commands the Linux driver can issue.
const (
	CmdReset                  Cmd = 1
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
	CmdLeaveAllMulticast      Cmd = 30
	CmdSetStatsDMAV2          Cmd = 31
	CmdUnalignedTest          Cmd = 32
	CmdGetMaxRSSQueues        Cmd = 35
	CmdEnableRSSQueues        Cmd = 36
	CmdGetRSSTableOffset      Cmd = 39
	CmdSetRSSTableSize        Cmd = 40
	CmdSetRSSEnable           Cmd = 43
	CmdGetMaxTSO6HdrSize      Cmd = 44
	CmdSetTSOMode             Cmd = 45
	CmdSetRSSMCPSlotType      Cmd = 52
	CmdGetDCAOffset           Cmd = 56
)

func (c Cmd) String() string { return abiName(cmdNames[:], c, "CMD_%d") }

// cmdNames are myri10ge_mcp.h's names of every command of ABI 1.4
// (MXGEFW_CMD_*, some spelled MXGEFW_*), indexed by number: a raw command
// a test sends through Driver.Cmd is named like the driver's own.
var cmdNames = [...]string{
	"NONE", "RESET", "GET_MCP_VERSION", "SET_INTRQ_DMA", // 0
	"SET_BIG_BUFFER_SIZE", "SET_SMALL_BUFFER_SIZE", "GET_SEND_OFFSET", "GET_SMALL_RX_OFFSET", // 4
	"GET_BIG_RX_OFFSET", "GET_IRQ_ACK_OFFSET", "GET_IRQ_DEASSERT_OFFSET", "GET_SEND_RING_SIZE", // 8
	"GET_RX_RING_SIZE", "SET_INTRQ_SIZE", "ETHERNET_UP", "ETHERNET_DOWN", // 12
	"SET_MTU", "GET_INTR_COAL_DELAY_OFFSET", "SET_STATS_INTERVAL", "SET_STATS_DMA_OBSOLETE", // 16
	"ENABLE_PROMISC", "DISABLE_PROMISC", "SET_MAC_ADDRESS", "ENABLE_FLOW_CONTROL", // 20
	"DISABLE_FLOW_CONTROL", "DMA_TEST", "ENABLE_ALLMULTI", "DISABLE_ALLMULTI", // 24
	"JOIN_MULTICAST_GROUP", "LEAVE_MULTICAST_GROUP", "LEAVE_ALL_MULTICAST_GROUPS", "SET_STATS_DMA_V2", // 28
	"UNALIGNED_TEST", "UNALIGNED_STATUS", "ALWAYS_USE_N_BIG_BUFFERS", "GET_MAX_RSS_QUEUES", // 32
	"ENABLE_RSS_QUEUES", "GET_RSS_SHARED_INTERRUPT_MASK_OFFSET", "SET_RSS_SHARED_INTERRUPT_DMA", "GET_RSS_TABLE_OFFSET", // 36
	"SET_RSS_TABLE_SIZE", "GET_RSS_KEY_OFFSET", "RSS_KEY_UPDATED", "SET_RSS_ENABLE", // 40
	"GET_MAX_TSO6_HDR_SIZE", "SET_TSO_MODE", "MDIO_READ", "MDIO_WRITE", // 44
	"I2C_READ", "I2C_BYTE", "GET_VPUMP_OFFSET", "RESET_VPUMP", // 48
	"SET_RSS_MCP_SLOT_TYPE", "SET_THROTTLE_FACTOR", "VPUMP_UP", "GET_VPUMP_CLK", // 52
	"GET_DCA_OFFSET", "NETQ_GET_FILTERS_PER_QUEUE", "NETQ_ADD_FILTER", "NETQ_DEL_FILTER", // 56
	"NETQ_QUERY1", "NETQ_QUERY2", "NETQ_QUERY3", "NETQ_QUERY4", // 60
	"RELAX_RXBUFFER_ALIGNMENT", // 64
}

// Status is a command's result word (§4.2).
type Status uint32

const (
	StatusOK             Status = 0
	StatusUnknown        Status = 1
	StatusErrorRange     Status = 2
	StatusErrorMulticast Status = 9
	StatusErrorUnaligned Status = 10
	// StatusNoResponse is the value the driver presets in the response
	// buffer: "not answered yet".
	StatusNoResponse Status = 0xFFFFFFFF
)

func (s Status) String() string {
	if s == StatusNoResponse {
		return "NO_RESPONSE"
	}
	return abiName(statusNames[:], s, "Status(%d)")
}

// statusNames are myri10ge_mcp.h's names of every result word a firmware
// can answer (MXGEFW_CMD_OK, MXGEFW_CMD_ERROR_*), indexed by the word: a
// failure names what the device sent even where the driver does not tell
// the statuses apart (§4.2).
var statusNames = [...]string{
	"OK", "UNKNOWN", "ERROR_RANGE", "ERROR_BUSY", "ERROR_EMPTY", // 0
	"ERROR_CLOSED", "ERROR_HASH_ERROR", "ERROR_BAD_PORT", "ERROR_RESOURCES", // 5
	"ERROR_MULTICAST", "ERROR_UNALIGNED", "ERROR_NO_MDIO", "ERROR_I2C_FAILURE", // 9
	"ERROR_I2C_ABSENT", "ERROR_BAD_PCIE_LINK", // 13
}

// abiName is names[v], or v's number in format where the table ends.
func abiName[T ~uint32](names []string, v T, format string) string {
	if uint64(v) < uint64(len(names)) {
		return names[v]
	}
	return fmt.Sprintf(format, uint32(v))
}

// Mailbox block (mcp_cmd, §4.1) and response (mcp_cmd_response).
const (
	cmdBlockSize  = 64
	cmdOffRespHi  = 0x10
	cmdOffRespLo  = 0x14
	respSize      = 8
	respOffData   = 0
	respOffResult = 4

	confirmData = 0xFFFFFFFF // handoff and dummy RDMA "alive and well"
)

// ENABLE_RSS_QUEUES data1 bits and SET_RSS_ENABLE's default hash type.
const (
	rssIntrOnePerSlice = 1
	rssMultipleTx      = 2
	rssHashSrcDstPort  = 5 // MXGEFW_RSS_HASH_TYPE_SRC_DST_PORT: myri10ge_rss_hash's default
)

// Receive ring entry (mcp_kreq_ether_recv, §5.2).
const (
	recvDescSize   = 8
	recvGroup      = 8
	recvInvalidLow = 0xFFFFFFFF
)

// rx_done slot (mcp_slot, §5.1): BE16 checksum, BE16 length.
const (
	slotSize      = 4
	slotOffCsum   = 0
	slotOffLength = 2
)

// rxPad is MXGEFW_PAD: two bytes ahead of every received frame.
const rxPad = 2

// Interrupt/stats block (mcp_irq_data, §6.1).
const (
	irqDataSize         = 64
	irqOffDroppedPause  = 0x04
	irqOffSendDoneCount = 0x18
	irqOffLinkUp        = 0x1C
	irqOffRDMATags      = 0x38
	irqOffTxStopped     = 0x3C
	irqOffLinkDown      = 0x3D
	irqOffStatsUpdated  = 0x3E
	irqOffValid         = 0x3F

	rdmaTagsAvailable = 15
	irqClaimValue     = 3 // what the driver writes to both claim words
)

// Link states in the interrupt block's link_up word.
const (
	LinkDown    = 0
	LinkUp      = 1
	LinkMyrinet = 2
	LinkUnknown = 3
)

// Firmware header (mcp_gen_header, §3.2).
const (
	hdrSize           = 0xC0
	hdrOffLength      = 0x00
	hdrOffType        = 0x04
	hdrOffVersion     = 0x08
	hdrVersionLen     = 128
	hdrOffStringSpecs = 0x90
	hdrOffLEDPattern  = 0xB8
	mcpTypeETH        = 0x45544820 // "ETH "
	eepromSize        = 256        // MYRI10GE_EEPROM_STRINGS_SIZE
)

// Firmware file names the driver asks request_firmware for (§3.4).
const (
	FWAligned      = "myri10ge_eth_z8e.dat"
	FWUnaligned    = "myri10ge_ethp_z8e.dat"
	FWRSSAligned   = "myri10ge_rss_eth_z8e.dat"
	FWRSSUnaligned = "myri10ge_rss_ethp_z8e.dat"
	fwAdopted      = "adopted"
)

// Host constants of an x86-64 guest that shape what the driver does.
const (
	pageSize      = 4096 // PAGE_SIZE, MYRI10GE_ALLOC_SIZE
	cacheLine     = 64   // SMP_CACHE_BYTES: SKB_DATA_ALIGN
	maxSlices     = 32   // MYRI10GE_MAX_SLICES
	maxEtherMTU   = 9014 // MYRI10GE_MAX_ETHER_MTU
	ethHLen       = 14
	vlanHLen      = 4
	ethDataLen    = 1500
	vlanFrameLen  = 1518 // VLAN_ETH_FRAME_LEN
	minMTU        = 68
	napiWeight    = 64 // myri10ge_napi_weight
	fillThreshold = 256
	maxIRQLoops   = 1048576 // myri10ge_max_irq_loops
)
