package vfiouser

import (
	"encoding/binary"
	"fmt"
)

// Wire constants of the vfio-user protocol (QEMU docs/interop/vfio-user.rst),
// as QEMU 11.1.3's vfio-user-pci client speaks it. See
// shared/reference/vfio-user-notes.md, section 1.

// Command is a vfio-user command number (header offset 2).
type Command uint16

const (
	CmdVersion             Command = 1
	CmdDMAMap              Command = 2
	CmdDMAUnmap            Command = 3
	CmdDeviceGetInfo       Command = 4
	CmdDeviceGetRegionInfo Command = 5
	CmdGetRegionIOFDs      Command = 6
	CmdDeviceGetIRQInfo    Command = 7
	CmdDeviceSetIRQs       Command = 8
	CmdRegionRead          Command = 9
	CmdRegionWrite         Command = 10
	CmdDMARead             Command = 11
	CmdDMAWrite            Command = 12
	CmdDeviceReset         Command = 13
	CmdDirtyPages          Command = 14
	CmdRegionWriteMulti    Command = 15
	CmdDeviceFeature       Command = 16
	CmdMigDataRead         Command = 17
	CmdMigDataWrite        Command = 18
)

var commandNames = [...]string{
	CmdVersion:             "VERSION",
	CmdDMAMap:              "DMA_MAP",
	CmdDMAUnmap:            "DMA_UNMAP",
	CmdDeviceGetInfo:       "DEVICE_GET_INFO",
	CmdDeviceGetRegionInfo: "DEVICE_GET_REGION_INFO",
	CmdGetRegionIOFDs:      "DEVICE_GET_REGION_IO_FDS",
	CmdDeviceGetIRQInfo:    "DEVICE_GET_IRQ_INFO",
	CmdDeviceSetIRQs:       "DEVICE_SET_IRQS",
	CmdRegionRead:          "REGION_READ",
	CmdRegionWrite:         "REGION_WRITE",
	CmdDMARead:             "DMA_READ",
	CmdDMAWrite:            "DMA_WRITE",
	CmdDeviceReset:         "DEVICE_RESET",
	CmdDirtyPages:          "DIRTY_PAGES",
	CmdRegionWriteMulti:    "REGION_WRITE_MULTI",
	CmdDeviceFeature:       "DEVICE_FEATURE",
	CmdMigDataRead:         "MIG_DATA_READ",
	CmdMigDataWrite:        "MIG_DATA_WRITE",
}

func (c Command) String() string {
	if int(c) < len(commandNames) && commandNames[c] != "" {
		return commandNames[c]
	}
	return fmt.Sprintf("Command(%d)", uint16(c))
}

// Header flags (header offset 8). Bits 0-3 are the message type.
const (
	FlagTypeMask    uint32 = 0x0f
	FlagTypeCommand uint32 = 0x00
	FlagTypeReply   uint32 = 0x01
	FlagNoReply     uint32 = 0x10
	FlagError       uint32 = 0x20
)

// HeaderSize is the size of every message header.
const HeaderSize = 16

// Header is a decoded vfio-user message header (notes 1.1).
type Header struct {
	ID      uint16
	Command Command
	Size    uint32 // whole message, header included
	Flags   uint32
	Error   uint32 // errno, valid with FlagError
}

// DecodeHeader decodes the first HeaderSize bytes of b. ok is false if b
// is shorter than a header; the header's fields are not judged.
func DecodeHeader(b []byte) (h Header, ok bool) {
	if len(b) < HeaderSize {
		return Header{}, false
	}
	return Header{
		ID:      binary.LittleEndian.Uint16(b[0:]),
		Command: Command(binary.LittleEndian.Uint16(b[2:])),
		Size:    binary.LittleEndian.Uint32(b[4:]),
		Flags:   binary.LittleEndian.Uint32(b[8:]),
		Error:   binary.LittleEndian.Uint32(b[12:]),
	}, true
}

