package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// sysNet is where the kernel lists network interfaces.
const sysNet = "/sys/class/net"

// cmdLinkWait waits until IF has carrier. Result link:LABEL (default
// link:IF), pass with the time it took and the MTU, or fail at TIMEOUT.
func cmdLinkWait(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("link-wait", flag.ContinueOnError)
	label := fs.String("label", "", "result name suffix (default: the interface)")
	if len(args) < 2 {
		return usageErr("link-wait IF TIMEOUT [-label L]")
	}
	ifname := args[0]
	timeout, err := time.ParseDuration(args[1])
	if err != nil {
		return usageErr("link-wait: timeout %q: %v", args[1], err)
	}
	if err := fs.Parse(args[2:]); err != nil || fs.NArg() > 0 {
		return usageErr("link-wait: bad arguments %q", args)
	}
	if *label == "" {
		*label = ifname
	}
	start := time.Now()
	name := "link:" + *label
	for {
		if carrier(ifname) {
			p.Passf(name, "carrier=1 after=%.2fs mtu=%s operstate=%s", time.Since(start).Seconds(),
				sysAttr(ifname, "mtu"), sysAttr(ifname, "operstate"))
			return nil
		}
		if time.Since(start) > timeout {
			p.Failf(name, "no carrier within %v (carrier=%q operstate=%q)", timeout,
				sysAttr(ifname, "carrier"), sysAttr(ifname, "operstate"))
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func carrier(ifname string) bool { return sysAttr(ifname, "carrier") == "1" }

// sysAttr reads /sys/class/net/IF/ATTR, "" if it cannot.
func sysAttr(ifname, attr string) string {
	b, err := os.ReadFile(filepath.Join(sysNet, ifname, attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cmdGrows waits until the number in FILE (written by tcp-serve or
// tcp-send -progress-file) is larger than when it started: traffic moves.
// Result grows:LABEL.
func cmdGrows(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("grows", flag.ContinueOnError)
	label := fs.String("label", "", "result name suffix (default: the file's base name)")
	if len(args) < 2 {
		return usageErr("grows FILE TIMEOUT [-label L]")
	}
	file := args[0]
	timeout, err := time.ParseDuration(args[1])
	if err != nil {
		return usageErr("grows: timeout %q: %v", args[1], err)
	}
	if err := fs.Parse(args[2:]); err != nil {
		return usageErr("%v", err)
	}
	if *label == "" {
		*label = filepath.Base(file)
	}
	name := "grows:" + *label
	read := func() (uint64, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	start := time.Now()
	// The writer may not have made the file yet: wait for it too.
	v0, err := read()
	for err != nil && time.Since(start) < timeout {
		time.Sleep(50 * time.Millisecond)
		v0, err = read()
	}
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	for time.Since(start) < timeout {
		time.Sleep(50 * time.Millisecond)
		if v, err := read(); err == nil && v > v0 {
			p.Passf(name, "from=%d to=%d after=%.2fs", v0, v, time.Since(start).Seconds())
			return nil
		}
	}
	v, _ := read()
	p.Failf(name, "%s stayed at %d for %v", file, v, timeout)
	return nil
}

// writeProgress replaces FILE's content with n (atomically, by rename).
func writeProgress(file string, n uint64) {
	if file == "" {
		return
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", n)), 0o644); err == nil {
		_ = os.Rename(tmp, file)
	}
}
