// Command e2e-net runs inside an e2e guest and drives a network interface
// the way the end-to-end scenarios need, with no ethtool, iperf or
// sha256sum in the busybox image: it waits for carrier, reads and sets
// ethtool state with the SIOCETHTOOL ioctls, moves deterministic TCP
// streams and hashes them, pings (its own raw-socket echo series), counts per-slice
// interrupts and checks the kernel log. Every check prints one result line
// (guestdrv/result); the exit status is 1 if any failed.
//
//	e2e-net link-wait IF TIMEOUT [-label L]
//	e2e-net ethtool drvinfo IF
//	e2e-net ethtool stats IF [-dma]
//	e2e-net ethtool features IF
//	e2e-net ethtool set IF tso on|off
//	e2e-net ping -to IP [-count N] [-interval S] [-wait D] [-reply-wait D] [-peer-count N] [-peer-wait D] [-label L]
//	e2e-net tcp-serve -port P [-conns N] [-bytes B] [-label L] [-timeout D] [-stop-file F] [-progress-file F] [-out FILE]
//	e2e-net tcp-send -to IP -port P [-conns N] [-bytes B] [-seed S] [-label L] [-timeout D] [-stop-file F] [-progress-file F] [-file FILE]
//	e2e-net make-file PATH [-bytes B] [-seed S]
//	e2e-net sha256 PATH
//	e2e-net gen-hash [-bytes B]
//	e2e-net grows FILE TIMEOUT [-label L]
//	e2e-net irqs IF [-save FILE] [-since FILE] [-want-slices N] [-label L]
//	e2e-net dmesg-check [-adopt] [-show] [-want NAME=TEXT]...
//
// Result names and details are documented with each subcommand; details
// are key=value pairs the host test parses (tests/e2e/myri10ge_test.go).
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/myriemu/myriemu/guestdrv/result"
)

const usage = `usage:
  e2e-net link-wait IF TIMEOUT [-label L]
  e2e-net ethtool drvinfo|stats|features IF [-dma]
  e2e-net ethtool set IF tso on|off
  e2e-net ping -to IP [-count N] [-interval S] [-wait D] [-reply-wait D] [-peer-count N] [-peer-wait D] [-label L]
  e2e-net tcp-serve -port P [-conns N] [-bytes B] [-label L] [-timeout D] [-stop-file F] [-progress-file F] [-out FILE]
  e2e-net tcp-send -to IP -port P [-conns N] [-bytes B] [-seed S] [-label L] [-timeout D] [-stop-file F] [-progress-file F] [-file FILE]
  e2e-net make-file PATH [-bytes B] [-seed S]
  e2e-net sha256 PATH
  e2e-net gen-hash [-bytes B]
  e2e-net grows FILE TIMEOUT [-label L]
  e2e-net irqs IF [-save FILE] [-since FILE] [-want-slices N] [-label L]
  e2e-net dmesg-check [-adopt] [-show] [-want NAME=TEXT]...
`

func main() {
	p := &result.Printer{W: os.Stdout}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "link-wait":
		err = cmdLinkWait(p, args)
	case "ethtool":
		err = cmdEthtool(p, args)
	case "ping":
		err = cmdPing(p, args)
	case "tcp-serve":
		err = cmdTCPServe(p, args)
	case "tcp-send":
		err = cmdTCPSend(p, args)
	case "make-file":
		err = cmdMakeFile(p, args)
	case "sha256":
		err = cmdSHA256(p, args)
	case "gen-hash":
		err = cmdGenHash(p, args)
	case "grows":
		err = cmdGrows(p, args)
	case "irqs":
		err = cmdIRQs(p, args)
	case "dmesg-check":
		err = cmdDmesgCheck(p, args)
	default:
		err = usageErr("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		// A usage mistake is a failed check too: the scenario is wrong.
		p.Failf("e2e-net", "%s: %v", strings.Join(os.Args[1:], " "), err)
		os.Exit(1)
	}
	if p.Failures > 0 {
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg + "\n" + usage }

func usageErr(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}
