// Package abi is testdev's interface as a guest sees it: identity, BAR
// layout, register offsets and bits, DMA op and cause codes, and the
// window doorbell protocol. It imports nothing of the device model, so
// guest programs take their numbers from here.
package abi

import "fmt"

// Identity (config space). 0x1234 is the vendor ID QEMU itself uses for
// unregistered test devices (edu is 1234:11e8).
const (
	VendorID = 0x1234
	DeviceID = 0x7e57
	Revision = 1
	Class    = 0x00ff00 // unclassified device
)

// BAR layout.
//
//	BAR0  4 KiB, 32-bit memory, trapped: the registers below.
//	BAR2  4 KiB, 32-bit memory, trapped: MSI-X table (4 vectors) at 0,
//	      PBA at 0x800. The rest of BAR2 reads 0 and ignores writes.
//	BAR4  1 MiB, 64-bit prefetchable memory: the write-combined window.
//	      Everything but the last page is mmappable; see Win* below.
const (
	RegsBAR   = 0
	RegsSize  = 0x1000
	MSIXBAR   = 2
	MSIXSize  = 0x1000
	MSIXTable = 0x000
	MSIXPBA   = 0x800
	WindowBAR = 4

	// NumVectors is the number of MSI-X vectors. MSI has 1 vector; INTx
	// uses pin A. Under MSI only vector 0 is delivered (the others are
	// recorded as pending by the interrupt table); under INTx every vector
	// asserts the one line.
	NumVectors = 4
)

