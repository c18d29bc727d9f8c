package fault

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestDelaysRunUnlessStopped(t *testing.T) {
	var d Delays
	ran := make(chan struct{})
	d.After(0, func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("a delayed function never ran")
	}
	var late atomic.Int32
	d.After(time.Hour, func() { late.Add(1) })
	d.Stop()
	d.After(0, func() { late.Add(1) }) // after Stop: nothing
	d.Stop()                           // idempotent
	time.Sleep(10 * time.Millisecond)
	if n := late.Load(); n != 0 {
		t.Errorf("%d functions ran after Stop", n)
	}
}

// Stop waits for a function that is already running.
func TestDelaysStopWaitsForRunning(t *testing.T) {
	var d Delays
	entered, release := make(chan struct{}), make(chan struct{})
	var done atomic.Bool
	d.After(0, func() {
		close(entered)
		<-release
		done.Store(true)
	})
	<-entered
	stopped := make(chan struct{})
	go func() { d.Stop(); close(stopped) }()
	select {
	case <-stopped:
		close(release)
		t.Fatal("Stop returned while a function was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-stopped
	if !done.Load() {
		t.Error("Stop returned before the running function finished")
	}
}
