package myritest

import (
	"bytes"
	"errors"
	"fmt"
)

// EEPROM is what the driver takes from the EEPROM strings (§3.3).
type EEPROM struct {
	MAC         [6]byte // zero when there is no MAC= string
	MACString   string  // the text after MAC=, up to its NUL ("" if absent)
	ProductCode string  // the text after PC= ("" if absent)
	Serial      uint64  // SN=, decimal
	HaveMAC     bool
	HavePC      bool
}

// ErrEEPROM is the driver's "failed to parse eeprom_strings" (probe fails
// with -ENXIO).
var ErrEEPROM = errors.New("myritest: failed to parse eeprom_strings")

// ParseEEPROM parses a 256-byte EEPROM string block the way the driver's
// myri10ge_read_mac_addr does, quirks included:
//   - the last two bytes are forced to 0 first (probe does that);
//   - strings are scanned until an empty one; after a MAC= string the
//     parser looks at the following string for PC= or SN= without
//     skipping it, and then skips one more string, so when MAC= is the
//     last string it reads one byte past the terminating empty string;
//   - each of the six MAC numbers is simple_strtoul(..., 16): an optional
//     "0x", hex digits (none gives 0), the value truncated to a byte, then
//     exactly one separator character skipped, whatever it is;
//   - parsing fails when a number would start within 2 bytes of the end.
//
// A block without MAC= parses fine with a zero MAC, as in the driver (the
// interface then fails to come up with EADDRNOTAVAIL). b shorter than 256
// bytes is zero-extended; longer is cut.
func ParseEEPROM(b []byte) (EEPROM, error) {
	var buf [eepromSize]byte
	copy(buf[:], b)
	buf[eepromSize-2], buf[eepromSize-1] = 0, 0
	var e EEPROM
	at := func(p int) byte {
		if p < 0 || p >= eepromSize {
			return 0 // the driver would read past its array; nothing matches there
		}
		return buf[p]
	}
	has := func(p int, prefix string) bool {
		for i := 0; i < len(prefix); i++ {
			if at(p+i) != prefix[i] {
				return false
			}
		}
		return true
	}
	cstr := func(p int) string {
		if p >= eepromSize {
			return ""
		}
		s := buf[p:]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return string(s)
	}
	const limit = eepromSize
	p := 0
	for p < limit && buf[p] != 0 {
		if has(p, "MAC=") {
			p += 4
			e.MACString = cstr(p)
			e.HaveMAC = true
			for i := range 6 {
				if p+2 > limit {
					return e, fmt.Errorf("%w: MAC= number %d starts at byte %d of %d", ErrEEPROM, i, p, limit)
				}
				v, next := strtoul(buf[:], p, 16)
				e.MAC[i] = byte(v)
				p = next + 1
			}
		}
		if has(p, "PC=") {
			p += 3
			e.ProductCode = cstr(p)
			e.HavePC = true
		}
		if has(p, "SN=") {
			p += 3
			var v uint64
			v, p = strtoul(buf[:], p, 10)
			e.Serial = v
		}
		for p < limit {
			c := buf[p]
			p++
			if c == 0 {
				break
			}
		}
	}
	return e, nil
}

// strtoul is the kernel's simple_strtoul without a sign: for base 16 an
// optional "0x" prefix, then digits of the base; no whitespace skipping.
// It returns the value (wrapping like an unsigned long) and where it
// stopped. Bytes past the end of b read as 0.
func strtoul(b []byte, p, base int) (uint64, int) {
	at := func(i int) byte {
		if i < len(b) {
			return b[i]
		}
		return 0
	}
	if base == 16 && at(p) == '0' && (at(p+1)|0x20) == 'x' {
		p += 2
	}
	var v uint64
	for {
		c := at(p)
		var digit int
		switch {
		case c >= '0' && c <= '9':
			digit = int(c - '0')
		case c|0x20 >= 'a' && c|0x20 <= 'f':
			digit = int(c|0x20-'a') + 10
		default:
			return v, p
		}
		if digit >= base {
			return v, p
		}
		v = v*uint64(base) + uint64(digit)
		p++
	}
}

// parseVersion is sscanf(s, "%d.%d.%d", &major, &minor, &tiny): each %d
// skips white space and takes an optional sign and decimal digits; parsing
// stops at the first mismatch and the fields not reached keep their old
// values (the driver's are in its long-lived private struct).
func parseVersion(s string, v *[3]int) {
	p := 0
	for i := range 3 {
		if i > 0 {
			if p >= len(s) || s[p] != '.' {
				return
			}
			p++
		}
		for p < len(s) && (s[p] == ' ' || (s[p] >= '\t' && s[p] <= '\r')) {
			p++
		}
		neg := false
		if p < len(s) && (s[p] == '+' || s[p] == '-') {
			neg = s[p] == '-'
			p++
		}
		start, n := p, 0
		for p < len(s) && s[p] >= '0' && s[p] <= '9' {
			n = n*10 + int(s[p]-'0')
			p++
		}
		if p == start {
			return
		}
		if neg {
			n = -n
		}
		v[i] = n
	}
}
