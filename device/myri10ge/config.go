package myri10ge

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Key is a --device key of the Myri-10G and its help text.
type Key struct{ Name, Help string }

// Keys are the keys ParseOptions takes, in the order help lists them.
var Keys = []Key{
	{"mac", "permanent MAC address, unicast (default: 00:60:dd and three bytes hashed from the name, so stable per name)"},
	{"serial", "EEPROM serial number, 0..4294967295 (default: hashed from the name)"},
	{"slices", fmt.Sprintf("RSS slices and MSI-X vectors offered, 1..%d (default 1)", MaxSlices)},
	{"pio", "mmap (default): send and receive rings mmapped into the guest and polled by the device (QEMU then turns posted writes off by itself); trap: every BAR0 store is a message, for comparison (needs the QEMU property x-no-posted-writes=on, see the device README)"},
}

// ParseOptions returns the Config of a NIC named name from its key=value
// options (see Keys); the defaults are derived from the name, so they are
// stable across runs. Port and Log are the caller's to fill. An unknown
// key or a bad value is an error naming the key and what it takes.
func ParseOptions(name string, opts map[string]string) (Config, error) {
	h := fnv.New32a()
	h.Write([]byte(name))
	sum := h.Sum32()
	cfg := Config{
		Name:   name,
		MAC:    net.HardwareAddr{0x00, 0x60, 0xdd, byte(sum >> 16), byte(sum >> 8), byte(sum)},
		Serial: sum % 1000000,
		Slices: 1,
		PIO:    PIOMmap,
	}
	// In key order: the first bad key reported is always the same one.
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := opts[k]
		switch k {
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return cfg, fmt.Errorf("mac=%s: not a MAC address (want six bytes, e.g. 00:60:dd:00:00:01)", v)
			}
			if mac[0]&1 != 0 || [6]byte(mac) == [6]byte{} {
				return cfg, fmt.Errorf("mac=%s: want a unicast, non-zero address", v)
			}
			cfg.MAC = mac
		case "serial":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return cfg, fmt.Errorf("serial=%s: want a number 0..4294967295", v)
			}
			cfg.Serial = uint32(n)
		case "slices":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxSlices {
				return cfg, fmt.Errorf("slices=%s: want a number 1..%d", v, MaxSlices)
			}
			cfg.Slices = n
		case "pio":
			switch v {
			case "trap":
				cfg.PIO = PIOTrap
			case "mmap":
				cfg.PIO = PIOMmap
			default:
				return cfg, fmt.Errorf("pio=%s: want trap or mmap", v)
			}
		default:
			names := make([]string, len(Keys))
			for i, key := range Keys {
				names[i] = key.Name
			}
			return cfg, fmt.Errorf("unknown key %q (known: %s)", k, strings.Join(names, ", "))
		}
	}
	if err := cfg.validateOptions(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// validateOptions checks what ParseOptions sets.
func (c Config) validateOptions() error {
	if len(c.MAC) != 6 {
		return fmt.Errorf("myri10ge: MAC %q: need 6 bytes", c.MAC)
	}
	if c.MAC[0]&1 != 0 || [6]byte(c.MAC) == [6]byte{} {
		return fmt.Errorf("myri10ge: MAC %s: need a unicast, non-zero address", c.MAC)
	}
	if c.Slices < 1 || c.Slices > MaxSlices {
		return fmt.Errorf("myri10ge: %d slices: need 1..%d", c.Slices, MaxSlices)
	}
	return nil
}
