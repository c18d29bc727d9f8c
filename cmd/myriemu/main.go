// Command myriemu serves emulated PCI devices to QEMU guests over
// vfio-user.
//
// Usage:
//
//	myriemu serve --socket PATH --device KIND [--socket PATH --device KIND ...]
//	myriemu serve --device KIND,socket=PATH[,name=NAME] ...
//	myriemu version
//	myriemu help [serve]
//
// serve listens on one UNIX socket per device and serves one QEMU
// vfio-user-pci client per socket at a time, until SIGTERM or SIGINT; then
// it closes every socket (removing the files) and exits 0 within a second.
//
// Readiness: once every socket listens, serve prints exactly one line on
// stdout, and nothing else ever goes to stdout:
//
//	myriemu: ready device=NAME socket=PATH [device=NAME socket=PATH ...]
//
// with the devices in command-line order (a path with spaces or quotes is
// Go-quoted). A supervisor starts QEMU only after this line. Logs go to
// stderr (logrus, text or JSON, fields component and device).
//
// Exit status: 0 after a signal, 1 on a runtime error (e.g. a socket
// cannot be listened on; a stale socket file left by a crashed server is
// reported with the command that removes it), 2 on a usage error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	a := &app{stdout: os.Stdout, stderr: os.Stderr, kinds: deviceKinds(), onShutdown: stop}
	code := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
