package main

import (
	"os"
	"runtime"
)

// processCounters is the "process" part of query-counters: what the whole
// server process holds now, so a script (or the lifecycle e2e test) can
// see a departed client's goroutines, threads and fds given back. They
// are gauges of the process, not of the device named.
func processCounters() map[string]any {
	out := map[string]any{"goroutines": runtime.NumGoroutine()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		out["fds"] = len(fds) - 1 // not the directory's own fd
	}
	if tasks, err := os.ReadDir("/proc/self/task"); err == nil {
		out["threads"] = len(tasks)
	}
	return out
}