// BAR0 registers.
//
// Every register is 32 bits wide and little-endian. Accesses of any size
// (1, 2, 4 or 8 bytes, or longer) at any offset inside BAR0 are accepted and
// split into the registers they cover, lowest offset first: an 8-byte write
// at DMASrcLo sets DMASrcLo and DMASrcHi in that order. A write that covers
// only some bytes of a register changes only those bytes (for RW1C registers
// only those bytes' ones clear; a write touching any byte of a doorbell
// rings it once, with the untouched bytes taken as 0). Offsets not listed
// read as 0 and ignore writes. No register has a side effect on read.
// Every register resets to 0 on DEVICE_RESET unless marked constant.
const (
	// RegID (RO, constant) reads IDValue: device ID << 16 | vendor ID, the
	// same as config dword 0.
	RegID = 0x000
	// RegVersion (RO, constant) is the register map version, major << 16 |
	// minor. Minor changes only add registers or bits.
	RegVersion = 0x004
	// RegScratch (RW) stores any value.
	RegScratch = 0x008
	// RegMaxDMALen (RO, constant) reads MaxDMALen.
	RegMaxDMALen = 0x00c
	// RegWinSize (RO, constant) reads WindowSize, the size of BAR4.
	RegWinSize = 0x010
	// RegIRQMode (RO) is the interrupt mechanism the client has enabled
	// now: IRQModeNone, IRQModeINTx, IRQModeMSI or IRQModeMSIX.
	RegIRQMode = 0x014

	// DMA engine. The guest programs DMASrc*, DMADst*, DMALen, DMAOp and
	// DMAPattern, then writes DMADoorbell. The engine snapshots those
	// registers at the doorbell, so they may be rewritten while it is busy.
	// It runs asynchronously: DMAStatus shows StatusBusy until the op ends,
	// then StatusDone (plus StatusError and a cause if it failed), and a
	// completion interrupt follows if IRQCtrlDMAEnable is set.

	// RegDMASrcLo, RegDMASrcHi (RW): source, a guest IOVA, or a window
	// offset for OpWindowToGuest (then DMASrcHi must be 0).
	RegDMASrcLo = 0x100
	RegDMASrcHi = 0x104
	// RegDMADstLo, RegDMADstHi (RW): destination, a guest IOVA, or a window
	// offset for OpGuestToWindow (then DMADstHi must be 0).
	RegDMADstLo = 0x108
	RegDMADstHi = 0x10c
	// RegDMALen (RW): length in bytes, 1..MaxDMALen. 0, a length above
	// MaxDMALen, or one that makes a guest range wrap past 2^64 fails the
	// op with CauseBadLength before any byte moves.
	RegDMALen = 0x110
	// RegDMAOp (RW): the operation, one of the Op* codes.
	RegDMAOp = 0x114
	// RegDMAPattern (RW): OpFill's 32-bit pattern. Destination byte i gets
	// byte i%4 of the pattern in little-endian order (pattern 0x44332211
	// fills 11 22 33 44 11 22 ...), counted from the start of the range.
	RegDMAPattern = 0x118
	// RegDMADoorbell (WO, reads 0): any write starts the programmed op.
	// If the engine is busy the write is rejected: StatusOverrun is set,
	// CntDMAErrors counts it, and the running op goes on undisturbed.
	// Otherwise StatusBusy is set and every other DMAStatus bit, DMAResult,
	// DMAFail* and DMADoneBytes clear, before the write completes.
	RegDMADoorbell = 0x11c
	// RegDMAStatus (RO): Status* bits and, in bits 15:8, the Cause of the
	// last failed op (CauseNone otherwise).
	RegDMAStatus = 0x120
	// RegDMAResult (RO): after an op that succeeded, the CRC-32C
	// (Castagnoli, the iSCSI/ext4 one: init and final xor all-ones, as Go's
	// crc32.Checksum with crc32.Castagnoli) of the bytes the op read (COPY,
	// CHECKSUM, the window ops) or wrote (FILL). 0 after a failed op.
	RegDMAResult = 0x124
	// RegDMAFailLo, RegDMAFailHi (RO): after a DMA fault (CauseBusMaster,
	// CauseUnmapped, CauseReadOnly, CauseNotRegistered, CauseDMAFailed),
	// the guest IOVA of the first byte the engine could not access. The
	// engine moves data in pieces that never cross a 4 KiB IOVA boundary
	// and client maps are page-granular, so this is exact. StatusFaultWrite
	// tells whether that access was a write into guest memory. 0 otherwise.
	RegDMAFailLo = 0x128
	RegDMAFailHi = 0x12c
	// RegDMADoneBytes (RO): bytes completed by the last op. LEN after a
	// success; after a fault, the bytes fully moved before it (all of them
	// are in place in the destination).
	RegDMADoneBytes = 0x130

	// Interrupts.

	// RegIRQCtrl (RW): IRQCtrl* bits and vector fields. Reserved bits read
	// 0.
	RegIRQCtrl = 0x200
	// RegIRQStatus (RW1C): IRQStatus* bits, set on each event whether or
	// not its interrupt is enabled; write ones to clear. The INTx line is
	// asserted while IRQStatus has a bit set whose source is enabled
	// (IRQStatusSoft always counts), and lowered when the guest clears the
	// last such bit. MSI and MSI-X are edge-triggered: one message per event.
	RegIRQStatus = 0x204
	// RegIRQRaise (WO, reads 0): writing N in 0..NumVectors-1 sets
	// IRQStatusSoft and raises vector N at once, regardless of IRQCtrl.
	// Values of NumVectors and above are ignored (and logged).
	RegIRQRaise = 0x208

	// Counters (RO, 32 bits, wrap around, reset to 0).

	// RegCntDMAOps counts DMA ops that completed without error.
	RegCntDMAOps = 0x300
	// RegCntDMAErrors counts DMA ops that failed plus doorbells rejected
	// because the engine was busy.
	RegCntDMAErrors = 0x304
	// RegCntIRQs counts interrupts the device raised (completions and
	// IRQRaise writes), whatever the client did with them.
	RegCntIRQs = 0x308
	// RegCntWinDoorbells counts window doorbells handled.
	RegCntWinDoorbells = 0x30c

	// Window doorbell results, mirrored from the window (see WinDB*).

	// RegWinSeq (RO): the WinDBDoorbell value of the last doorbell handled.
	RegWinSeq = 0x400
	// RegWinResult (RO): its CRC-32C result (0 if it failed).
	RegWinResult = 0x404
	// RegWinStatus (RO): its cause, CauseNone or CauseWindowRange.
	RegWinStatus = 0x408
)

// Constant register values.
const (
	IDValue      = DeviceID<<16 | VendorID // 0x7e571234
	VersionValue = 1<<16 | 0               // 1.0
	// MaxDMALen is the longest DMA op, 1 MiB.
	MaxDMALen = 1 << 20
)

// Op is a DMA engine operation (RegDMAOp).
type Op uint32

const (
	// OpCopy copies guest memory: LEN bytes from IOVA SRC to IOVA DST.
	// Overlapping ranges give unspecified destination contents (never an
	// access outside the two ranges).
	OpCopy Op = 1
	// OpFill fills LEN bytes at IOVA DST with DMAPattern.
	OpFill Op = 2
	// OpChecksum reads LEN bytes at IOVA SRC into DMAResult's CRC-32C.
	// Nothing is written.
	OpChecksum Op = 3
	// OpWindowToGuest copies LEN bytes from window offset SRC (DMASrcLo)
	// to IOVA DST.
	OpWindowToGuest Op = 4
	// OpGuestToWindow copies LEN bytes from IOVA SRC to window offset DST
	// (DMADstLo).
	OpGuestToWindow Op = 5
)

