package myritest

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseEEPROM(t *testing.T) {
	mac := [6]byte{0x00, 0x60, 0xdd, 0x47, 0x00, 0x01}
	for _, tc := range []struct {
		name string
		in   string
		want EEPROM
		err  bool
	}{
		{"recommended", "SN=123456\x00MAC=00:60:dd:47:00:01\x00PC=10G-PCIE-8B-S\x00\x00",
			EEPROM{MAC: mac, MACString: "00:60:dd:47:00:01", ProductCode: "10G-PCIE-8B-S", Serial: 123456, HaveMAC: true, HavePC: true}, false},
		{"MAC last: one string past the terminator", "SN=7\x00MAC=00:60:dd:47:00:01\x00\x00",
			EEPROM{MAC: mac, MACString: "00:60:dd:47:00:01", Serial: 7, HaveMAC: true}, false},
		{"any separator", "MAC=0-60-DD-47-0-1\x00\x00",
			EEPROM{MAC: mac, MACString: "0-60-DD-47-0-1", HaveMAC: true}, false},
		{"0x prefixes and truncation to a byte", "MAC=0x00:0x60:1dd:47:00:01\x00\x00",
			EEPROM{MAC: mac, MACString: "0x00:0x60:1dd:47:00:01", HaveMAC: true}, false},
		{"missing digits give 0", "MAC=::::::\x00\x00",
			EEPROM{MACString: "::::::", HaveMAC: true}, false},
		{"no MAC is no error", "SN=1\x00PC=X\x00\x00",
			EEPROM{ProductCode: "X", Serial: 1, HavePC: true}, false},
		// After MAC= the parser looks at the next string without
		// skipping it, then skips it: a second MAC= there is never parsed.
		{"second MAC right after MAC is skipped", "MAC=00:60:dd:47:00:01\x00MAC=11:11:11:11:11:11\x00\x00",
			EEPROM{MAC: mac, MACString: "00:60:dd:47:00:01", HaveMAC: true}, false},
		{"PC right after MAC is parsed in the same step", "MAC=00:60:dd:47:00:01\x00PC=P\x00SN=9\x00\x00",
			EEPROM{MAC: mac, MACString: "00:60:dd:47:00:01", ProductCode: "P", Serial: 9, HaveMAC: true, HavePC: true}, false},
		{"SN with trailing text", "SN=12ab\x00\x00", EEPROM{Serial: 12}, false},
	} {
		got, err := ParseEEPROM([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v, want error %v", tc.name, err, tc.err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestParseEEPROMLimit: the driver gives up when a MAC number would start
// within 2 bytes of the 256-byte limit; the last 2 bytes are forced to 0.
func TestParseEEPROMLimit(t *testing.T) {
	place := func(at int, s string) []byte {
		b := make([]byte, eepromSize)
		for i := range at {
			b[i] = 'x' // one long string before
		}
		b[at-1] = 0
		copy(b[at:], s)
		return b
	}
	// MAC= at 235: numbers at 239, 242, ..., 254; the 6th starts at 254
	// and 254+2 <= 256, but its text was forced to NUL: parsed as 0.
	got, err := ParseEEPROM(place(235, "MAC=00:60:dd:47:00:01"))
	if err != nil || got.MAC != [6]byte{0, 0x60, 0xdd, 0x47, 0, 0} {
		t.Errorf("MAC at 235: %x, %v; want 00:60:dd:47:00:00 (last digits forced to 0)", got.MAC, err)
	}
	// MAC= at 236: the 6th number would start at 255.
	_, err = ParseEEPROM(place(236, "MAC=00:60:dd:47:00:01"))
	if !errors.Is(err, ErrEEPROM) || !strings.Contains(err.Error(), "number 5") {
		t.Errorf("MAC at 236: %v, want ErrEEPROM at number 5", err)
	}
	// Bytes 254 and 255 never matter.
	a := place(100, "MAC=00:60:dd:47:00:01")
	b := append([]byte(nil), a...)
	b[254], b[255] = 'Z', 'Z'
	ea, _ := ParseEEPROM(a)
	eb, _ := ParseEEPROM(b)
	if ea != eb {
		t.Errorf("bytes 254/255 changed the result: %+v vs %+v", ea, eb)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		old  [3]int
		want [3]int
	}{
		{"1.4.57 -- myriemu", [3]int{}, [3]int{1, 4, 57}},
		{" 1. 4.-2", [3]int{}, [3]int{1, 4, -2}},
		{"1.4", [3]int{9, 9, 9}, [3]int{1, 4, 9}}, // fields not reached keep their values
		{"v1.4.5", [3]int{9, 9, 9}, [3]int{9, 9, 9}},
	} {
		v := tc.old
		parseVersion(tc.in, &v)
		if v != tc.want {
			t.Errorf("parseVersion(%q) = %v, want %v", tc.in, v, tc.want)
		}
	}
}

// FuzzParseEEPROM: never panics, ignores bytes 254 and 255 and anything
// past 256, and a MAC string it reports lies inside the block.
func FuzzParseEEPROM(f *testing.F) {
	f.Add([]byte("SN=123456\x00MAC=00:60:dd:47:00:01\x00PC=10G-PCIE-8B-S\x00\x00"))
	f.Add([]byte("MAC=0x00:0x60:1dd:47:00:01\x00\x00"))
	f.Add(append(make([]byte, 230), "MAC=00:60:dd:47:00:01"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEEPROM(b)
		var blk [eepromSize]byte
		copy(blk[:], b)
		blk[254], blk[255] = 0xff, 0xff
		e2, err2 := ParseEEPROM(append(blk[:], 1, 2, 3))
		if e != e2 || (err == nil) != (err2 == nil) {
			t.Fatalf("bytes >= 254 changed the result: %+v/%v vs %+v/%v", e, err, e2, err2)
		}
		if e.HaveMAC && !strings.Contains(string(blk[:254]), "MAC="+e.MACString) {
			t.Fatalf("MAC string %q not in the block", e.MACString)
		}
	})
}
