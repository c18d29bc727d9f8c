package myrimx

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// goABI is every constant of the C header with its Go counterpart. The
// test fails on a header define missing here, a name here missing from the
// header, and any value that differs: the two cannot drift.
var goABI = map[string]uint64{
	"PCI_VENDOR":    VendorID,
	"PCI_DEVICE":    DeviceID,
	"PCI_CLASS":     Class,
	"PCI_REVISION":  Revision,
	"REGS_BAR":      RegsBAR,
	"REGS_SIZE":     RegsSize,
	"PAGE_SIZE":     PageSize,
	"MSIX_BAR":      MSIXBAR,
	"MSIX_SIZE":     MSIXSize,
	"MSIX_TABLE":    MSIXTable,
	"MSIX_PBA":      MSIXPBA,
	"MAX_ENDPOINTS": MaxEndpoints,
	"VECTOR_DEVICE": VectorDevice,

	"REG_MAGIC":              RegMagic,
	"MAGIC":                  Magic,
	"REG_ABI_VERSION":        RegABIVersion,
	"ABI_VERSION":            ABIVersion,
	"REG_CAPS":               RegCaps,
	"REG_NIC_ID":             RegNICID,
	"REG_DEV_STATUS":         RegDevStatus,
	"REG_DEV_CTRL":           RegDevCtrl,
	"REG_ERR_INFO":           RegErrInfo,
	"REG_MAX_PAGES":          RegMaxPages,
	"REG_AUDIT_COUNT":        RegAuditCount,
	"CAPS_ENDPOINTS_SHIFT":   CapsEndpointsShift,
	"CAPS_REGIONS_SHIFT":     CapsRegionsShift,
	"CAPS_CMD_LOG2_SHIFT":    CapsCmdLog2Shift,
	"CAPS_EVENT_LOG2_SHIFT":  CapsEventLog2Shift,
	"CAPS_AUDIT_SHIFT":       CapsAuditShift,
	"CAPS_PAGE_SHIFTS_SHIFT": CapsPageShiftsShift,
	"REGIONS_PER_EP":         RegionsPerEP,
	"MAX_PAGES":              MaxPages,
	"CHUNK":                  Chunk,
	"AUDIT_OFF":              AuditOff,
	"AUDIT_OBSERVE":          AuditObserve,
	"AUDIT_ENFORCE":          AuditEnforce,
	"DEV_RUNNING":            DevRunning,
	"DEV_FATAL":              DevFatal,
	"DEV_BME_OFF_SEEN":       DevBMEOffSeen,
	"DEV_CTRL_RESET":         DevCtrlReset,

	"EP_CTRL":              EPCtrl,
	"EP_CMDQ_BASE":         EPCmdqBase,
	"EP_CMDQ_ORDER":        EPCmdqOrder,
	"EP_CMDQ_TAIL":         EPCmdqTail,
	"EP_CMDQ_HEAD":         EPCmdqHead,
	"EP_EQ_BASE":           EPEqBase,
	"EP_EQ_ORDER":          EPEqOrder,
	"EP_EQ_HEAD":           EPEqHead,
	"EP_STATUS_GPA":        EPStatusGPA,
	"EP_FENCE_DONE":        EPFenceDone,
	"EP_INV_SYNC":          EPInvSync,
	"EP_INV_SYNC_DONE":     EPInvSyncDone,
	"EP_PT_ROOT":           EPPTRoot,
	"EP_STATUS":            EPStatus,
	"EP_CTRL_OPEN":         EPCtrlOpen,
	"EP_CTRL_CLOSE":        EPCtrlClose,
	"EP_CTRL_RESET":        EPCtrlReset,
	"EP_STATE_CLOSED":      EPStateClosed,
	"EP_STATE_OPEN":        EPStateOpen,
	"EP_STATE_ERROR":       EPStateError,
	"EP_CAUSE_NONE":        EPCauseNone,
	"EP_CAUSE_EVENTQ_FULL": EPCauseEventQFull,
	"EP_CAUSE_BAD_RING":    EPCauseBadRing,
	"EP_CAUSE_DMA_FAULT":   EPCauseDMAFault,
	"EP_CAUSE_BAD_CONFIG":  EPCauseBadConfig,
	"RING_ORDER_MIN":       RingOrderMin,
	"RING_ORDER_MAX":       RingOrderMax,

	"SB_FENCE_DONE":   SBFenceDone,
	"SB_CMDQ_HEAD":    SBCmdqHead,
	"SB_EQ_TAIL":      SBEqTail,
	"SB_BAD_CMDS":     SBBadCmds,
	"SB_EQ_OVERFLOWS": SBEqOverflows,
	"SB_SIZE":         SBSize,

	"CMD_SIZE":           CmdSize,
	"CMD_OPCODE":         CmdOpcode,
	"CMD_FLAGS":          CmdFlags,
	"CMD_REASON":         CmdReason,
	"CMD_SEQ":            CmdSeq,
	"CMD_COOKIE":         CmdCookie,
	"CMD_REGION_ID":      CmdRegionID,
	"CMD_GENERATION":     CmdGeneration,
	"CMD_REG_ACCESS":     CmdRegAccess,
	"CMD_REG_PAGE_SHIFT": CmdRegPageShift,
	"CMD_REG_FIRST_OFF":  CmdRegFirstOff,
	"CMD_REG_NR_PAGES":   CmdRegNrPages,
	"CMD_REG_LENGTH":     CmdRegLength,
	"CMD_REG_USER_VA":    CmdRegUserVA,
	"CMD_REG_PAGE_LIST":  CmdRegPageList,
	"CMD_OFFSET":         CmdOffset,
	"CMD_LENGTH":         CmdLength,
	"CMD_SEND_DEST_EP":   CmdSendDestEP,
	"CMD_SEND_DEST_NIC":  CmdSendDestNIC,
	"CMD_SEND_MATCH":     CmdSendMatch,
	"CMD_RECV_MATCH":     CmdRecvMatch,
	"CMD_RECV_MASK":      CmdRecvMask,
	"CMD_CANCEL_SEQ":     CmdCancelSeq,
	"CMD_CANCEL_COOKIE":  CmdCancelCookie,
	"CMD_FENCE_SEQ":      CmdFenceSeq,

	"OP_REG":           uint64(OpReg),
	"OP_DEREG":         uint64(OpDereg),
	"OP_SEND":          uint64(OpSend),
	"OP_RECV":          uint64(OpRecv),
	"OP_CANCEL":        uint64(OpCancel),
	"OP_FENCE":         uint64(OpFence),
	"OP_NOP":           uint64(OpNop),
	"FLAG_EVENT":       FlagEvent,
	"CANCEL_BY_COOKIE": CancelByCookie,
	"ACCESS_SEND_SRC":  AccessSendSrc,
	"ACCESS_RECV_DST":  AccessRecvDst,

	"REASON_UNMAP":           uint64(ReasonUnmap),
	"REASON_CLEAR":           uint64(ReasonClear),
	"REASON_PROTECTION_VMA":  uint64(ReasonProtectionVMA),
	"REASON_PROTECTION_PAGE": uint64(ReasonProtectionPage),
	"REASON_SOFT_DIRTY":      uint64(ReasonSoftDirty),
	"REASON_RELEASE":         uint64(ReasonRelease),
	"REASON_MIGRATE":         uint64(ReasonMigrate),
	"REASON_EXCLUSIVE":       uint64(ReasonExclusive),
	"REASON_USER":            uint64(ReasonUser),
	"REASON_DMA_UNMAP":       uint64(ReasonDMAUnmap),
	"REASON_RESET":           uint64(ReasonReset),
	"REASON_INV_SYNC":        uint64(ReasonInvSync),

	"EVENT_SIZE":         EventSize,
	"EV_TYPE":            EvType,
	"EV_STATUS":          EvStatus,
	"EV_PHASE":           EvPhase,
	"EV_SEQ":             EvSeq,
	"EV_COOKIE":          EvCookie,
	"EV_MATCH":           EvMatch,
	"EV_SRC_NIC":         EvSrcNIC,
	"EV_SRC_EP":          EvSrcEP,
	"EV_MSG_LENGTH":      EvMsgLength,
	"EV_XFER_LENGTH":     EvXferLength,
	"EV_REGION_ID":       EvRegionID,
	"EV_GENERATION":      EvGeneration,
	"EV_REASON":          EvReason,
	"EVT_REG_DONE":       uint64(EvtRegDone),
	"EVT_DEREG_DONE":     uint64(EvtDeregDone),
	"EVT_SEND_DONE":      uint64(EvtSendDone),
	"EVT_RECV_DONE":      uint64(EvtRecvDone),
	"EVT_FENCE_DONE":     uint64(EvtFenceDone),
	"EVT_CANCEL_DONE":    uint64(EvtCancelDone),
	"EVT_REGION_REVOKED": uint64(EvtRegionRevoked),
	"EVT_EP_ERROR":       uint64(EvtEPError),
	"EVT_NOP_DONE":       uint64(EvtNopDone),

	"STATUS_SUCCESS":            uint64(StatusSuccess),
	"STATUS_TRUNCATED":          uint64(StatusTruncated),
	"STATUS_CANCELLED":          uint64(StatusCancelled),
	"STATUS_BAD_RDMAWIN":        uint64(StatusBadRDMAWin),
	"STATUS_REGION_INVALIDATED": uint64(StatusRegionInvalidated),
	"STATUS_ACCESS":             uint64(StatusAccess),
	"STATUS_BAD_ENDPOINT":       uint64(StatusBadEndpoint),
	"STATUS_ENDPOINT_CLOSED":    uint64(StatusEndpointClosed),
	"STATUS_NO_RESOURCES":       uint64(StatusNoResources),
	"STATUS_DMA_FAULT":          uint64(StatusDMAFault),
	"STATUS_BUSY":               uint64(StatusBusy),
	"STATUS_BAD_ADDRESS":        uint64(StatusBadAddress),
	"STATUS_BAD_COMMAND":        uint64(StatusBadCommand),
	"STATUS_NOT_FOUND":          uint64(StatusNotFound),
}

