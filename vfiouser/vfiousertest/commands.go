package vfiousertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"testing"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/msi/msitest"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"golang.org/x/sys/unix"
)

// Region indexes and flags and IRQ indexes, as VFIO numbers them, taken
// from the packages that own them (pci for regions, vfiouser for the
// caps flag only the wire carries, msi for IRQ indexes) and kept in the
// uint32 the client's calls and RegionInfo use.
const (
	RegionConfig = pci.RegionConfig

	RegionFlagRead  = uint32(pci.RegionRead)
	RegionFlagWrite = uint32(pci.RegionWrite)
	RegionFlagMmap  = uint32(pci.RegionMmap)
	RegionFlagCaps  = uint32(vfiouser.RegionInfoFlagCaps)

	IRQIndexINTx = uint32(msi.INTx)
	IRQIndexMSI  = uint32(msi.MSI)
	IRQIndexMSIX = uint32(msi.MSIX)
)

// Negotiate sends QEMU 11.1.3's VERSION request and checks the reply as
// QEMU does (notes 2.3): no error, version 0.0, at most 214 bytes, a NUL
// terminated JSON object with sane capabilities.
func (c *Client) Negotiate() error {
	return c.NegotiateJSON(QEMUVersionJSON)
}

// NegotiateJSON is Negotiate with another capability text.
func (c *Client) NegotiateJSON(text string) error {
	p := make([]byte, 4, 4+len(text)+1)
	p = append(p, text...)
	p = append(p, 0)
	var caps ServerCaps
	_, err := c.do(vfiouser.CmdVersion, p, nil, func(r Reply) error {
		var err error
		caps, err = parseVersionReply(r.Payload)
		return err
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.caps = caps
	c.mu.Unlock()
	return nil
}

func parseVersionReply(p []byte) (ServerCaps, error) {
	var caps ServerCaps
	if len(p) < 5 {
		return caps, fmt.Errorf("VERSION reply without capability JSON (QEMU would silently reuse its own)")
	}
	caps.Major, caps.Minor = le.Uint16(p[0:]), le.Uint16(p[2:])
	if caps.Major != 0 || caps.Minor != 0 {
		return caps, fmt.Errorf("version %d.%d, QEMU accepts 0.0", caps.Major, caps.Minor)
	}
	text := p[4:]
	if text[len(text)-1] != 0 {
		return caps, fmt.Errorf("capability JSON not NUL-terminated")
	}
	text = text[:len(text)-1]
	if bytes.IndexByte(text, 0) >= 0 {
		return caps, fmt.Errorf("NUL inside the capability JSON")
	}
	caps.JSON = string(text)
	var j capsJSON
	if err := json.Unmarshal(text, &j); err != nil {
		return caps, fmt.Errorf("capability JSON: %v", err)
	}
	if j.Capabilities == nil {
		return caps, fmt.Errorf("capability JSON without a \"capabilities\" object")
	}
	cj := j.Capabilities
	num := func(n *json.Number, name string, def, max uint64) (uint64, error) {
		if n == nil {
			return def, nil
		}
		v, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil || v > max {
			return 0, fmt.Errorf("malformed %s %s", name, n)
		}
		return v, nil
	}
	v, err := num(cj.MaxMsgFDs, "max_msg_fds", 1, 16)
	if err != nil {
		return caps, err
	}
	caps.MaxMsgFDs = int(v)
	if v, err = num(cj.MaxDataXfer, "max_data_xfer_size", 1<<20, 64<<20); err != nil {
		return caps, err
	}
	if v < 4096 {
		return caps, fmt.Errorf("max_data_xfer_size %d below QEMU's first 4096-byte config read", v)
	}
	caps.MaxDataXfer = int(v)
	if v, err = num(cj.PgSizes, "pgsizes", 4096, 1<<63); err != nil || v%4096 != 0 {
		return caps, fmt.Errorf("malformed pgsizes")
	}
	caps.PgSizes = v
	if v, err = num(cj.MaxDMAMaps, "max_dma_maps", 65535, 65535); err != nil {
		return caps, err
	}
	caps.MaxDMAMaps = int(v)
	if cj.WriteMultiple != nil {
		if err := json.Unmarshal(cj.WriteMultiple, &caps.WriteMultiple); err != nil {
			return caps, fmt.Errorf("write_multiple is not a boolean")
		}
	}
	if cj.TwinSocket != nil {
		return caps, fmt.Errorf("twin_socket offered; QEMU never proposes it")
	}
	return caps, nil
}

// DeviceInfo is a DEVICE_GET_INFO answer.
type DeviceInfo struct {
	Flags, NumRegions, NumIRQs uint32
}

// DeviceInfo asks DEVICE_GET_INFO (argsz 16) and checks what QEMU checks.
func (c *Client) DeviceInfo() (DeviceInfo, error) {
	p := make([]byte, 16)
	le.PutUint32(p, 16)
	var di DeviceInfo
	_, err := c.do(vfiouser.CmdDeviceGetInfo, p, nil, func(r Reply) error {
		if err := exactSize(16)(r); err != nil {
			return err
		}
		if a := le.Uint32(r.Payload[0:]); a != 16 {
			return fmt.Errorf("argsz %d, want 16", a)
		}
		di = DeviceInfo{le.Uint32(r.Payload[4:]), le.Uint32(r.Payload[8:]), le.Uint32(r.Payload[12:])}
		switch {
		case di.Flags&vfiouser.DeviceInfoPCI == 0:
			return fmt.Errorf("flags %#x without PCI", di.Flags)
		case di.NumRegions < 8 || di.NumRegions > 100:
			return fmt.Errorf("num_regions %d (QEMU needs 8..100)", di.NumRegions)
		case di.NumIRQs < 3 || di.NumIRQs > 50:
			return fmt.Errorf("num_irqs %d (QEMU needs 3..50)", di.NumIRQs)
		}
		return nil
	})
	return di, err
}

// Area is a sparse-mmap area.
type Area struct{ Offset, Size uint64 }

// RegionInfo is a GET_REGION_INFO answer.
type RegionInfo struct {
	Index  uint32
	Flags  uint32
	Size   uint64
	Offset uint64 // mmap offset in Fd
	Sparse []Area
	// Fd is the file to mmap (MMAP flag), or -1. The caller owns it.
	Fd int
}

// Close closes Fd if there is one.
func (ri *RegionInfo) Close() {
	if ri.Fd >= 0 {
		unix.Close(ri.Fd)
		ri.Fd = -1
	}
}

// RegionInfo asks GET_REGION_INFO as QEMU does: a 48-byte request with
// argsz 32, repeated with the larger argsz the server asks for.
func (c *Client) RegionInfo(index uint32) (RegionInfo, error) {
	argsz := uint32(32)
	for try := 0; ; try++ {
		ri, need, err := c.regionInfo(index, argsz)
		if err != nil || need <= argsz {
			return ri, err
		}
		ri.Close()
		if try > 0 {
			return ri, c.violate("GET_REGION_INFO %d: argsz grew again to %d after a retry with %d", index, need, argsz)
		}
		argsz = need
	}
}

// RegionInfoArgsz sends one GET_REGION_INFO with the given argsz and
// returns the server's argsz (larger than argsz: retry needed).
func (c *Client) RegionInfoArgsz(index, argsz uint32) (RegionInfo, uint32, error) {
	return c.regionInfo(index, argsz)
}

func (c *Client) regionInfo(index, argsz uint32) (RegionInfo, uint32, error) {
	p := make([]byte, 32)
	le.PutUint32(p[0:], argsz)
	le.PutUint32(p[8:], index)
	ri := RegionInfo{Index: index, Fd: -1}
	var need uint32
	r, err := c.do(vfiouser.CmdDeviceGetRegionInfo, p, nil, func(r Reply) error {
		return checkRegionInfo(r, index, argsz, &ri, &need)
	})
	if err != nil {
		closeAll(r.Fds)
		return RegionInfo{Index: index, Fd: -1}, 0, err
	}
	if len(r.Fds) == 1 {
		ri.Fd = r.Fds[0]
	}
	return ri, need, nil
}

func checkRegionInfo(r Reply, index, argsz uint32, ri *RegionInfo, need *uint32) error {
	p := r.Payload
	if len(p) < 32 {
		return fmt.Errorf("payload %d bytes, want >= 32", len(p))
	}
	if uint64(len(p)) > uint64(argsz) {
		return fmt.Errorf("payload %d bytes above the request's argsz %d", len(p), argsz)
	}
	*need = le.Uint32(p[0:])
	ri.Flags = le.Uint32(p[4:])
	capOff := le.Uint32(p[12:])
	ri.Size = le.Uint64(p[16:])
	ri.Offset = le.Uint64(p[24:])
	if got := le.Uint32(p[8:]); got != index {
		return fmt.Errorf("index %d, want %d", got, index)
	}
	if *need < 32 {
		return fmt.Errorf("argsz %d below 32", *need)
	}
	if *need > argsz {
		// Retry form: the bare struct, no caps, no fd. QEMU 11.1 still
		// checks cap_offset >= 32 when the CAPS flag is set, before it
		// retries with the larger argsz; 0 fails realize.
		if len(p) != 32 || len(r.Fds) != 0 {
			return fmt.Errorf("argsz %d > %d: want the bare 32-byte struct and no fd, got %d bytes, %d fds", *need, argsz, len(p), len(r.Fds))
		}
		if ri.Flags&RegionFlagCaps != 0 && (capOff < 32 || capOff >= *need) {
			return fmt.Errorf("argsz %d > %d: CAPS flag with cap_offset %d (QEMU wants 32..argsz)", *need, argsz, capOff)
		}
		return nil
	}
	if uint32(len(p)) != *need {
		return fmt.Errorf("payload %d bytes, argsz says %d", len(p), *need)
	}
	if ri.Size != 0 && ri.Size&(ri.Size-1) != 0 && index < RegionConfig-1 {
		return fmt.Errorf("BAR size %#x not a power of two (QEMU aborts)", ri.Size)
	}
	switch {
	case ri.Flags&RegionFlagMmap != 0 && len(r.Fds) != 1:
		return fmt.Errorf("MMAP flag with %d fds, want exactly 1", len(r.Fds))
	case ri.Flags&RegionFlagMmap == 0 && len(r.Fds) != 0:
		return fmt.Errorf("%d fds without the MMAP flag", len(r.Fds))
	case len(r.Fds) == 1 && r.Fds[0] < 0:
		return fmt.Errorf("fds truncated")
	}
	if ri.Flags&RegionFlagCaps != 0 {
		if capOff < 32 || uint64(capOff)+16 > uint64(len(p)) {
			return fmt.Errorf("cap_offset %d outside the %d-byte reply", capOff, len(p))
		}
		cp := p[capOff:]
		id, ver, next, nr := le.Uint16(cp[0:]), le.Uint16(cp[2:]), le.Uint32(cp[4:]), le.Uint32(cp[8:])
		if id != vfiouser.CapSparseMmap || ver != 1 || next != 0 {
			return fmt.Errorf("cap id %d version %d next %d, want sparse mmap 1/1/0", id, ver, next)
		}
		if uint64(len(cp)) != 16+16*uint64(nr) {
			return fmt.Errorf("sparse cap with %d areas in %d bytes", nr, len(cp))
		}
		var end uint64
		for i := range int(nr) {
			a := Area{le.Uint64(cp[16+16*i:]), le.Uint64(cp[24+16*i:])}
			if a.Offset%4096 != 0 || a.Size%4096 != 0 || a.Size == 0 || a.Offset < end || a.Offset+a.Size > ri.Size {
				return fmt.Errorf("sparse area %d %#x+%#x not page-aligned, sorted and inside %#x", i, a.Offset, a.Size, ri.Size)
			}
			end = a.Offset + a.Size
			ri.Sparse = append(ri.Sparse, a)
		}
	} else if capOff != 0 || len(p) != 32 {
		return fmt.Errorf("no CAPS flag but cap_offset %d and %d bytes", capOff, len(p))
	}
	return nil
}

// IRQInfo is a GET_IRQ_INFO answer.
type IRQInfo struct{ Flags, Count uint32 }

// IRQInfo asks GET_IRQ_INFO (argsz 16).
func (c *Client) IRQInfo(index uint32) (IRQInfo, error) {
	p := make([]byte, 16)
	le.PutUint32(p[0:], 16)
	le.PutUint32(p[8:], index)
	var ii IRQInfo
	_, err := c.do(vfiouser.CmdDeviceGetIRQInfo, p, nil, func(r Reply) error {
		if err := exactSize(16)(r); err != nil {
			return err
		}
		if a, i := le.Uint32(r.Payload[0:]), le.Uint32(r.Payload[8:]); a != 16 || i != index {
			return fmt.Errorf("argsz %d index %d, want 16 and %d", a, i, index)
		}
		ii = IRQInfo{le.Uint32(r.Payload[4:]), le.Uint32(r.Payload[12:])}
		return nil
	})
	return ii, err
}

func regionAccess(index uint32, off uint64, count int, data []byte) []byte {
	p := make([]byte, 16+len(data))
	le.PutUint64(p[0:], off)
	le.PutUint32(p[8:], index)
	le.PutUint32(p[12:], uint32(count))
	copy(p[16:], data)
	return p
}

// ReadRegion reads len(p) bytes of region index at off (REGION_READ);
// the reply must be exactly 32 + count bytes and echo the request.
func (c *Client) ReadRegion(index uint32, off uint64, p []byte) error {
	req := regionAccess(index, off, len(p), nil)
	_, err := c.do(vfiouser.CmdRegionRead, req, nil, func(r Reply) error {
		if err := exactSize(16 + len(p))(r); err != nil {
			return err
		}
		if !bytes.Equal(r.Payload[:16], req) {
			return fmt.Errorf("reply offset/region/count %x, want %x", r.Payload[:16], req)
		}
		copy(p, r.Payload[16:])
		return nil
	})
	return err
}

// WriteRegion writes data to region index at off and waits for the reply
// (what QEMU does for config writes and I/O BARs).
func (c *Client) WriteRegion(index uint32, off uint64, data []byte) error {
	req := regionAccess(index, off, len(data), data)
	_, err := c.do(vfiouser.CmdRegionWrite, req, nil, func(r Reply) error {
		if err := exactSize(16)(r); err != nil {
			return err
		}
		if !bytes.Equal(r.Payload, req[:16]) {
			return fmt.Errorf("reply offset/region/count %x, want %x", r.Payload, req[:16])
		}
		return nil
	})
	return err
}

// WriteRegionPosted sends a posted write (NO_REPLY, as QEMU's memory BAR
// writes) and then Sync, which proves that nothing answered it: the
// server handles messages in order, so a reply to the write would arrive
// before Sync's.
func (c *Client) WriteRegionPosted(index uint32, off uint64, data []byte) error {
	before := c.violationCount()
	if err := c.PostWriteRegion(index, off, data); err != nil {
		return err
	}
	if err := c.Sync(); err != nil {
		return err
	}
	return c.violationsSince(before)
}

// PostWriteRegion sends a posted write and returns at once; a reply to it
// is reported as a violation when it arrives (at the latest by the next
// synchronous call's reply). Use it to stream writes; then call Sync.
func (c *Client) PostWriteRegion(index uint32, off uint64, data []byte) error {
	return c.post(vfiouser.CmdRegionWrite, regionAccess(index, off, len(data), data))
}

// Sync makes one synchronous request (DEVICE_GET_INFO) and returns any
// violation seen up to its reply.
func (c *Client) Sync() error {
	before := c.violationCount()
	if _, err := c.DeviceInfo(); err != nil {
		return err
	}
	return c.violationsSince(before)
}

// ReadConfig reads n bytes of config space at off.
func (c *Client) ReadConfig(off uint64, n int) ([]byte, error) {
	p := make([]byte, n)
	err := c.ReadRegion(RegionConfig, off, p)
	return p, err
}

// WriteConfig writes config space (never posted, as QEMU).
func (c *Client) WriteConfig(off uint64, data []byte) error {
	return c.WriteRegion(RegionConfig, off, data)
}

// ReadConfig32 reads a little-endian config dword.
func (c *Client) ReadConfig32(off uint64) (uint32, error) {
	b, err := c.ReadConfig(off, 4)
	if err != nil {
		return 0, err
	}
	return le.Uint32(b), nil
}

// WriteConfig32 writes a little-endian config dword.
func (c *Client) WriteConfig32(off uint64, v uint32) error {
	var b [4]byte
	le.PutUint32(b[:], v)
	return c.WriteConfig(off, b[:])
}

// Write is one entry of a REGION_WRITE_MULTI (1..8 bytes of data).
type Write struct {
	Region uint32
	Offset uint64
	Data   []byte
}

// WriteMulti sends writes as REGION_WRITE_MULTI messages of at most 200
// entries, NO_REPLY as QEMU does, then Sync.
func (c *Client) WriteMulti(writes []Write) error {
	before := c.violationCount()
	for len(writes) > 0 {
		n := min(len(writes), 200)
		p := make([]byte, 8+24*n)
		le.PutUint64(p, uint64(n))
		for i, w := range writes[:n] {
			if len(w.Data) == 0 || len(w.Data) > 8 {
				return fmt.Errorf("vfiousertest: WriteMulti entry %d: %d bytes, want 1..8", i, len(w.Data))
			}
			e := p[8+24*i:]
			le.PutUint64(e[0:], w.Offset)
			le.PutUint32(e[8:], w.Region)
			le.PutUint32(e[12:], uint32(len(w.Data)))
			copy(e[16:], w.Data)
		}
		if err := c.post(vfiouser.CmdRegionWriteMulti, p); err != nil {
			return err
		}
		writes = writes[n:]
	}
	if err := c.Sync(); err != nil {
		return err
	}
	return c.violationsSince(before)
}

// SetIRQs sends DEVICE_SET_IRQS (argsz 20, fds not counted, as QEMU);
// data is the DATA_BOOL payload. fds stay owned by the caller.
func (c *Client) SetIRQs(index, flags, start, count uint32, fds []int, data []byte) error {
	p := make([]byte, 20+len(data))
	le.PutUint32(p[0:], uint32(len(p)))
	le.PutUint32(p[4:], flags)
	le.PutUint32(p[8:], index)
	le.PutUint32(p[12:], start)
	le.PutUint32(p[16:], count)
	copy(p[20:], data)
	_, err := c.do(vfiouser.CmdDeviceSetIRQs, p, fds, exactSize(0))
	return err
}

// EnableMSIX enables MSI-X vectors 0..n-1 with fresh eventfds, in
// messages of at most the server's max_msg_fds, as QEMU does after the
// guest unmasks them. The eventfds are closed by tb.Cleanup.
func (c *Client) EnableMSIX(tb testing.TB, n int) ([]*msitest.EventFD, error) {
	tb.Helper()
	evs := make([]*msitest.EventFD, n)
	for i := range evs {
		evs[i] = msitest.NewEventFD(tb)
	}
	per := max(c.Caps().MaxMsgFDs, 1)
	for start := 0; start < n; start += per {
		cnt := min(per, n-start)
		fds := make([]int, cnt)
		for i := range fds {
			fds[i] = evs[start+i].Fd()
		}
		err := c.SetIRQs(IRQIndexMSIX, vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger, uint32(start), uint32(cnt), fds, nil)
		closeAll(fds)
		if err != nil {
			return evs, err
		}
	}
	return evs, nil
}

// DisableIRQs disables an index (DATA_NONE|TRIGGER, count 0).
func (c *Client) DisableIRQs(index uint32) error {
	return c.SetIRQs(index, vfiouser.IRQDataNone|vfiouser.IRQActionTrigger, 0, 0, nil, nil)
}

// Reset sends DEVICE_RESET; the reply must be the bare header.
func (c *Client) Reset() error {
	_, err := c.do(vfiouser.CmdDeviceReset, nil, nil, exactSize(0))
	return err
}

// MapRAM maps ram at iova with its memfd (DMA_MAP, flags R|W, offset 0),
// as QEMU does for shared guest RAM. The client also serves DMA_READ and
// DMA_WRITE for the range, from its own mapping of the memfd, so ram may
// be closed before the client.
func (c *Client) MapRAM(ram *dmatest.RAM, iova uint64) error {
	return c.mapRAM(ram, iova, true)
}

// MapRAMNoFD maps ram at iova without an fd, as QEMU does for anonymous
// RAM: the server can reach it only by DMA_READ/DMA_WRITE messages, which
// the client serves from its own mapping of ram.
func (c *Client) MapRAMNoFD(ram *dmatest.RAM, iova uint64) error {
	return c.mapRAM(ram, iova, false)
}

// MapFD sends a DMA_MAP of [iova, iova+size) with fd at offset (fd -1:
// none) and the given flags, for tests of the server's map handling. The
// client serves no DMA for it. fd stays owned by the caller.
func (c *Client) MapFD(iova, size, offset uint64, fd int, flags uint32) error {
	var fds []int
	if fd >= 0 {
		fds = []int{fd}
	}
	_, err := c.do(vfiouser.CmdDMAMap, dmaMapPayload(iova, size, offset, flags), fds, exactSize(0))
	return err
}

func dmaMapPayload(iova, size, offset uint64, flags uint32) []byte {
	p := make([]byte, 32)
	le.PutUint32(p[0:], 32)
	le.PutUint32(p[4:], flags)
	le.PutUint64(p[8:], offset)
	le.PutUint64(p[16:], iova)
	le.PutUint64(p[24:], size)
	return p
}

func (c *Client) mapRAM(ram *dmatest.RAM, iova uint64, withFD bool) error {
	fd := ram.Fd()
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, ram.Size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("vfiousertest: mmap RAM: %w", err)
	}
	send := fd
	if !withFD {
		send = -1
	}
	if err := c.MapFD(iova, uint64(len(mem)), 0, send, vfiouser.DMAMapRead|vfiouser.DMAMapWrite); err != nil {
		unix.Munmap(mem)
		return err
	}
	c.ramMu.Lock()
	c.rams = append(c.rams, ramMap{iova: iova, mem: mem})
	sort.Slice(c.rams, func(i, j int) bool { return c.rams[i].iova < c.rams[j].iova })
	c.ramMu.Unlock()
	return nil
}

// Unmap sends DMA_UNMAP for [iova, iova+size) and stops serving DMA there.
func (c *Client) Unmap(iova, size uint64) error {
	return c.unmap(iova, size, 0)
}

// UnmapAll sends DMA_UNMAP with the ALL flag.
func (c *Client) UnmapAll() error {
	return c.unmap(0, 0, vfiouser.DMAUnmapAll)
}

func (c *Client) unmap(iova, size uint64, flags uint32) error {
	p := make([]byte, 24)
	le.PutUint32(p[0:], 24)
	le.PutUint32(p[4:], flags)
	le.PutUint64(p[8:], iova)
	le.PutUint64(p[16:], size)
	_, err := c.do(vfiouser.CmdDMAUnmap, p, nil, func(r Reply) error {
		if len(r.Payload) != 0 && !bytes.Equal(r.Payload, p) {
			return fmt.Errorf("payload %x, want none or the request echoed", r.Payload)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.ramMu.Lock()
	keep := c.rams[:0]
	for _, r := range c.rams {
		if flags&vfiouser.DMAUnmapAll == 0 && (r.iova < iova || r.iova+uint64(len(r.mem)) > iova+size) {
			keep = append(keep, r)
		} else {
			unix.Munmap(r.mem)
		}
	}
	c.rams = keep
	c.ramMu.Unlock()
	return nil
}

// Raw writes b to the socket verbatim, with fds attached (owned by the
// caller). Nothing is awaited: use it for truncated or garbage input, then
// Sync or watch Done.
func (c *Client) Raw(b []byte, fds []int) error { return c.send(b, fds) }

// RawCall sends h (Size as given, however wrong) and payload with fds,
// and waits for a reply with h.ID. The reply is not judged beyond its
// header matching; an error reply is returned as (reply, *ReplyError).
// If the server closes the connection instead, it returns ErrClosed.
func (c *Client) RawCall(h vfiouser.Header, payload []byte, fds []int) (Reply, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Reply{}, ErrClosed
	}
	if c.calls[h.ID] != nil {
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("vfiousertest: RawCall id %d is in use", h.ID)
	}
	cl := &call{cmd: h.Command, reqSz: 1 << 30, ch: make(chan Reply, 1), check: func(Reply) error { return nil }}
	c.calls[h.ID] = cl
	delete(c.posted, h.ID)
	c.mu.Unlock()
	b := make([]byte, vfiouser.HeaderSize+len(payload))
	h.Put(b)
	copy(b[vfiouser.HeaderSize:], payload)
	if err := c.send(b, fds); err != nil {
		c.mu.Lock()
		delete(c.calls, h.ID)
		c.mu.Unlock()
		return Reply{}, err
	}
	return c.wait(h.ID, cl)
}

// RawPost sends h and payload expecting no reply (a reply to h.ID is a
// violation); follow it with Sync.
func (c *Client) RawPost(h vfiouser.Header, payload []byte, fds []int) error {
	c.mu.Lock()
	c.posted[h.ID] = true
	c.mu.Unlock()
	b := make([]byte, vfiouser.HeaderSize+len(payload))
	h.Put(b)
	copy(b[vfiouser.HeaderSize:], payload)
	return c.send(b, fds)
}

// NextID returns an id no call is waiting on, for Raw* messages.
func (c *Client) NextID() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.allocIDLocked()
}

// IsErrno reports whether err is an error reply carrying errno.
func IsErrno(err error, errno unix.Errno) bool {
	var re *ReplyError
	return errors.As(err, &re) && re.Errno == errno
}
