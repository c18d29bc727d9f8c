package myrimx

// The device ABI, mirrored from guestdrv/include/myrimx_abi.h (the guest's
// copy is the contract; abi_test.go checks every value here against it).
// Little-endian throughout; commands and events are 64 bytes.

// PCI identity and BARs (README "Identity and layout").
const (
	VendorID = 0x14c1
	DeviceID = 0x00a0 // myri10ge binds 0x0008 and 0x0009 only
	Class    = 0x028000
	Revision = 0x01

	RegsBAR      = 0
	RegsSize     = 0x20000
	PageSize     = 0x1000
	MSIXBAR      = 2
	MSIXSize     = 0x1000
	MSIXTable    = 0x000
	MSIXPBA      = 0x800
	MaxEndpoints = 16
	VectorDevice = 0
)

// Global page registers.
const (
	RegMagic      = 0x00
	Magic         = 0x4d45584d // "MXEM" little-endian
	RegABIVersion = 0x04
	ABIVersion    = 0x00010000
	RegCaps       = 0x08
	RegNICID      = 0x10
	RegDevStatus  = 0x18
	RegDevCtrl    = 0x20
	RegErrInfo    = 0x28
	RegMaxPages   = 0x30
	RegAuditCount = 0x38

	CapsEndpointsShift  = 0
	CapsRegionsShift    = 8
	CapsCmdLog2Shift    = 24
	CapsEventLog2Shift  = 32
	CapsAuditShift      = 40
	CapsPageShiftsShift = 48

	RegionsPerEP = 1024
	MaxPages     = 262144
	Chunk        = 65536

	AuditOff     = 0
	AuditObserve = 1
	AuditEnforce = 2

	DevRunning    = 0x1
	DevFatal      = 0x2
	DevBMEOffSeen = 0x4

	DevCtrlReset = 0x1
)

// Endpoint page registers, relative to BAR0 + PageSize*(1+e).
const (
	EPCtrl        = 0x00
	EPCmdqBase    = 0x08
	EPCmdqOrder   = 0x10
	EPCmdqTail    = 0x18
	EPCmdqHead    = 0x20
	EPEqBase      = 0x28
	EPEqOrder     = 0x30
	EPEqHead      = 0x38
	EPStatusGPA   = 0x40
	EPFenceDone   = 0x48
	EPInvSync     = 0x50
	EPInvSyncDone = 0x58
	EPPTRoot      = 0x60
	EPStatus      = 0x68

	EPCtrlOpen  = 1
	EPCtrlClose = 2
	EPCtrlReset = 3

	EPStateClosed = 0
	EPStateOpen   = 1
	EPStateError  = 2

	EPCauseNone       = 0
	EPCauseEventQFull = 1
	EPCauseBadRing    = 2
	EPCauseDMAFault   = 3
	EPCauseBadConfig  = 4

	RingOrderMin = 1
	RingOrderMax = 12
)

// Status block offsets.
const (
	SBFenceDone   = 0x00
	SBCmdqHead    = 0x08
	SBEqTail      = 0x0c
	SBBadCmds     = 0x10
	SBEqOverflows = 0x14
	SBSize        = 64
)

// Command layout.
const (
	CmdSize       = 64
	CmdOpcode     = 0x00
	CmdFlags      = 0x01
	CmdReason     = 0x02
	CmdSeq        = 0x04
	CmdCookie     = 0x08
	CmdRegionID   = 0x10
	CmdGeneration = 0x14

	CmdRegAccess    = 0x18
	CmdRegPageShift = 0x1c
	CmdRegFirstOff  = 0x20
	CmdRegNrPages   = 0x24
	CmdRegLength    = 0x28
	CmdRegUserVA    = 0x30
	CmdRegPageList  = 0x38

	CmdOffset       = 0x18
	CmdLength       = 0x20
	CmdSendDestEP   = 0x24
	CmdSendDestNIC  = 0x28
	CmdSendMatch    = 0x30
	CmdRecvMatch    = 0x28
	CmdRecvMask     = 0x30
	CmdCancelSeq    = 0x10
	CmdCancelCookie = 0x18
	CmdFenceSeq     = 0x10
)

// Opcode is a command's first byte.
type Opcode uint8

const (
	OpReg    Opcode = 1
	OpDereg  Opcode = 2
	OpSend   Opcode = 3
	OpRecv   Opcode = 4
	OpCancel Opcode = 5
	OpFence  Opcode = 6
	OpNop    Opcode = 7
)

// Command flags.
const (
	FlagEvent      = 0x01
	CancelByCookie = 0x02
)

// Access bits of a registration.
const (
	AccessSendSrc = 0x1
	AccessRecvDst = 0x2
)

// Reason is why a registration was invalidated: 0..7 are Linux's
// enum mmu_notifier_event, the rest the device's own.
type Reason uint8

const (
	ReasonUnmap          Reason = 0
	ReasonClear          Reason = 1
	ReasonProtectionVMA  Reason = 2
	ReasonProtectionPage Reason = 3
	ReasonSoftDirty      Reason = 4
	ReasonRelease        Reason = 5
	ReasonMigrate        Reason = 6
	ReasonExclusive      Reason = 7
	ReasonUser           Reason = 8
	ReasonDMAUnmap       Reason = 9
	ReasonReset          Reason = 10
	ReasonInvSync        Reason = 11
)

// Event layout.
const (
	EventSize    = 64
	EvType       = 0x00
	EvStatus     = 0x01
	EvPhase      = 0x02
	EvSeq        = 0x04
	EvCookie     = 0x08
	EvMatch      = 0x10
	EvSrcNIC     = 0x18
	EvSrcEP      = 0x20
	EvMsgLength  = 0x24
	EvXferLength = 0x28
	EvRegionID   = 0x2c
	EvGeneration = 0x30
	EvReason     = 0x34
)

// EventType is an event's first byte.
type EventType uint8

const (
	EvtRegDone       EventType = 1
	EvtDeregDone     EventType = 2
	EvtSendDone      EventType = 3
	EvtRecvDone      EventType = 4
	EvtFenceDone     EventType = 5
	EvtCancelDone    EventType = 6
	EvtRegionRevoked EventType = 7
	EvtEPError       EventType = 8
	EvtNopDone       EventType = 9
)

// Status is a completion's status byte (§6.6).
type Status uint8

const (
	StatusSuccess           Status = 0
	StatusTruncated         Status = 1
	StatusCancelled         Status = 2
	StatusBadRDMAWin        Status = 3
	StatusRegionInvalidated Status = 4
	StatusAccess            Status = 5
	StatusBadEndpoint       Status = 6
	StatusEndpointClosed    Status = 7
	StatusNoResources       Status = 8
	StatusDMAFault          Status = 9
	StatusBusy              Status = 10
	StatusBadAddress        Status = 11
	StatusBadCommand        Status = 12
	StatusNotFound          Status = 13
)
