// Command e2e-probe runs inside an e2e guest: it lists the PCI functions the
// guest kernel found and checks simple expectations, printing result lines.
//
//	e2e-probe [-want VENDOR:DEVICE]... [-dmesg TEXT]...
//
// Every function is printed as an info result (pci.dev); each -want prints
// pci.want:VENDOR:DEVICE pass or fail; each -dmesg prints dmesg pass if the
// kernel log contains TEXT. The exit status is 1 if anything failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/myriemu/myriemu/guestdrv/guest"
	"github.com/myriemu/myriemu/guestdrv/result"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var wants, dmesgs list
	flag.Var(&wants, "want", "VENDOR:DEVICE (hex) that must be present; repeatable")
	flag.Var(&dmesgs, "dmesg", "text the kernel log must contain; repeatable")
	flag.Parse()
	p := &result.Printer{W: os.Stdout}

	devs, err := guest.ListPCI(guest.SysfsPCI)
	if err != nil {
		p.Failf("pci.list", "%v", err)
		os.Exit(1)
	}
	for _, d := range devs {
		p.Infof("pci.dev", "%s", d)
	}
	p.Passf("pci.list", "%d PCI functions", len(devs))

	for _, w := range wants {
		name := "pci.want:" + w
		vendor, device, err := parseIDs(w)
		if err != nil {
			p.Failf(name, "%v", err)
			continue
		}
		found := false
		for _, d := range devs {
			if d.Vendor == vendor && d.Device == device {
				p.Passf(name, "found at %s", d.Addr)
				found = true
			}
		}
		if !found {
			p.Failf(name, "no PCI function %04x:%04x in %s", vendor, device, guest.SysfsPCI)
		}
	}

	if len(dmesgs) > 0 {
		log, err := kernelLog()
		if err != nil {
			p.Failf("dmesg", "%v", err)
		}
		for _, text := range dmesgs {
			if strings.Contains(log, text) {
				p.Passf("dmesg", "kernel log has %q", text)
			} else {
				p.Failf("dmesg", "kernel log lacks %q", text)
			}
		}
	}
	if p.Failures > 0 {
		os.Exit(1)
	}
}

func parseIDs(s string) (uint16, uint16, error) {
	v, d, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("want VENDOR:DEVICE, got %q", s)
	}
	vendor, err1 := strconv.ParseUint(v, 16, 16)
	device, err2 := strconv.ParseUint(d, 16, 16)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("want hex VENDOR:DEVICE, got %q", s)
	}
	return uint16(vendor), uint16(device), nil
}

// kernelLog reads the whole kernel ring buffer (like dmesg).
func kernelLog() (string, error) {
	const readAll, sizeBuffer = 3, 10 // SYSLOG_ACTION_READ_ALL, SYSLOG_ACTION_SIZE_BUFFER
	n, err := unix.Klogctl(sizeBuffer, nil)
	if err != nil || n <= 0 {
		n = 1 << 20
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(readAll, buf)
	if err != nil {
		return "", fmt.Errorf("read kernel log: %w", err)
	}
	return string(buf[:m]), nil
}
