// Package leaktest fails a test that leaves goroutines behind.
package leaktest

import (
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Check records the goroutines running now and, when the test ends, fails
// it if others are still running after a grace period, printing their
// stacks. Call it first in a test: defer order makes it run after the
// test's own cleanups.
func Check(tb testing.TB) {
	tb.Helper()
	before := goroutines()
	tb.Cleanup(func() {
		if extra := leaked(before, 5*time.Second); len(extra) > 0 {
			tb.Errorf("leaktest: %d goroutine(s) leaked:\n\n%s", len(extra), strings.Join(extra, "\n\n"))
		}
	})
}

// leaked waits up to grace for the goroutines not in before to end and
// returns the stacks of those still running.
func leaked(before map[string]string, grace time.Duration) []string {
	var extra []string
	deadline := time.Now().Add(grace)
	for {
		extra = extra[:0]
		for id, stack := range goroutines() {
			if _, ok := before[id]; !ok && !benign(stack) {
				extra = append(extra, stack)
			}
		}
		if len(extra) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	sort.Strings(extra)
	return extra
}

// benign reports goroutines the runtime and testing package start on
// their own.
func benign(stack string) bool {
	for _, s := range []string{
		"testing.(*T).Run",
		"testing.tRunner.func",
		"runtime.goexit\n", // a goroutine that is just finishing
		"os/signal.signal_recv",
		"runtime.ensureSigM",
	} {
		if strings.Contains(stack, s) && !strings.Contains(stack, "myriemu/") {
			return true
		}
	}
	return false
}

// goroutines maps goroutine IDs ("goroutine 12") to their stacks, the
// calling goroutine excluded.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := strings.Split(string(buf), "\n\n")
	m := make(map[string]string, len(all))
	for i, g := range all {
		if i == 0 {
			continue // the caller
		}
		id, _, _ := strings.Cut(g, " [")
		m[id] = g
	}
	return m
}