// Put encodes h into the first HeaderSize bytes of b, which must be long enough.
func (h Header) Put(b []byte) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint16(b[0:], h.ID)
	binary.LittleEndian.PutUint16(b[2:], uint16(h.Command))
	binary.LittleEndian.PutUint32(b[4:], h.Size)
	binary.LittleEndian.PutUint32(b[8:], h.Flags)
	binary.LittleEndian.PutUint32(b[12:], h.Error)
}

// Type is the message type bits of the flags.
func (h Header) Type() uint32 { return h.Flags & FlagTypeMask }

// IsReply reports whether the message is a reply.
func (h Header) IsReply() bool { return h.Type() == FlagTypeReply }

// NoReply reports whether the sender asked for no reply.
func (h Header) NoReply() bool { return h.Flags&FlagNoReply != 0 }

// IsError reports whether the message is an error reply.
func (h Header) IsError() bool { return h.Flags&FlagError != 0 }

func (h Header) String() string {
	return fmt.Sprintf("id=%d cmd=%v size=%d flags=%#x error=%d", h.ID, h.Command, h.Size, h.Flags, h.Error)
}

// Payload layouts. Every view below is a []byte holding a message payload
// (the bytes after the header); Valid must be called before any accessor,
// which then cannot read out of range.

var le = binary.LittleEndian

// DEVICE_GET_INFO flags and sizes (notes 3.4).
const (
	DeviceInfoReset = 1 << 0
	DeviceInfoPCI   = 1 << 1

	deviceInfoSize = 16 // argsz, flags, num_regions, num_irqs
)

// deviceInfo is a DEVICE_GET_INFO payload.
type deviceInfo []byte

func (m deviceInfo) Valid() bool   { return len(m) == deviceInfoSize && m.argsz() >= deviceInfoSize }
func (m deviceInfo) argsz() uint32 { return le.Uint32(m[0:]) }
func putDeviceInfo(b []byte, flags, numRegions, numIRQs uint32) {
	le.PutUint32(b[0:], deviceInfoSize)
	le.PutUint32(b[4:], flags)
	le.PutUint32(b[8:], numRegions)
	le.PutUint32(b[12:], numIRQs)
}

// GET_REGION_INFO (notes 3.4, 4.3).
const (
	regionInfoSize = 32 // argsz, flags, index, cap_offset, size u64, offset u64

	RegionInfoFlagCaps = 1 << 3 // VFIO_REGION_INFO_FLAG_CAPS

	CapSparseMmap       = 1  // VFIO_REGION_INFO_CAP_SPARSE_MMAP
	capSparseMmapHeader = 16 // id u16, version u16, next u32, nr_areas u32, reserved u32
	capSparseMmapArea   = 16 // offset u64, size u64
)

// regionInfoReq is a GET_REGION_INFO request payload.
type regionInfoReq []byte

func (m regionInfoReq) Valid() bool   { return len(m) == regionInfoSize && m.argsz() >= regionInfoSize }
func (m regionInfoReq) argsz() uint32 { return le.Uint32(m[0:]) }
func (m regionInfoReq) index() uint32 { return le.Uint32(m[8:]) }

// GET_IRQ_INFO (notes 3.4).
const irqInfoSize = 16 // argsz, flags, index, count

// irqInfoReq is a GET_IRQ_INFO request payload.
type irqInfoReq []byte

func (m irqInfoReq) Valid() bool   { return len(m) == irqInfoSize && m.argsz() >= irqInfoSize }
func (m irqInfoReq) argsz() uint32 { return le.Uint32(m[0:]) }
func (m irqInfoReq) index() uint32 { return le.Uint32(m[8:]) }

