// Package vhostuser is a vhost-user-net backend: the device side of QEMU's
// -netdev vhost-user, so that a virtio-net guest's rings are served here
// and its frames join the emulated wire.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The vhost-user protocol (QEMU docs/interop/vhost-user.rst): every message
// is a 12-byte header (request, flags, payload size, all little-endian) and
// a payload; file descriptors travel as SCM_RIGHTS with the header.

// Request is a front-end request code.
type Request uint32

// The requests this backend knows.
const (
	ReqGetFeatures         Request = 1
	ReqSetFeatures         Request = 2
	ReqSetOwner            Request = 3
	ReqResetOwner          Request = 4
	ReqSetMemTable         Request = 5
	ReqSetLogBase          Request = 6
	ReqSetLogFD            Request = 7
	ReqSetVringNum         Request = 8
	ReqSetVringAddr        Request = 9
	ReqSetVringBase        Request = 10
	ReqGetVringBase        Request = 11
	ReqSetVringKick        Request = 12
	ReqSetVringCall        Request = 13
	ReqSetVringErr         Request = 14
	ReqGetProtocolFeatures Request = 15
	ReqSetProtocolFeatures Request = 16
	ReqGetQueueNum         Request = 17
	ReqSetVringEnable      Request = 18
	ReqSendRARP            Request = 19
)

var reqNames = map[Request]string{
	ReqGetFeatures: "GET_FEATURES", ReqSetFeatures: "SET_FEATURES", ReqSetOwner: "SET_OWNER",
	ReqResetOwner: "RESET_OWNER", ReqSetMemTable: "SET_MEM_TABLE", ReqSetLogBase: "SET_LOG_BASE",
	ReqSetLogFD: "SET_LOG_FD", ReqSetVringNum: "SET_VRING_NUM", ReqSetVringAddr: "SET_VRING_ADDR",
	ReqSetVringBase: "SET_VRING_BASE", ReqGetVringBase: "GET_VRING_BASE", ReqSetVringKick: "SET_VRING_KICK",
	ReqSetVringCall: "SET_VRING_CALL", ReqSetVringErr: "SET_VRING_ERR", ReqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	ReqSetProtocolFeatures: "SET_PROTOCOL_FEATURES", ReqGetQueueNum: "GET_QUEUE_NUM", ReqSetVringEnable: "SET_VRING_ENABLE",
	ReqSendRARP: "SEND_RARP",
}

func (r Request) String() string {
	if n, ok := reqNames[r]; ok {
		return n
	}
	return fmt.Sprintf("REQUEST_%d", uint32(r))
}

// Header flags.
const (
	flagVersion   = 0x1 // the only protocol version
	flagVersionMk = 0x3
	flagReply     = 1 << 2
	flagNeedReply = 1 << 3
)

// HeaderSize is the size of a message header.
const HeaderSize = 12

// maxPayload bounds a payload: the largest message this backend takes is
// SET_MEM_TABLE with 8 regions (8 + 8*32 bytes).
const maxPayload = 8 + maxRegions*32

// maxRegions is the most memory regions a table may have (the protocol's
// VHOST_MEMORY_BASELINE_NREGIONS without CONFIGURE_MEM_SLOTS).
const maxRegions = 8

// Header is a message header.
type Header struct {
	Request Request
	Flags   uint32
	Size    uint32
}

// Decoding errors: the connection cannot go on after any of them.
var (
	ErrBadVersion = errors.New("vhostuser: header version is not 1")
	ErrTooBig     = errors.New("vhostuser: payload larger than any request's")
)

// parseHeader decodes and checks a header.
func parseHeader(b []byte) (Header, error) {
	h := Header{
		Request: Request(binary.LittleEndian.Uint32(b[0:])),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
	if h.Flags&flagVersionMk != flagVersion {
		return h, fmt.Errorf("%w (flags %#x, request %s)", ErrBadVersion, h.Flags, h.Request)
	}
	if h.Size > maxPayload {
		return h, fmt.Errorf("%w: %d bytes (request %s)", ErrTooBig, h.Size, h.Request)
	}
	return h, nil
}

func appendHeader(b []byte, h Header) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Request))
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	return binary.LittleEndian.AppendUint32(b, h.Size)
}