var defineRE = regexp.MustCompile(`^#define\s+MYRIMX_([A-Z0-9_]+)\s+(0x[0-9a-fA-F]+|[0-9]+)\b`)

// parseHeader returns the header's MYRIMX_ integer defines.
func parseHeader(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open ABI header: %v", err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		m := defineRE.FindStringSubmatch(line)
		if m == nil {
			if regexp.MustCompile(`^#define\s+MYRIMX_[A-Z0-9_]+\s+\S`).MatchString(line) {
				t.Errorf("%s:%d: define with a value the test cannot parse: %q", path, n, line)
			}
			continue
		}
		v, err := strconv.ParseUint(m[2], 0, 64)
		if err != nil {
			t.Errorf("%s:%d: %v", path, n, err)
			continue
		}
		if _, dup := out[m[1]]; dup {
			t.Errorf("%s:%d: MYRIMX_%s defined twice", path, n, m[1])
		}
		out[m[1]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestABIHeaderMatchesGo(t *testing.T) {
	hdr := parseHeader(t, "../../guestdrv/include/myrimx_abi.h")
	if len(hdr) < 100 {
		t.Fatalf("parsed only %d defines from the header", len(hdr))
	}
	for name, hv := range hdr {
		gv, ok := goABI[name]
		if !ok {
			t.Errorf("MYRIMX_%s = %#x is in the header but has no Go constant in the test table", name, hv)
			continue
		}
		if gv != hv {
			t.Errorf("MYRIMX_%s: header %#x, Go %#x", name, hv, gv)
		}
	}
	for name := range goABI {
		if _, ok := hdr[name]; !ok {
			t.Errorf("Go constant for MYRIMX_%s has no define in the header", name)
		}
	}
}

// TestABILayout checks the layouts' own invariants: fields inside their
// 64-byte entry, and MaxEndpoints pages fit BAR0.
func TestABILayout(t *testing.T) {
	if PageSize*(1+MaxEndpoints) > RegsSize {
		t.Errorf("BAR0 %#x cannot hold the global page and %d endpoint pages", RegsSize, MaxEndpoints)
	}
	if EvReason >= EventSize || CmdRegPageList+8 > CmdSize || CmdSendMatch+8 > CmdSize || CmdRecvMask+8 > CmdSize {
		t.Error("a field lies outside its 64-byte entry")
	}
	if EPEqOrder-EPEqBase != EPCmdqOrder-EPCmdqBase {
		t.Error("the rings' ORDER registers are not at the same offset from their BASE")
	}
	if EPStatus+4 > PageSize {
		t.Error("endpoint registers exceed their page")
	}
}