// Space is the address space an op's SRC or DST register points into.
type Space uint8

const (
	// SpaceNone: the op does not use the register. FILL's bytes come from
	// DMAPattern; CHECKSUM writes nothing.
	SpaceNone Space = iota
	// SpaceGuest: a guest IOVA. The range must not wrap past 2^64
	// (CauseBadLength).
	SpaceGuest
	// SpaceWindow: an offset into the window; the range must lie inside it
	// and the register's HI half must be 0 (CauseWindowRange).
	SpaceWindow
)

// opInfo is what the ABI says of an op: its name in logs and errors, and
// where its SRC and DST registers point.
type opInfo struct {
	name     string
	src, dst Space
}

var ops = [...]opInfo{
	OpCopy:          {"copy", SpaceGuest, SpaceGuest},
	OpFill:          {"fill", SpaceNone, SpaceGuest},
	OpChecksum:      {"checksum", SpaceGuest, SpaceNone},
	OpWindowToGuest: {"window-to-guest", SpaceWindow, SpaceGuest},
	OpGuestToWindow: {"guest-to-window", SpaceGuest, SpaceWindow},
}

// Valid reports whether o is one of the Op codes; any other value fails
// with CauseBadOp.
func (o Op) Valid() bool { return o < Op(len(ops)) && ops[o].name != "" }

// Spaces returns where o's SRC and DST registers point (SpaceNone for both
// if o is not valid).
func (o Op) Spaces() (src, dst Space) {
	if !o.Valid() {
		return SpaceNone, SpaceNone
	}
	return ops[o].src, ops[o].dst
}

func (o Op) String() string {
	if o.Valid() {
		return ops[o].name
	}
	return fmt.Sprintf("Op(%d)", uint32(o))
}

// RegDMAStatus bits, from bit 0 up.
const (
	// StatusBusy: an op is running.
	StatusBusy = 1 << iota
	// StatusDone: the last op ended (with or without error).
	StatusDone
	// StatusError: the last op failed; bits 15:8 hold its Cause.
	StatusError
	// StatusFaultWrite: the failing access was a device write into guest
	// memory (DMAFail* is in the destination), not a read.
	StatusFaultWrite
	// StatusOverrun: a doorbell was rejected because the engine was busy.
	// Cleared by the next accepted doorbell.
	StatusOverrun

	// StatusCauseShift and StatusCauseMask locate the Cause in DMAStatus.
	StatusCauseShift = 8
	StatusCauseMask  = 0xff << StatusCauseShift
)

// Cause says why a DMA op or a window doorbell failed (DMAStatus bits
// 15:8, WinStatus, WinDBStatus). Its String method (cause_string.go)
// gives the names in the line comments, Cause(n) for other values.
type Cause uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=Cause -linecomment

const (
	CauseNone Cause = 0 // none
	// CauseBadOp: DMAOp is not one of the Op codes. Nothing moved.
	CauseBadOp Cause = 1 // bad-op
	// CauseBadLength: LEN is 0, above MaxDMALen, or a guest range wraps
	// past 2^64. Nothing moved.
	CauseBadLength Cause = 2 // bad-length
	// CauseWindowRange: a window offset+length lies outside the window (or
	// the HI half of a window offset is not 0). Nothing moved.
	CauseWindowRange Cause = 3 // window-range
	// CauseBusMaster: COMMAND.MASTER is clear in config space.
	CauseBusMaster Cause = 4 // bus-master-off
	// CauseUnmapped: an IOVA is not in any client DMA map.
	CauseUnmapped Cause = 5 // unmapped
	// CauseReadOnly: a device write into a map the client made read-only.
	CauseReadOnly Cause = 6 // read-only
	// CauseNotRegistered: the DMA audit refused the access.
	CauseNotRegistered Cause = 7 // not-registered
	// CauseDMAFailed: any other DMA failure (client gone, message DMA
	// error, no client attached).
	CauseDMAFailed Cause = 8 // dma-failed
	// CauseNotReadable: a device read from a map the client made
	// write-only.
	CauseNotReadable Cause = 9 // not-readable
)