// Payload sizes per request (the protocol's fixed layouts).
const (
	sizeU64   = 8
	sizeState = 8  // vring state: index u32, num u32
	sizeAddr  = 40 // vring address: index, flags u32; desc, used, avail, log u64
)

// Message is one decoded request: its header, payload and fds. The
// accessors check the payload size the request needs.
type Message struct {
	Header
	Payload []byte
	FDs     []int
}

var errSize = errors.New("vhostuser: payload size wrong for the request")

// U64 is the payload as one 64-bit number.
func (m *Message) U64() (uint64, error) {
	if len(m.Payload) != sizeU64 {
		return 0, fmt.Errorf("%w: %s has %d bytes, want %d", errSize, m.Request, len(m.Payload), sizeU64)
	}
	return binary.LittleEndian.Uint64(m.Payload), nil
}

// State is the payload as a vring state (index, num).
func (m *Message) State() (index, num uint32, err error) {
	if len(m.Payload) != sizeState {
		return 0, 0, fmt.Errorf("%w: %s has %d bytes, want %d", errSize, m.Request, len(m.Payload), sizeState)
	}
	return binary.LittleEndian.Uint32(m.Payload), binary.LittleEndian.Uint32(m.Payload[4:]), nil
}

// VringAddr is a SET_VRING_ADDR payload: front-end virtual addresses.
type VringAddr struct {
	Index             uint32
	Flags             uint32
	Desc, Used, Avail uint64
	Log               uint64
}

// Addr is the payload as a vring address.
func (m *Message) Addr() (VringAddr, error) {
	if len(m.Payload) != sizeAddr {
		return VringAddr{}, fmt.Errorf("%w: %s has %d bytes, want %d", errSize, m.Request, len(m.Payload), sizeAddr)
	}
	p := m.Payload
	return VringAddr{
		Index: binary.LittleEndian.Uint32(p), Flags: binary.LittleEndian.Uint32(p[4:]),
		Desc: binary.LittleEndian.Uint64(p[8:]), Used: binary.LittleEndian.Uint64(p[16:]),
		Avail: binary.LittleEndian.Uint64(p[24:]), Log: binary.LittleEndian.Uint64(p[32:]),
	}, nil
}

// Region is one memory region of a SET_MEM_TABLE.
type Region struct {
	GuestPhys  uint64 // guest physical address
	Size       uint64
	UserAddr   uint64 // the front end's virtual address of it
	MmapOffset uint64 // where it starts in its fd
}

// MemTable is the payload as a memory table; it needs one fd per region.
func (m *Message) MemTable() ([]Region, error) {
	if len(m.Payload) < 8 {
		return nil, fmt.Errorf("%w: SET_MEM_TABLE has %d bytes", errSize, len(m.Payload))
	}
	n := binary.LittleEndian.Uint32(m.Payload)
	if n == 0 || n > maxRegions {
		return nil, fmt.Errorf("vhostuser: SET_MEM_TABLE with %d regions (1..%d)", n, maxRegions)
	}
	if len(m.Payload) < 8+int(n)*32 {
		return nil, fmt.Errorf("%w: SET_MEM_TABLE of %d regions has %d bytes", errSize, n, len(m.Payload))
	}
	if len(m.FDs) != int(n) {
		return nil, fmt.Errorf("vhostuser: SET_MEM_TABLE of %d regions came with %d fds", n, len(m.FDs))
	}
	rs := make([]Region, n)
	for i := range rs {
		p := m.Payload[8+32*i:]
		rs[i] = Region{
			GuestPhys: binary.LittleEndian.Uint64(p), Size: binary.LittleEndian.Uint64(p[8:]),
			UserAddr: binary.LittleEndian.Uint64(p[16:]), MmapOffset: binary.LittleEndian.Uint64(p[24:]),
		}
		r := rs[i]
		if r.Size == 0 || r.Size > 1<<40 || r.MmapOffset > 1<<40 ||
			r.GuestPhys+r.Size < r.GuestPhys || r.UserAddr+r.Size < r.UserAddr {
			return nil, fmt.Errorf("vhostuser: SET_MEM_TABLE region %d out of range: %+v", i, r)
		}
	}
	return rs, nil
}
