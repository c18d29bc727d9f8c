// Package guest gives guest test programs user-space access to a PCI
// function through sysfs: discovery, config space, capabilities, BAR mmaps,
// and DMA buffers with their guest physical addresses.
package guest

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// SysfsPCI is where the kernel lists PCI functions.
const SysfsPCI = "/sys/bus/pci/devices"

// PCIDev is one PCI function as sysfs shows it.
type PCIDev struct {
	Addr      string // 0000:01:00.0
	Dir       string // sysfs directory
	Vendor    uint16
	Device    uint16
	SubVendor uint16
	SubDevice uint16
	Class     uint32 // 24-bit class code
	Revision  uint8
}

func (d PCIDev) String() string {
	return fmt.Sprintf("%s %04x:%04x class=%#06x rev=%d", d.Addr, d.Vendor, d.Device, d.Class, d.Revision)
}

func readHex(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 64)
}

// ListPCI returns every PCI function in sysfs, sorted by address. root is
// normally SysfsPCI.
func ListPCI(root string) ([]PCIDev, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	var out []PCIDev
	for _, e := range entries {
		d := PCIDev{Addr: e.Name(), Dir: filepath.Join(root, e.Name())}
		vals := []struct {
			file string
			set  func(uint64)
		}{
			{"vendor", func(v uint64) { d.Vendor = uint16(v) }},
			{"device", func(v uint64) { d.Device = uint16(v) }},
			{"subsystem_vendor", func(v uint64) { d.SubVendor = uint16(v) }},
			{"subsystem_device", func(v uint64) { d.SubDevice = uint16(v) }},
			{"class", func(v uint64) { d.Class = uint32(v) }},
			{"revision", func(v uint64) { d.Revision = uint8(v) }},
		}
		for _, v := range vals {
			x, err := readHex(filepath.Join(d.Dir, v.file))
			if err != nil {
				return nil, fmt.Errorf("guest: %s: %w", d.Addr, err)
			}
			v.set(x)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out, nil
}

// FindPCI returns the functions with the given IDs.
func FindPCI(root string, vendor, device uint16) ([]PCIDev, error) {
	all, err := ListPCI(root)
	if err != nil {
		return nil, err
	}
	var out []PCIDev
	for _, d := range all {
		if d.Vendor == vendor && d.Device == device {
			out = append(out, d)
		}
	}
	return out, nil
}

// Resource flags (include/linux/ioport.h).
const (
	ResourceIO       = 0x00000100
	ResourceMem      = 0x00000200
	ResourcePrefetch = 0x00002000
	ResourceMem64    = 0x00100000
)

// Resource is one line of the sysfs "resource" file.
type Resource struct {
	Start, End, Flags uint64
}

// Size is the length of the range, 0 if unused.
func (r Resource) Size() uint64 {
	if r.Start == 0 && r.End == 0 {
		return 0
	}
	return r.End - r.Start + 1
}

// Resources parses the "resource" file: BARs 0-5, the ROM, then bridge
// windows.
func (d PCIDev) Resources() ([]Resource, error) {
	b, err := os.ReadFile(filepath.Join(d.Dir, "resource"))
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	var out []Resource
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("guest: %s resource line %d: %q", d.Addr, i, line)
		}
		var r Resource
		for j, p := range []*uint64{&r.Start, &r.End, &r.Flags} {
			v, err := strconv.ParseUint(strings.TrimPrefix(f[j], "0x"), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("guest: %s resource line %d: %w", d.Addr, i, err)
			}
			*p = v
		}
		out = append(out, r)
	}
	return out, nil
}

// ReadConfig reads config space at off (root sees all 4096 bytes of a
// PCIe function; others only the first 64).
func (d PCIDev) ReadConfig(off int64, p []byte) error {
	f, err := os.Open(filepath.Join(d.Dir, "config"))
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if n != len(p) {
		return fmt.Errorf("guest: %s config read %d@%#x: got %d bytes: %v", d.Addr, len(p), off, n, err)
	}
	return nil
}

