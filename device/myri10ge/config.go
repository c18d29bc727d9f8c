package myri10ge

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"

	"github.com/myriemu/myriemu/internal/devkey"
)

// Keys are the keys ParseOptions takes, in the order help lists them.
var Keys = keyTable.Keys()

// keyTable is the Myri-10G's key table: help text and how each value sets a Config.
var keyTable = devkey.Table[Config]{Kind: "myri10ge", Fields: []devkey.Field[Config]{
	{Name: "mac", Help: "permanent MAC address, unicast (default: 00:60:dd and three bytes hashed from the name, so stable per name)",
		Set: setMAC},
	{Name: "serial", Help: "EEPROM serial number, 0..4294967295 (default: hashed from the name)",
		Set: setSerial},
	{Name: "slices", Help: fmt.Sprintf("RSS slices and MSI-X vectors offered, 1..%d (default 1)", MaxSlices),
		Set: devkey.Int(1, MaxSlices, fmt.Sprintf("want a number 1..%d", MaxSlices), func(c *Config, n int) { c.Slices = n })},
	{Name: "pio", Help: "mmap (default): send and receive rings mmapped into the guest and polled by the device (QEMU then turns posted writes off by itself); trap: every BAR0 store is a message, for comparison (needs the QEMU property x-no-posted-writes=on, see the device README)",
		Set: devkey.OneOf(func(c *Config, m PIOMode) { c.PIO = m },
			devkey.Choice[PIOMode]{Name: "trap", Value: PIOTrap}, devkey.Choice[PIOMode]{Name: "mmap", Value: PIOMmap})},
}}

func setMAC(c *Config, v string) error {
	mac, err := net.ParseMAC(v)
	if err != nil || len(mac) != 6 {
		return errors.New("not a MAC address (want six bytes, e.g. 00:60:dd:00:00:01)")
	}
	if mac[0]&1 != 0 || [6]byte(mac) == [6]byte{} {
		return errors.New("want a unicast, non-zero address")
	}
	c.MAC = mac
	return nil
}

func setSerial(c *Config, v string) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return errors.New("want a number 0..4294967295")
	}
	c.Serial = uint32(n)
	return nil
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
	if err := keyTable.Parse(&cfg, opts); err != nil {
		return cfg, err
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
