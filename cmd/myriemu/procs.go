package main

import (
	"os"
	"runtime"

	"github.com/sirupsen/logrus"
)

// Scheduler headroom. Every device has goroutines that wait in blocking
// system calls, not in Go's netpoller: its vfio-user server in recvmsg and,
// for a Myri-10G in pio=mmap, its ring poller in ppoll (µs sleeps, which
// the netpoller cannot give). A goroutine in such a call keeps its P until
// sysmon takes it back, and sysmon looks only every 10 ms once the process
// has been quiet. With GOMAXPROCS at the number of cores (2 here) and two
// pio=mmap NICs, both Ps were often held by pollers asleep in ppoll, and a
// server goroutine whose recvmsg returned (a guest's interrupt claim, its
// vCPU waiting for the answer) waited for a P for up to ~13 ms: the tail of
// 15-24 ms ping round trips in docs/speed.md. Ps held by sleeping calls cost
// no CPU, so serve keeps one P per such goroutine on top of the cores.

// blockingPerDevice is how many of a device's goroutines may sit in a
// blocking system call at once: its server and its ring poller.
const blockingPerDevice = 2

// serveProcs is the GOMAXPROCS for serving devices: the cores, plus a P
// for every goroutine that may be asleep in a blocking call.
func serveProcs(cores, devices int) int {
	return cores + blockingPerDevice*devices
}

// setServeProcs raises GOMAXPROCS to serveProcs unless the user chose a
// value with the GOMAXPROCS environment variable, and logs what it did.
func setServeProcs(log *logrus.Entry, devices int) {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		log.WithField("gomaxprocs", v).Info("GOMAXPROCS set by the environment; no headroom added for blocking calls")
		return
	}
	n := serveProcs(runtime.NumCPU(), devices)
	if n > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
	log.WithFields(logrus.Fields{"gomaxprocs": runtime.GOMAXPROCS(0), "cores": runtime.NumCPU()}).Debug("scheduler headroom for blocking calls")
}