// WriteConfig writes config space at off.
func (d PCIDev) WriteConfig(off int64, p []byte) error {
	f, err := os.OpenFile(filepath.Join(d.Dir, "config"), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		return fmt.Errorf("guest: %s config write %d@%#x: %w", d.Addr, len(p), off, err)
	}
	return nil
}

// Config16 reads a little-endian 16-bit config register.
func (d PCIDev) Config16(off int64) (uint16, error) {
	var b [2]byte
	if err := d.ReadConfig(off, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b[:]), nil
}

// Config32 reads a little-endian 32-bit config register.
func (d PCIDev) Config32(off int64) (uint32, error) {
	var b [4]byte
	if err := d.ReadConfig(off, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// SetConfig16 writes a little-endian 16-bit config register.
func (d PCIDev) SetConfig16(off int64, v uint16) error {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	return d.WriteConfig(off, b[:])
}

// Config space offsets used here (PCI Local Bus 3.0, 6.1), typed as
// Config16 and friends take them.
const (
	ConfigCommand    int64 = 0x04
	ConfigStatus     int64 = 0x06
	ConfigCapPointer int64 = 0x34
)

// COMMAND and STATUS register bits (PCI 3.0, 6.2.2 and 6.2.3).
const (
	CommandMemory  = 1 << 1
	CommandMaster  = 1 << 2
	CommandINTxOff = 1 << 10
	StatusCapList  = 1 << 4
)

// Capability IDs (PCI Code and ID Assignment, section 2), typed as
// Cap.ID holds them.
const (
	CapIDPM   uint8 = 0x01
	CapIDMSI  uint8 = 0x05
	CapIDPCIe uint8 = 0x10
	CapIDMSIX uint8 = 0x11
)

// MSI-X capability (PCI 3.0, 6.8.2): register offsets from the
// capability's start, and the Table Size field of Message Control.
const (
	MSIXControl      int64  = 0x02
	MSIXTable        int64  = 0x04
	MSIXPBA          int64  = 0x08
	MSIXTableSizeMsk uint16 = 0x7ff
)

// Cap is one capability in the standard list.
type Cap struct {
	ID  uint8
	Off int64
}

// Caps walks the standard capability list. It fails on a pointer outside
// 0x40..0xfc, a misaligned one, or a loop.
func (d PCIDev) Caps() ([]Cap, error) {
	status, err := d.Config16(ConfigStatus)
	if err != nil {
		return nil, err
	}
	if status&StatusCapList == 0 {
		return nil, nil
	}
	var cfg [256]byte
	if err := d.ReadConfig(0, cfg[:]); err != nil {
		return nil, err
	}
	var out []Cap
	seen := map[int]bool{}
	for p := int(cfg[ConfigCapPointer]); p != 0; p = int(cfg[p+1]) {
		if p < 0x40 || p > 0xfc || p%4 != 0 {
			return out, fmt.Errorf("guest: %s: bad capability pointer %#x", d.Addr, p)
		}
		if seen[p] {
			return out, fmt.Errorf("guest: %s: capability list loops at %#x", d.Addr, p)
		}
		seen[p] = true
		out = append(out, Cap{ID: cfg[p], Off: int64(p)})
	}
	return out, nil
}

// FindCap returns the first capability with id.
func FindCap(caps []Cap, id uint8) (Cap, bool) {
	for _, c := range caps {
		if c.ID == id {
			return c, true
		}
	}
	return Cap{}, false
}

// SetCommand sets and clears COMMAND register bits and returns the value
// read back.
func (d PCIDev) SetCommand(set, clear uint16) (uint16, error) {
	cmd, err := d.Config16(ConfigCommand)
	if err != nil {
		return 0, err
	}
	if err := d.SetConfig16(ConfigCommand, (cmd|set)&^clear); err != nil {
		return 0, err
	}
	return d.Config16(ConfigCommand)
}
