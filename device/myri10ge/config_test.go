package myri10ge

import (
	"net"
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	def, err := ParseOptions("myri0", nil)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := ParseOptions("myri0", nil)
	other, _ := ParseOptions("myri1", nil)
	if def.Name != "myri0" || def.Slices != 1 || def.MAC.String() != again.MAC.String() ||
		def.MAC.String() == other.MAC.String() || def.MAC[0] != 0x00 || def.MAC[1] != 0x60 || def.MAC[2] != 0xdd {
		t.Errorf("defaults %+v (again %v, other name %v): want 00:60:dd:..., stable per name, 1 slice", def, again.MAC, other.MAC)
	}
	got, err := ParseOptions("m", map[string]string{"mac": "00:60:dd:00:00:07", "slices": "4", "serial": "42"})
	if err != nil {
		t.Fatal(err)
	}
	if got.MAC.String() != (net.HardwareAddr{0, 0x60, 0xdd, 0, 0, 7}).String() || got.Slices != 4 || got.Serial != 42 || got.PIO != PIOMmap {
		t.Errorf("got %+v", got)
	}
	if m, err := ParseOptions("m", map[string]string{"pio": "trap"}); err != nil || m.PIO != PIOTrap {
		t.Errorf("pio=trap: %v, %v", m.PIO, err)
	}
	for _, tt := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"slices": "0"}, "slices=0: want a number 1..32"},
		{map[string]string{"slices": "33"}, "slices=33"},
		{map[string]string{"slices": "four"}, "slices=four"},
		{map[string]string{"mac": "garbage"}, "mac=garbage: not a MAC address"},
		{map[string]string{"mac": "00:00:00:00:00:00:00:01"}, "not a MAC address"},
		{map[string]string{"mac": "01:00:5e:00:00:01"}, "unicast"},
		{map[string]string{"mac": "00:00:00:00:00:00"}, "non-zero"},
		{map[string]string{"serial": "-1"}, "serial=-1"},
		{map[string]string{"serial": "4294967296"}, "serial=4294967296"},
		{map[string]string{"pio": "wc"}, "pio=wc: want trap or mmap"},
		{map[string]string{"speed": "40g"}, `unknown key "speed" (known: mac, serial, slices, pio)`},
		// In key order, so the first bad key reported is always the same one.
		{map[string]string{"speed": "40g", "pio": "wc", "slices": "0"}, "pio=wc: want trap or mmap"},
	} {
		if _, err := ParseOptions("m", tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one containing %q", tt.opts, err, tt.want)
		}
	}
}
