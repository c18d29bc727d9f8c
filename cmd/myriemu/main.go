// Command myriemu serves emulated PCI devices to QEMU guests over
// vfio-user.
//
// Usage:
//
//	myriemu serve --device KIND,socket=PATH[,name=NAME][,KEY=VALUE...] ...
//	myriemu serve --socket PATH --device KIND [--socket PATH --device KIND ...]
//	myriemu serve --device KIND,fd=N ...   (a supervisor's listening socket)
//	myriemu --print-capabilities
//	myriemu version
//	myriemu help [serve]
//
// serve listens on one UNIX socket per device (created 0600 whatever the
// umask; --socket-mode and --socket-group for a supervisor's group) and
// serves one QEMU vfio-user-pci client per socket at a time, until
// SIGTERM, SIGINT or SIGHUP (SIGHUP is not a reload: it stops serve like
// SIGTERM); then it closes every socket (removing the files it created)
// and exits within a second. A second signal kills it.
//
// Readiness: once every socket listens and the --pcap file is open, serve
// prints exactly one line on stdout, and nothing else ever goes to stdout:
//
//	myriemu: ready device=NAME socket=PATH [device=NAME socket=PATH ...]
//
// with the devices in command-line order (a path with spaces or quotes is
// Go-quoted). A supervisor starts QEMU only after this line. Logs go to
// stderr (logrus, text or JSON, fields component and device).
//
// Exit status: 0 after a signal with everything shut down cleanly; 1 on a
// runtime error (a socket or the capture file cannot be created, a server
// fails, the capture stopped on a write error; a stale socket file left by
// a crashed server is reported with the command that removes it); 2 on a
// usage error, bad device values (slices=0, mac=garbage) included, with a
// hint on stderr.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	a := &app{stdout: os.Stdout, stderr: os.Stderr, kinds: deviceKinds(), onShutdown: stop}
	code := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