// SET_IRQS flags (notes 5.2), typed as the 32-bit flags field they are
// written to.
const (
	IRQDataNone      uint32 = 1 << 0
	IRQDataBool      uint32 = 1 << 1
	IRQDataEventfd   uint32 = 1 << 2
	IRQActionMask    uint32 = 1 << 3
	IRQActionUnmask  uint32 = 1 << 4
	IRQActionTrigger uint32 = 1 << 5

	irqDataMask   = IRQDataNone | IRQDataBool | IRQDataEventfd
	irqActionMask = IRQActionMask | IRQActionUnmask | IRQActionTrigger

	irqSetSize = 20 // argsz, flags, index, start, count; then data
)

// irqSet is a SET_IRQS request payload. QEMU sends argsz 20 (fds are not
// counted); DATA_BOOL carries count bytes of data after the struct.
type irqSet []byte

func (m irqSet) Valid() bool {
	if len(m) < irqSetSize {
		return false
	}
	argsz, flags := m.argsz(), m.flags()
	if argsz < irqSetSize || int64(argsz) > int64(len(m)) {
		return false
	}
	if onesCount(flags&irqDataMask) != 1 || onesCount(flags&irqActionMask) != 1 {
		return false
	}
	if flags&^(irqDataMask|irqActionMask) != 0 {
		return false
	}
	if uint64(m.start())+uint64(m.count()) > 1<<32-1 {
		return false
	}
	data := len(m) - irqSetSize
	if flags&IRQDataBool != 0 {
		return uint64(data) == uint64(m.count())
	}
	return data == 0
}
func (m irqSet) argsz() uint32 { return le.Uint32(m[0:]) }
func (m irqSet) flags() uint32 { return le.Uint32(m[4:]) }
func (m irqSet) index() uint32 { return le.Uint32(m[8:]) }
func (m irqSet) start() uint32 { return le.Uint32(m[12:]) }
func (m irqSet) count() uint32 { return le.Uint32(m[16:]) }
func (m irqSet) data() []byte  { return m[irqSetSize:] }

func onesCount(v uint32) int {
	n := 0
	for ; v != 0; v &= v - 1 {
		n++
	}
	return n
}

// REGION_READ / REGION_WRITE (notes 3.4).
const regionAccessSize = 16 // offset u64, region u32, count u32; then data

// regionAccess is a REGION_READ or REGION_WRITE payload; withData says
// whether count bytes of data follow (write) or not (read).
type regionAccess []byte

func (m regionAccess) Valid(withData bool) bool {
	if len(m) < regionAccessSize {
		return false
	}
	want := uint64(regionAccessSize)
	if withData {
		want += uint64(m.count())
	}
	return uint64(len(m)) == want && m.count() > 0
}
func (m regionAccess) offset() uint64 { return le.Uint64(m[0:]) }
func (m regionAccess) region() uint32 { return le.Uint32(m[8:]) }
func (m regionAccess) count() uint32  { return le.Uint32(m[12:]) }
func (m regionAccess) data() []byte   { return m[regionAccessSize:] }

// REGION_WRITE_MULTI (notes 2.4): wr_cnt u64, then wr_cnt entries of
// {offset u64, region u32, count u32, data [8]byte}.
const (
	multiHeaderSize = 8
	multiEntrySize  = 24
	multiDataSize   = 8
	multiMax        = 200 // QEMU's VFIO_USER_MULTI_MAX
)

// writeMulti is a REGION_WRITE_MULTI payload.
type writeMulti []byte

func (m writeMulti) Valid() bool {
	if len(m) < multiHeaderSize {
		return false
	}
	n := le.Uint64(m[0:])
	if n == 0 || n > multiMax || uint64(len(m)) != multiHeaderSize+n*multiEntrySize {
		return false
	}
	for i := range int(n) {
		if c := m.entry(i).count(); c == 0 || c > multiDataSize {
			return false
		}
	}
	return true
}
func (m writeMulti) n() int { return int(le.Uint64(m[0:])) }
func (m writeMulti) entry(i int) regionAccess {
	off := multiHeaderSize + i*multiEntrySize
	return regionAccess(m[off : off+multiEntrySize])
}