// RegIRQCtrl fields.
const (
	// IRQCtrlDMAEnable: raise the DMA vector when a DMA op ends (success
	// or error).
	IRQCtrlDMAEnable = 1 << 0
	// IRQCtrlWinEnable: raise the window vector when a window doorbell has
	// been handled.
	IRQCtrlWinEnable = 1 << 1
	// IRQCtrlDMAVectorShift: bits 9:8, the MSI-X vector for DMA completions.
	IRQCtrlDMAVectorShift = 8
	// IRQCtrlWinVectorShift: bits 17:16, the MSI-X vector for window
	// doorbell completions.
	IRQCtrlWinVectorShift = 16
	// IRQCtrlVectorMask is the width of each vector field (after shifting).
	IRQCtrlVectorMask = NumVectors - 1

	// IRQCtrlWritable is the mask of IRQCtrl bits that exist.
	IRQCtrlWritable = IRQCtrlDMAEnable | IRQCtrlWinEnable |
		IRQCtrlVectorMask<<IRQCtrlDMAVectorShift |
		IRQCtrlVectorMask<<IRQCtrlWinVectorShift
)

// RegIRQStatus bits.
const (
	IRQStatusDMA  = 1 << 0 // a DMA op ended
	IRQStatusWin  = 1 << 1 // a window doorbell was handled
	IRQStatusSoft = 1 << 2 // IRQRaise was written

	IRQStatusAll = IRQStatusDMA | IRQStatusWin | IRQStatusSoft
)

// RegIRQMode values (the msi.Mode numbering).
const (
	IRQModeNone = 0
	IRQModeINTx = 1
	IRQModeMSI  = 2
	IRQModeMSIX = 3
)

// BAR4, the write-combined window: WindowSize bytes of plain memory shared
// with the client. Guest stores to the mmapped part reach the memory
// directly and notify nobody; the device polls the doorbell word. Accesses
// that arrive as messages (the trapped last page, or everything while QEMU
// has switched its mmap off, e.g. after an INTx in the user-space path) are
// served from the same memory. The window's contents survive DEVICE_RESET
// (it is memory, like a card's SRAM); they start as zeros.
//
// Window doorbell protocol (all words 32-bit little-endian, 4-aligned):
//
//  1. The guest writes WinDBOffset and WinDBLength (the range to checksum,
//     anywhere in the window).
//  2. It orders those stores (wmb), then writes WinDBDoorbell with a value
//     different from its current one (e.g. a sequence number).
//  3. The device notices the change by polling (within about a millisecond
//     when idle, much sooner when busy), reads WinDBOffset/WinDBLength,
//     computes the CRC-32C of that window range, and writes WinDBResult,
//     then WinDBStatus, then WinDBAck = the doorbell value it saw, in that
//     order. It mirrors the same three in RegWinResult, RegWinStatus and
//     RegWinSeq, counts RegCntWinDoorbells, sets IRQStatusWin and, if
//     IRQCtrlWinEnable, raises the window vector.
//  4. The guest polls WinDBAck until it equals its doorbell value, then
//     reads WinDBResult and WinDBStatus.
//
// Polling samples the word: two changes in quick succession may be seen as
// one (the later value). Ring again only after the ack. A range outside the
// window gives WinDBStatus = CauseWindowRange and WinDBResult 0. Doorbells
// are noticed only while a client is attached.
const (
	// WindowSize is the size of BAR4, 1 MiB.
	WindowSize = 1 << 20
	// WinDataSize: [0, WinDataSize) is free for the guest (and the DMA
	// window ops).
	WinDataSize = 0xfe000
	// WinDB is the doorbell block, a page inside the mmappable area.
	WinDB = 0xfe000
	// WinDBOffset (guest writes): window offset of the range to checksum.
	WinDBOffset = WinDB + 0x00
	// WinDBLength (guest writes): length of the range in bytes; 0 is valid
	// (result 0).
	WinDBLength = WinDB + 0x04
	// WinDBDoorbell (guest writes): the polled word; any change rings.
	WinDBDoorbell = WinDB + 0x08
	// WinDBResult (device writes): CRC-32C of the range.
	WinDBResult = WinDB + 0x0c
	// WinDBStatus (device writes): CauseNone or CauseWindowRange.
	WinDBStatus = WinDB + 0x10
	// WinDBAck (device writes, last): the doorbell value just handled.
	WinDBAck = WinDB + 0x14
	// WinTrapped is the last page of the window, [WinTrapped, WindowSize):
	// not mmappable, so every guest access to it is a message served from
	// the window memory. It is plain memory; it exists to test that path.
	WinTrapped     = WindowSize - 0x1000
	WinTrappedSize = 0x1000
)
