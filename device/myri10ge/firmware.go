package myri10ge

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/fault"
)

// The "firmware" the driver sees is just the SRAM image at power-on: a
// header pointer at 0x3C, a firmware header it adopts (§3.5) and the
// EEPROM strings it parses for the MAC (§3.3), at the offsets bar0.go
// lists. Everything else the real firmware does is the Go code of this
// package.
// fwVersion is the version string of the running firmware's header.
const fwVersion = "1.4.57 -- myriemu"

// FirmwareNames are the files the driver asks for (§3.4). With a file
// present the driver loads it instead of adopting the running firmware;
// the multi-slice (RSS) mode only works that way (§1.4, §9).
var FirmwareNames = []string{
	"myri10ge_eth_z8e.dat",
	"myri10ge_ethp_z8e.dat",
	"myri10ge_rss_eth_z8e.dat",
	"myri10ge_rss_ethp_z8e.dat",
}

// putHeader writes a valid mcp_gen_header at b[0:abi.HdrSize].
func putHeader(b []byte) {
	be := binary.BigEndian
	clear(b[:abi.HdrSize])
	be.PutUint32(b[abi.HdrOffLength:], abi.HdrSize)
	be.PutUint32(b[abi.HdrOffType:], abi.MCPTypeETH)
	copy(b[abi.HdrOffVersion:abi.HdrOffVersion+abi.HdrVersionLen-1], fwVersion)
	be.PutUint32(b[abi.HdrOffSRAMSize:], sramSize)
	be.PutUint32(b[abi.HdrOffStringSpecs:], offEEPROMStrings)
	be.PutUint32(b[abi.HdrOffStringLen:], abi.EEPROMStringsSize)
}

// eepromStrings returns the 256-byte EEPROM string block: serial number,
// MAC and product code, NUL-terminated, ended by an empty string and
// zero-filled (the driver's parser may run one string past the end).
// MAC= is not last, so the parser's look-ahead stays in the block.
func eepromStrings(mac net.HardwareAddr, serial uint32) []byte {
	b := make([]byte, abi.EEPROMStringsSize)
	s := fmt.Sprintf("SN=%d\x00MAC=%s\x00PC=10G-PCIE-8B-S\x00\x00", serial, mac)
	copy(b, s)
	return b
}

// putSRAMImage lays the power-on SRAM contents into bar0.
func putSRAMImage(bar0 []byte, mac net.HardwareAddr, serial uint32) {
	binary.BigEndian.PutUint32(bar0[abi.OffHeaderPtr:], offHeader)
	putHeader(bar0[offHeader:])
	copy(bar0[offEEPROMStrings:], eepromStrings(mac, serial))
}

// FirmwareImage returns a firmware file the driver accepts (§3.8): 256
// bytes of our own making (no Myricom code), a multiple of 8 so the
// driver's 8-byte PIO copy loses no tail, with the header pointer at 0x3C
// and a valid header at 0x40. The device acknowledges the handoff without
// running it: its firmware is this package.
func FirmwareImage() []byte {
	const hdrOff = 0x40
	b := make([]byte, 256)
	binary.BigEndian.PutUint32(b[abi.OffHeaderPtr:], hdrOff)
	putHeader(b[hdrOff:])
	return b
}

// confirmLocked DMAs the 0xFFFFFFFF confirmation word the driver polls
// for after a handoff or dummy RDMA (§3.6, §3.7).
func (n *NIC) confirmLocked(block uint64, what string) {
	if n.host.Fault.Armed(fault.DMA) && n.confirmMissingLocked(what) {
		return
	}
	addr := host64(n.be32(block), n.be32(block+4))
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], n.be32(block+8))
	n.dmaStoreLocked(nil, what, addr, w)
}

// handoffLocked acknowledges a firmware file load (§3.6). The file's code
// is not run: this package is the firmware. The driver expects a board
// that restarted, so the state resets as for CMD_RESET.
func (n *NIC) handoffLocked(int, uint64, int) {
	n.stats.Handoffs++
	n.resetFirmwareLocked()
	n.confirmLocked(abi.OffHandoff, "handoff confirm")
	n.log.WithField("length", n.be32(abi.OffHandoff+0x10)).Info("firmware handoff")
}

// dummyRDMALocked acknowledges the dummy RDMA switch (§3.7), on or off
// alike: the periodic host reads it would enable exist to work around
// chipsets we do not have.
func (n *NIC) dummyRDMALocked(int, uint64, int) {
	n.confirmLocked(abi.OffDummyRDMA, "dummy RDMA confirm")
}
