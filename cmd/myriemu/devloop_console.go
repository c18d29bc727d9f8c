package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// console receives one guest's serial output (QEMU's stdout): it keeps
// every byte in file, keeps the lines for the summary, and streams the
// lines a developer wants to see to live, prefixed by the guest's name.
// The scenario's markers and the kernel log dump are not streamed. In raw
// mode (--shell) bytes go to live as they come, unprefixed, since a
// prompt has no newline.
type console struct {
	name   string
	file   io.Writer
	live   io.Writer
	liveMu *sync.Mutex // shared by every guest's console: whole lines
	raw    bool
	// onBoot runs once, at /init's E2E-BOOT line.
	onBoot func()

	mu      sync.Mutex
	partial []byte
	lines   []string
	booted  bool
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file != nil {
		_, _ = c.file.Write(p)
	}
	n := len(p)
	for len(p) > 0 {
		seg := p
		i := bytes.IndexByte(p, '\n')
		if i >= 0 {
			seg = p[:i+1]
		}
		if c.raw {
			c.liveMu.Lock()
			_, _ = c.live.Write(seg)
			c.liveMu.Unlock()
		}
		c.partial = append(c.partial, seg...)
		p = p[len(seg):]
		if i >= 0 {
			c.line(strings.TrimRight(string(c.partial[:len(c.partial)-1]), "\r"))
			c.partial = c.partial[:0]
		}
	}
	return n, nil
}

// flush handles a last line without a newline.
func (c *console) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.line(strings.TrimRight(string(c.partial), "\r"))
		c.partial = nil
	}
}

// line is called with c.mu held.
func (c *console) line(l string) {
	if i := strings.Index(l, markCmdExit); i > 0 {
		// CMD's last output had no newline: the marker follows it on
		// the same line.
		c.line(l[:i])
		l = l[i:]
	}
	c.lines = append(c.lines, l)
	if !c.booted && strings.HasPrefix(l, result.PrefixBoot+" ") {
		c.booted = true
		if c.onBoot != nil {
			c.onBoot()
		}
	}
	if c.raw {
		// The shell has ended: what follows (the kernel log dump) is
		// filtered again.
		c.raw = !strings.HasPrefix(l, markCmdExit)
		return
	}
	show, ok := liveLine(l)
	if !ok {
		return
	}
	c.liveMu.Lock()
	fmt.Fprintf(c.live, "%s| %s\n", c.name, show)
	c.liveMu.Unlock()
}

// liveLine says whether and how a console line is shown live.
func liveLine(l string) (string, bool) {
	switch {
	case strings.HasPrefix(l, markDmesg), strings.HasPrefix(l, markCmdStart), strings.HasPrefix(l, markCmdExit),
		strings.HasPrefix(l, result.PrefixBoot+" "), strings.HasPrefix(l, result.PrefixDone+" "):
		return "", false
	case strings.HasPrefix(l, markSetup):
		return "myriemu run: guest setup failed, CMD not run: " + strings.TrimPrefix(l, markSetup), true
	case strings.HasPrefix(l, result.PrefixResult+" "):
		r := result.ParseString(l)
		if len(r.Results) == 1 && r.Results[0].Status == result.Pass && strings.HasPrefix(r.Results[0].Name, "insmod:") {
			return "", false
		}
		if len(r.Results) == 1 && r.Results[0].Status == result.Fail && strings.HasPrefix(r.Results[0].Name, "insmod:") {
			return fmt.Sprintf("insmod %s failed: %s", strings.TrimPrefix(r.Results[0].Name, "insmod:"), r.Results[0].Detail), true
		}
	}
	return l, true
}

// Lines returns every complete line so far.
func (c *console) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// kernelWarning matches the kernel log lines the summary reports: WARN
// and lockdep splats (both print "WARNING:"), BUG and oops reports,
// panics, hung tasks, RCU stalls and any "timed out" (a driver's command
// or the netdev watchdog).
var kernelWarning = regexp.MustCompile(`WARNING:|BUG:|kernel BUG at|Oops|general protection fault|Kernel panic|` +
	`timed out|INFO: task .* blocked for more than|rcu: .*stall|DEBUG_LOCKS_WARN_ON|UBSAN:|KASAN:`)

// dmesgStamp is the "[    1.234567] " in front of a kernel log line.
var dmesgStamp = regexp.MustCompile(`^\[\s*[0-9]+\.[0-9]+\]\s*`)

// kernelWarnings returns the kernel's warning lines from a console: those
// of the dumped kernel log and the kernel's own lines on the console (a
// panic after the dump, or a guest that never got to it), each text once.
// Only kernel lines (with their time stamp) count: CMD's output may say
// "timed out" without the kernel having done so.
func kernelWarnings(lines []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lines {
		l = strings.TrimPrefix(l, markDmesg)
		if !dmesgStamp.MatchString(l) || !kernelWarning.MatchString(l) {
			continue
		}
		text := dmesgStamp.ReplaceAllString(l, "")
		if seen[text] {
			continue
		}
		seen[text] = true
		out = append(out, text)
	}
	return out
}
