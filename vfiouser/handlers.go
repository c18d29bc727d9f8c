package vfiouser

import (
	"errors"
	"fmt"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Command handlers. Each runs on the reader after dispatch validated the
// payload (its view's Valid) and the fd count; it owns fds, builds its
// reply payload with c.grow and returns an error for an error reply.
// Reply sizes are exactly what QEMU 11.1.3 accepts (notes 1.2).

// cmdVersion negotiates (notes 2): major 0 minor 0, the client's limits
// recorded, our compact JSON in a reply no larger than the request.
func (c *conn) cmdVersion(p []byte, _ []int) error {
	v := version(p)
	if c.negotiated {
		return badRequest("VERSION: already negotiated")
	}
	if v.major() != 0 {
		return protocolErr{fmt.Errorf("vfiouser: VERSION: client major %d, server speaks 0: %w", v.major(), unix.ENOTSUP)}
	}
	caps, err := parseCapabilities(v.json())
	if err != nil {
		return protocolErr{err}
	}
	c.negotiated = true
	c.peer = caps
	c.peerXfer.Store(int64(min(c.s.cfg.MaxDataXfer, caps.MaxDataXfer)))
	text := pickVersionReply(c.s.texts, HeaderSize+len(p))
	b := c.grow(versionSize + len(text))
	le.PutUint16(b[0:], 0)
	le.PutUint16(b[2:], 0)
	copy(b[versionSize:], text)
	c.log.WithFields(logrus.Fields{
		"client_major": v.major(), "client_minor": v.minor(),
		"client_max_msg_fds": caps.MaxMsgFDs, "client_max_data_xfer": caps.MaxDataXfer,
	}).Info("version negotiated")
	return nil
}

// cmdDMAMap records a client memory region (notes 3.5); the map takes
// ownership of the fd. A map error (overlap, short file...) is an error
// reply; QEMU only logs it for its async maps.
func (c *conn) cmdDMAMap(p []byte, fds []int) error {
	v := dmaMap(p)
	fd := -1
	if len(fds) == 1 {
		fd = fds[0]
	}
	err := c.mem.Add(dma.Mapping{
		IOVA:   v.iova(),
		Size:   v.size(),
		Offset: v.offset(),
		Fd:     fd,
		Prot:   dma.Prot(v.flags() & (DMAMapRead | DMAMapWrite)),
	})
	if errors.Is(err, dma.ErrLimit) {
		// Counted and logged (rate-limited) as a client mistake: QEMU
		// stays far below every limit (docs/limits.md).
		c.s.limitRefusals.Add(1)
		return protocolErr{err}
	}
	return err
}

// cmdDMAUnmap releases a region before replying (the device never touches
// it after the reply) and echoes the 24-byte request.
func (c *conn) cmdDMAUnmap(p []byte, _ []int) error {
	v := dmaUnmap(p)
	if v.flags()&DMAUnmapAll != 0 {
		c.mem.RemoveAll()
	} else if err := c.mem.Remove(v.iova(), v.size()); err != nil {
		return err
	}
	copy(c.grow(dmaUnmapSize), v)
	return nil
}

// cmdDeviceGetInfo: argsz 16, flags PCI|RESET, the function's counts.
func (c *conn) cmdDeviceGetInfo(_ []byte, _ []int) error {
	putDeviceInfo(c.grow(deviceInfoSize), DeviceInfoPCI|DeviceInfoReset, c.numRegions, c.numIRQs)
	return nil
}

// cmdGetRegionInfo answers with the 32-byte vfio_region_info, plus the
// sparse-mmap capability and the one mmap fd when they fit the client's
// argsz; otherwise only the struct with the argsz needed (notes 4.3).
func (c *conn) cmdGetRegionInfo(p []byte, _ []int) error {
	v := regionInfoReq(p)
	index := v.index()
	if index >= c.numRegions {
		return badRequest("GET_REGION_INFO: region %d of %d", index, c.numRegions)
	}
	info, err := c.f.RegionInfo(index)
	if err != nil {
		return err
	}
	flags := uint32(info.Flags) & uint32(pci.RegionRead|pci.RegionWrite|pci.RegionMmap)
	mmap := info.Flags&pci.RegionMmap != 0 && info.Fd >= 0 && c.peer.MaxMsgFDs >= 1
	if !mmap {
		flags &^= uint32(pci.RegionMmap)
	}
	var capSize uint32
	if mmap && len(info.Sparse) > 0 {
		capSize = capSparseMmapHeader + capSparseMmapArea*uint32(len(info.Sparse))
		flags |= RegionInfoFlagCaps
	}
	need := regionInfoSize + capSize
	b := c.grow(regionInfoSize)
	le.PutUint32(b[0:], need)
	le.PutUint32(b[4:], flags)
	le.PutUint32(b[8:], index)
	le.PutUint64(b[16:], info.Size)
	if capSize > 0 {
		// cap_offset is set even in the short reply below: QEMU 11.1
		// checks it (>= 32) before it looks at argsz and retries.
		le.PutUint32(b[12:], regionInfoSize)
	}
	if v.argsz() < need {
		// Too small for the caps: the struct alone tells the client the
		// size to retry with (QEMU does). No caps, no fd.
		return nil
	}
	if mmap {
		le.PutUint64(b[24:], info.MmapOffset)
		c.outFDs = append(c.outFDs, info.Fd)
	}
	if capSize > 0 {
		cb := c.grow(int(capSize))
		le.PutUint16(cb[0:], CapSparseMmap)
		le.PutUint16(cb[2:], 1) // version
		le.PutUint32(cb[4:], 0) // next
		le.PutUint32(cb[8:], uint32(len(info.Sparse)))
		for i, a := range info.Sparse {
			ab := cb[capSparseMmapHeader+i*capSparseMmapArea:]
			le.PutUint64(ab[0:], a.Offset)
			le.PutUint64(ab[8:], a.Size)
		}
	}
	return nil
}

// cmdGetIRQInfo: argsz 16, flags, index, count.
func (c *conn) cmdGetIRQInfo(p []byte, _ []int) error {
	index := irqInfoReq(p).index()
	if index >= c.numIRQs {
		return badRequest("GET_IRQ_INFO: index %d of %d", index, c.numIRQs)
	}
	info, err := c.f.IRQInfo(index)
	if err != nil {
		return err
	}
	b := c.grow(irqInfoSize)
	le.PutUint32(b[0:], irqInfoSize)
	le.PutUint32(b[4:], uint32(info.Flags))
	le.PutUint32(b[8:], index)
	le.PutUint32(b[12:], info.Count)
	return nil
}

// cmdSetIRQs hands the request and its fds to the function (notes 5.2).
// Fewer fds than count is legal (de-assign); more is not; fds need
// DATA_EVENTFD. Header-only reply.
func (c *conn) cmdSetIRQs(p []byte, fds []int) error {
	v := irqSet(p)
	switch {
	case v.index() >= c.numIRQs:
		closeFDs(fds)
		return badRequest("SET_IRQS: index %d of %d", v.index(), c.numIRQs)
	case len(fds) > 0 && v.flags()&IRQDataEventfd == 0:
		closeFDs(fds)
		return badRequest("SET_IRQS: %d fds without DATA_EVENTFD (flags %#x)", len(fds), v.flags())
	case uint64(len(fds)) > uint64(v.count()):
		closeFDs(fds)
		return badRequest("SET_IRQS: %d fds for count %d", len(fds), v.count())
	}
	var data []byte
	if v.flags()&IRQDataBool != 0 {
		data = v.data()
	}
	return c.f.SetIRQs(v.index(), v.flags(), v.start(), v.count(), fds, data)
}

// checkRegion validates a region access against the region table.
func (c *conn) checkRegion(cmd Command, index uint32, off uint64, count uint32, write bool) error {
	if int64(count) > int64(c.s.cfg.MaxDataXfer) {
		return protocolErr{fmt.Errorf("vfiouser: %v: count %d above max_data_xfer_size %d: %w", cmd, count, c.s.cfg.MaxDataXfer, unix.E2BIG)}
	}
	if index >= uint32(len(c.regions)) {
		return badRequest("%v: region %d of %d", cmd, index, len(c.regions))
	}
	r := c.regions[index]
	if off > r.size || uint64(count) > r.size-off {
		return badRequest("%v: region %d %d@%#x outside its %#x bytes", cmd, index, count, off, r.size)
	}
	need := pci.RegionRead
	if write {
		need = pci.RegionWrite
	}
	if r.flags&need == 0 {
		return badRequest("%v: region %d flags %#x", cmd, index, r.flags)
	}
	return nil
}

// cmdRegionRead replies offset, region, count, data (32 + count bytes).
func (c *conn) cmdRegionRead(p []byte, _ []int) error {
	v := regionAccess(p)
	if err := c.checkRegion(CmdRegionRead, v.region(), v.offset(), v.count(), false); err != nil {
		return err
	}
	b := c.grow(regionAccessSize + int(v.count()))
	copy(b, v[:regionAccessSize])
	return c.f.ReadRegion(v.region(), v.offset(), b[regionAccessSize:])
}

// cmdRegionWrite replies offset, region, count (32 bytes), unless
// NO_REPLY (handled by the caller).
func (c *conn) cmdRegionWrite(p []byte, _ []int) error {
	v := regionAccess(p)
	if err := c.checkRegion(CmdRegionWrite, v.region(), v.offset(), v.count(), true); err != nil {
		return err
	}
	if err := c.f.WriteRegion(v.region(), v.offset(), v.data()); err != nil {
		return err
	}
	copy(c.grow(regionAccessSize), v[:regionAccessSize])
	return nil
}

// cmdWriteMulti performs up to 200 small writes in order (notes 2.4). All
// entries are checked before the first write; the first failing write
// stops the rest. QEMU sends it NO_REPLY; otherwise the reply is the header.
func (c *conn) cmdWriteMulti(p []byte, _ []int) error {
	v := writeMulti(p)
	n := v.n()
	for i := range n {
		e := v.entry(i)
		if err := c.checkRegion(CmdRegionWriteMulti, e.region(), e.offset(), e.count(), true); err != nil {
			return err
		}
	}
	for i := range n {
		e := v.entry(i)
		if err := c.f.WriteRegion(e.region(), e.offset(), multiData(e)); err != nil {
			return err
		}
	}
	return nil
}

// cmdDeviceReset resets the function (not the DMA maps); header-only reply.
func (c *conn) cmdDeviceReset(_ []byte, _ []int) error {
	c.f.Reset()
	return nil
}
