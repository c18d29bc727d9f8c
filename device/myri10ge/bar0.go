package myri10ge

import (
	"encoding/binary"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/sirupsen/logrus"
)

// BAR0 is 16 MiB of SRAM and PIO windows (§2). Stores are kept as memory;
// the stores listed in bar0Triggers also have a side effect (§2.4). This
// file is the whole map: every BAR0 offset the device knows is here or,
// for the few the driver hard-codes (§2.1), in package abi; README.md's
// BAR0 table lists bar0Triggers row by row.

// The layout the device hands the driver by command (§2.2). Every per-slice area is spaced for MaxSlices slices.
const (
	offHeader        = 0x000100 // where the running firmware's header lives
	offFWStaging     = 0x100000 // firmware file staging area (plain RAM)
	offEEPROMStrings = 0x1DFE00 // header.string_specs: the driver's "sram_size" (§12.3)
	sramSize         = 0x200000 // header.sram_size; BAR0 below it is plain SRAM

	sendRingBase   = 0x200000 // + slice*sendRingStride
	sendRingStride = 0x4000
	smallRingBase  = 0x300000 // + slice*rxRingStride
	bigRingBase    = 0x340000 // + slice*rxRingStride
	rxRingStride   = 0x1000
	offSendGo      = 0x380000 // + slice*sendGoStride: multi-queue "go" doorbell
	offSendStop    = 0x3C0000 // + slice*sendGoStride: multi-queue "stop" doorbell
	sendGoStride   = 64
	irqAckBase     = 0x3E0000 // claim pair of slice s at +irqAckStride*s
	irqAckStride   = 8
	irqDeassertOff = 0x3E0400
	intrCoalOff    = 0x3E0408
	rssTableOff    = 0x3E0800
	rssTableMax    = 256 // SET_RSS_TABLE_SIZE's limit

	sendRingEntries = 1024 // GET_SEND_RING_SIZE = 16 KiB
	rxRingEntries   = 512  // GET_RX_RING_SIZE = 4 KiB; both rings
	sendRingBytes   = sendRingEntries * abi.SendDescSize
	rxRingBytes     = rxRingEntries * abi.RecvDescSize
)

func sendRingOff(s int) uint64  { return sendRingBase + uint64(s)*sendRingStride }
func smallRingOff(s int) uint64 { return smallRingBase + uint64(s)*rxRingStride }
func bigRingOff(s int) uint64   { return bigRingBase + uint64(s)*rxRingStride }

// fireAny marks a trigger whose every store has its side effect.
const fireAny = -1

// trigger is one row of the BAR0 map: count instances of stride bytes from
// base (one per slice for the per-slice windows). A store lying inside
// [base, base+count*stride) belongs to the row; so does a store that covers
// the row's fire byte without lying inside. The handler runs for a store
// of an instance that exists and, when fire is not fireAny, covers byte
// fire of its instance: the driver's last store into a block is the one
// that covers its last byte (§2.4). A nil handler makes the row plain
// memory.
type trigger struct {
	base, stride uint64
	count        int
	fire         int64
	name         string
	// handler gets the instance (slice) and the store's offset and size
	// relative to the instance's base.
	handler func(n *NIC, inst int, rel uint64, size int)
}

// bar0Triggers is the BAR0 map, in address order. The first row that owns
// a store gets it; a store no row owns is counted (Stats.UnclaimedWrites)
// and logged at Trace level.
var bar0Triggers = [...]trigger{
	{0, sramSize, 1, fireAny, "SRAM: header, firmware staging, EEPROM strings", nil},
	{sendRingBase, sendRingStride, MaxSlices, fireAny, "send ring", (*NIC).sendRingWrittenLocked},
	{smallRingBase, rxRingStride, MaxSlices, fireAny, "small receive ring", (*NIC).smallRingWrittenLocked},
	{bigRingBase, rxRingStride, MaxSlices, fireAny, "big receive ring", (*NIC).bigRingWrittenLocked},
	{offSendGo, sendGoStride, MaxSlices, fireAny, "SEND_GO", (*NIC).sendGoLocked},
	{offSendStop, sendGoStride, MaxSlices, fireAny, "SEND_STOP", nil},
	{irqAckBase, irqAckStride, MaxSlices, fireAny, "IRQ claim words", (*NIC).claimLocked},
	{irqDeassertOff, 4, 1, 0, "INTx deassert", (*NIC).deassertLocked},
	{intrCoalOff, 4, 1, 0, "interrupt coalescing delay", (*NIC).coalDelayWrittenLocked},
	{rssTableOff, rssTableMax, 1, fireAny, "RSS indirection table", nil},
	{abi.OffCmd, abi.BlockSize, 1, abi.BlockSize - 1, "command mailbox", (*NIC).commandLocked},
	{abi.OffHandoff, abi.BlockSize, 1, abi.BlockSize - 1, "firmware handoff", (*NIC).handoffLocked},
	{abi.OffDummyRDMA, abi.BlockSize, 1, abi.BlockSize - 1, "dummy RDMA", (*NIC).dummyRDMALocked},
}

// covers reports whether a write of n bytes at off touches byte b.
func covers(off uint64, n int, b uint64) bool { return off <= b && b < off+uint64(n) }

// owns reports whether t owns a store of size bytes at off.
func (t *trigger) owns(off uint64, size int) bool {
	end := off + uint64(size)
	if off >= t.base && end <= t.base+uint64(t.count)*t.stride {
		return true
	}
	return t.fire != fireAny && covers(off, size, t.base+uint64(t.fire))
}

// bar0WrittenLocked runs the side effect of a BAR0 store whose bytes are
// already in n.bar0 (§2.4).
func (n *NIC) bar0WrittenLocked(off uint64, size int) {
	for i := range bar0Triggers {
		t := &bar0Triggers[i]
		if !t.owns(off, size) {
			continue
		}
		inst, rel := 0, uint64(0)
		if off >= t.base { // else a store from below that covers the fire byte
			inst = int((off - t.base) / t.stride)
			rel = off - t.base - uint64(inst)*t.stride
		}
		if inst >= len(n.slices) {
			break // the window of a slice this NIC does not have
		}
		fires := t.fire == fireAny || covers(off, size, t.base+uint64(inst)*t.stride+uint64(t.fire))
		if t.handler != nil && fires {
			t.handler(n, inst, rel, size)
		}
		return
	}
	n.stats.UnclaimedWrites++
	if n.log.Logger.IsLevelEnabled(logrus.TraceLevel) {
		n.log.WithFields(logrus.Fields{"off": off, "len": size}).Trace("BAR0 store outside every window")
	}
}

// sendGoLocked is SEND_GO (§5.7), a hint for a polling firmware: rings are
// processed at their doorbell, so a GO only prompts a rescan. SEND_STOP
// has no effect at all.
func (n *NIC) sendGoLocked(s int, _ uint64, _ int) {
	n.transmitLocked(n.slices[s])
}

// be32 reads a big-endian word of BAR0.
func (n *NIC) be32(off uint64) uint32 { return binary.BigEndian.Uint32(n.bar0[off:]) }