// multiData is the data of a WRITE_MULTI entry (e is an entry view).
func multiData(e regionAccess) []byte { return e[regionAccessSize : regionAccessSize+e.count()] }

// DMA_MAP / DMA_UNMAP (notes 3.4, 3.5).
const (
	DMAMapRead  = 1 << 0
	DMAMapWrite = 1 << 1

	DMAUnmapGetDirtyBitmap = 1 << 0
	DMAUnmapAll            = 1 << 1

	dmaMapSize   = 32 // argsz, flags, offset u64, iova u64, size u64
	dmaUnmapSize = 24 // argsz, flags, iova u64, size u64
)

// dmaMap is a DMA_MAP payload. Unknown flag bits are accepted (notes 0).
type dmaMap []byte

func (m dmaMap) Valid() bool {
	return len(m) == dmaMapSize && m.argsz() == dmaMapSize && m.size() != 0 &&
		m.iova()+m.size() >= m.iova() // no wrap; iova+size == 2^64 wraps to 0 and is refused
}
func (m dmaMap) argsz() uint32  { return le.Uint32(m[0:]) }
func (m dmaMap) flags() uint32  { return le.Uint32(m[4:]) }
func (m dmaMap) offset() uint64 { return le.Uint64(m[8:]) }
func (m dmaMap) iova() uint64   { return le.Uint64(m[16:]) }
func (m dmaMap) size() uint64   { return le.Uint64(m[24:]) }

// dmaUnmap is a DMA_UNMAP payload. The dirty-bitmap variant (flag 1,
// migration only) is not supported; ALL (flag 2) needs iova = size = 0.
type dmaUnmap []byte

func (m dmaUnmap) Valid() bool {
	if len(m) != dmaUnmapSize || m.argsz() != dmaUnmapSize || m.flags()&DMAUnmapGetDirtyBitmap != 0 {
		return false
	}
	if m.flags()&DMAUnmapAll != 0 {
		return m.iova() == 0 && m.size() == 0
	}
	return m.size() != 0 && m.iova()+m.size() >= m.iova()
}
func (m dmaUnmap) argsz() uint32 { return le.Uint32(m[0:]) }
func (m dmaUnmap) flags() uint32 { return le.Uint32(m[4:]) }
func (m dmaUnmap) iova() uint64  { return le.Uint64(m[8:]) }
func (m dmaUnmap) size() uint64  { return le.Uint64(m[16:]) }

// DMA_READ / DMA_WRITE, server to client, 11.1.3 layout (notes 1.5):
// address u64, count u64, then data (DMA_WRITE request, DMA_READ reply).
const dmaAccessSize = 16

// dmaAccess is a DMA_READ/DMA_WRITE payload.
type dmaAccess []byte

func (m dmaAccess) Valid() bool     { return len(m) >= dmaAccessSize }
func (m dmaAccess) address() uint64 { return le.Uint64(m[0:]) }
func (m dmaAccess) count() uint64   { return le.Uint64(m[8:]) }
func (m dmaAccess) data() []byte    { return m[dmaAccessSize:] }

// VERSION (notes 2.1): major u16, minor u16, NUL-terminated JSON.
const versionSize = 4

// version is a VERSION payload.
type version []byte

func (m version) Valid() bool {
	if len(m) < versionSize {
		return false
	}
	// Any capability text must be NUL-terminated, the NUL inside the message.
	return len(m) == versionSize || m[len(m)-1] == 0
}
func (m version) major() uint16 { return le.Uint16(m[0:]) }
func (m version) minor() uint16 { return le.Uint16(m[2:]) }

// json is the capability text without its terminating NUL (and anything
// after an earlier NUL).
func (m version) json() []byte {
	j := m[versionSize:]
	for i, c := range j {
		if c == 0 {
			return j[:i]
		}
	}
	return j
}
