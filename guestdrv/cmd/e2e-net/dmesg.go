package main

import (
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// kmsg is one kernel log record from /dev/kmsg.
type kmsg struct {
	Level int // 0 emerg .. 7 debug
	Seq   uint64
	Usec  uint64
	Text  string
}

func (m kmsg) String() string {
	return fmt.Sprintf("<%d>[%5d.%06d] %s", m.Level, m.Usec/1e6, m.Usec%1e6, m.Text)
}

// parseKmsg parses one /dev/kmsg record: "prio,seq,usec,flags[,...];text"
// followed by optional " KEY=value" dictionary lines.
func parseKmsg(rec string) (kmsg, error) {
	head, rest, ok := strings.Cut(rec, ";")
	if !ok {
		return kmsg{}, fmt.Errorf("kmsg record without ';': %q", rec)
	}
	f := strings.Split(head, ",")
	if len(f) < 3 {
		return kmsg{}, fmt.Errorf("kmsg record header %q", head)
	}
	prio, err1 := strconv.Atoi(f[0])
	seq, err2 := strconv.ParseUint(f[1], 10, 64)
	usec, err3 := strconv.ParseUint(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return kmsg{}, fmt.Errorf("kmsg record header %q: %w", head, err)
	}
	text, _, _ := strings.Cut(rest, "\n")
	return kmsg{Level: prio & 7, Seq: seq, Usec: usec, Text: text}, nil
}

// readKmsg reads every record in the kernel log buffer.
func readKmsg() ([]kmsg, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/kmsg: %w", err)
	}
	defer unix.Close(fd)
	var out []kmsg
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out, nil
		case errors.Is(err, unix.EPIPE):
			continue // overwritten records: the next read goes on
		case err != nil:
			return out, fmt.Errorf("read /dev/kmsg: %w", err)
		}
		m, err := parseKmsg(string(buf[:n]))
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

// adoptAllowlist is every warning the myri10ge driver and the firmware
// loader print, by design, when the driver adopts the firmware running on
// the NIC because no firmware file exists (the shared device interface
// reference, 3.5): the announcement of adoption, not faults. Matched
// exactly, after the "myri10ge BUS: " device prefix.
var adoptAllowlist = []string{
	// Debian's firmware loader logs each missing file name it tries
	// (plain, .zst, .xz) at info level.
	"firmware: failed to load myri10ge_eth_z8e.dat (-2)",
	"Direct firmware load for myri10ge_eth_z8e.dat failed with error -2",
	"Unable to load myri10ge_eth_z8e.dat firmware image via hotplug",
	"hotplug firmware loading failed",
	"Successfully adopted running firmware",
	"Using firmware currently running on NIC.  For optimal",
	"performance consider loading optimized firmware",
	"via hotplug",
}

// devPrefix is dev_printk's "driver bus-id: " in front of a device's line.
var devPrefix = regexp.MustCompile(`^myri10ge [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]: `)

// badText marks a line as a timeout, failure or warning whatever its log
// level.
var badText = regexp.MustCompile(`(?i)timed? ?out|fail|stuck|warn|\bbug\b|error|call trace|csum|oops|panic|never got|unable|cut here|taint|refused|invalid`)

// dmesgVerdict is what a kernel log says from the driver's load on.
type dmesgVerdict struct {
	Scope   []kmsg         // from the first myri10ge line on
	Before  []kmsg         // warnings or worse before it (boot)
	Bad     []kmsg         // warning, failure or timeout lines in scope
	Allowed map[string]int // allowlisted adopt lines in scope, by text
}

// classify splits records into the driver's scope (from the first line
// that names myri10ge) and judges every line in it: a line at warning
// level or worse, or whose text speaks of a timeout, failure, error or
// warning, is bad unless adopt is set and its text is one of the adopt
// path's own lines.
func classify(records []kmsg, adopt bool) dmesgVerdict {
	v := dmesgVerdict{Allowed: map[string]int{}}
	in := false
	for _, m := range records {
		if !in && strings.Contains(m.Text, "myri10ge") {
			in = true
		}
		bad := m.Level <= 4 || badText.MatchString(m.Text)
		if !in {
			if m.Level <= 4 {
				v.Before = append(v.Before, m)
			}
			continue
		}
		v.Scope = append(v.Scope, m)
		if !bad {
			continue
		}
		msg := devPrefix.ReplaceAllString(m.Text, "")
		if adopt && msg != m.Text && contains(adoptAllowlist, msg) {
			v.Allowed[msg]++
			continue
		}
		v.Bad = append(v.Bad, m)
	}
	return v
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

type wantList []string

func (w *wantList) String() string     { return strings.Join(*w, " ") }
func (w *wantList) Set(s string) error { *w = append(*w, s); return nil }

// cmdDmesgCheck judges the kernel log from the driver's load on (see
// classify). Results: dmesg.bad (fail) for each bad line, dmesg.allowed
// (info) per allowlisted adopt line with its count, dmesg.boot (info) for
// warnings before the driver loaded, dmesg:NAME for each -want NAME=TEXT
// (pass with the first line in scope containing TEXT), dmesg.line (info)
// for every line in scope with -show, and dmesg.clean.
func cmdDmesgCheck(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("dmesg-check", flag.ContinueOnError)
	adopt := fs.Bool("adopt", false, "allow exactly the lines of the driver's adopt-running-firmware path")
	show := fs.Bool("show", false, "print every line from the driver's load on (dmesg.line, info)")
	var wants wantList
	fs.Var(&wants, "want", "NAME=TEXT a line from the driver's load on must contain (repeatable)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr("dmesg-check: bad arguments %q", args)
	}
	records, err := readKmsg()
	if err != nil {
		p.Failf("dmesg.clean", "%v", err)
		return nil
	}
	v := classify(records, *adopt)
	for _, m := range v.Before {
		p.Infof("dmesg.boot", "before the driver loaded: %s", m)
	}
	if *show {
		for _, m := range v.Scope {
			p.Infof("dmesg.line", "%s", m)
		}
	}
	for _, text := range adoptAllowlist {
		if n := v.Allowed[text]; n > 0 {
			p.Infof("dmesg.allowed", "%dx %q (adopt path)", n, text)
		}
	}
	for _, m := range v.Bad {
		p.Failf("dmesg.bad", "%s", m)
	}
	for _, w := range wants {
		name, text, ok := strings.Cut(w, "=")
		if !ok || name == "" || text == "" {
			return usageErr("dmesg-check: -want %q is not NAME=TEXT", w)
		}
		found := false
		for _, m := range v.Scope {
			if strings.Contains(m.Text, text) {
				p.Passf("dmesg:"+name, "%s", m)
				found = true
				break
			}
		}
		if !found {
			p.Failf("dmesg:"+name, "no line from the driver's load on contains %q", text)
		}
	}
	if len(v.Scope) == 0 {
		p.Failf("dmesg.clean", "no myri10ge line in the kernel log (%d records)", len(records))
		return nil
	}
	allowed := 0
	for _, n := range v.Allowed {
		allowed += n
	}
	detail := fmt.Sprintf("lines=%d bad=%d allowlisted=%d adopt_allowlist=%v", len(v.Scope), len(v.Bad), allowed, *adopt)
	if len(v.Bad) > 0 {
		p.Failf("dmesg.clean", "%s", detail)
	} else {
		p.Passf("dmesg.clean", "%s", detail)
	}
	return nil
}
