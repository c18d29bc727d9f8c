// Package wcbartest builds wcbar windows for tests of the layers above it.
package wcbartest

import (
	"io"
	"testing"

	"github.com/myriemu/myriemu/wcbar"
	"github.com/sirupsen/logrus"
)

// NewWindow returns a window of size bytes named after the test, with
// each {offset, length} in traps trapped; it is closed when the test ends.
func NewWindow(tb testing.TB, size uint64, traps ...[2]uint64) *wcbar.Window {
	tb.Helper()
	l := logrus.New()
	l.SetOutput(io.Discard)
	w, err := wcbar.New(tb.Name(), size, logrus.NewEntry(l))
	if err != nil {
		tb.Fatalf("wcbar.New: %v", err)
	}
	tb.Cleanup(func() { w.Close() })
	for _, tr := range traps {
		w.Trap(tr[0], tr[1])
	}
	return w
}
