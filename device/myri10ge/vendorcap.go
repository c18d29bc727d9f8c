package myri10ge

import (
	"encoding/binary"
	"sync"
)

// The vendor-specific capability's "read32 window" (§7.5): the driver's
// watchdog uses it, after it finds bus mastering off, to read the
// firmware's reboot status for a log line.
const (
	vendorCapLen    = 0x20
	vendorOffMode   = 0x10 // byte: 3 = read32 mode
	vendorOffData   = 0x14 // dword read: the word at the address
	vendorOffAddr   = 0x18 // dword write: the SRAM address to read
	vendorModeRead  = 0x03
	addrRebootState = 0xFFFFFFF0
)

// vendorWindow implements pci.ConfigHandler for the capability body.
type vendorWindow struct {
	mu           sync.Mutex
	regs         [vendorCapLen]byte // what the guest wrote, by capability offset
	rebootStatus uint32             // what REBOOT_STATUS reads; 0: a clean boot
}

func (v *vendorWindow) WriteConfig(off int, p []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if off >= 0 && off < len(v.regs) {
		copy(v.regs[off:], p)
	}
}

func (v *vendorWindow) ReadConfig(off int, p []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var data [4]byte
	if v.regs[vendorOffMode] == vendorModeRead &&
		binary.LittleEndian.Uint32(v.regs[vendorOffAddr:]) == addrRebootState {
		binary.LittleEndian.PutUint32(data[:], v.rebootStatus)
	}
	// Overlay the data register on whatever part of it p covers.
	for i := range p {
		if r := off + i - vendorOffData; r >= 0 && r < len(data) {
			p[i] = data[r]
		}
	}
}

func (v *vendorWindow) reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.regs = [vendorCapLen]byte{}
}
