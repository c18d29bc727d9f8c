package myripair

import (
	"fmt"
	"strconv"
	"strings"
)

// LogLine is one logrus text line of the server: its key=value fields,
// with quoted values unquoted.
type LogLine map[string]string

// ParseLogLine splits a logrus text line (time="..." level=info msg="..."
// key=value ...) into its fields; ok is false for a line that is not one.
func ParseLogLine(line string) (LogLine, bool) {
	out := LogLine{}
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			return nil, false
		}
		key, rest := s[:eq], s[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, false
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			val, rest, _ = strings.Cut(rest, " ")
		}
		out[key] = val
		s = rest
	}
	_, hasLevel := out["level"]
	return out, hasLevel
}

// Problems returns the server's lines at warning level or worse: something
// was lost (error) or a client or guest did something wrong (warning).
func Problems(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		l, ok := ParseLogLine(line)
		if !ok {
			continue
		}
		switch l["level"] {
		case "warning", "error", "fatal", "panic":
			out = append(out, line)
		}
	}
	return out
}

// Counters are one NIC's counters, from the line its detach logs (the
// device/myri10ge Stats fields, e.g. rx_bytes, guest_errors).
type Counters map[string]uint64

// NICCounters returns the counters of each time device detached (one per
// QEMU that connected and went away), in log order.
func NICCounters(log, device string) []Counters {
	var out []Counters
	for _, line := range strings.Split(log, "\n") {
		l, ok := ParseLogLine(line)
		if !ok || l["msg"] != "NIC detached" || l["device"] != device {
			continue
		}
		c := Counters{}
		for k, v := range l {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				c[k] = n
			}
		}
		out = append(out, c)
	}
	return out
}

// String renders the counters that tell what crossed the NIC.
func (c Counters) String() string {
	return fmt.Sprintf("commands=%d tx_frames=%d tx_bytes=%d rx_frames=%d rx_bytes=%d interrupts=%d tx_dropped=%d rx_dropped=%d guest_errors=%d dma_errors=%d handoffs=%d",
		c["commands"], c["tx_frames"], c["tx_bytes"], c["rx_frames"], c["rx_bytes"], c["interrupts"],
		c["tx_dropped"], c["rx_dropped"], c["guest_errors"], c["dma_errors"], c["handoffs"])
}
