// Package fabrictest provides channel-backed fabric ports and receivers for
// tests of devices and of the fabric itself.
package fabrictest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/myriemu/myriemu/fabric"
)

// Port is a fabric.Port that records what a device sends on Sent and lets
// a test inject received frames with Inject. It has no goroutines: Inject
// delivers on the caller's goroutine.
type Port struct {
	Sent chan []byte // every frame passed to Send, copied

	dropped atomic.Uint64

	mu   sync.Mutex
	recv fabric.Receiver
	up   bool
}

var _ fabric.Port = (*Port)(nil)

// NewPort returns a port whose Sent channel buffers n frames. Like a real
// port, Send never blocks: frames that do not fit are dropped and counted
// (Dropped), so size n for the test.
func NewPort(n int) *Port { return &Port{Sent: make(chan []byte, n), up: true} }

// Send implements fabric.Port.
func (p *Port) Send(frames [][]byte) {
	for _, f := range frames {
		select {
		case p.Sent <- append([]byte(nil), f...):
		default:
			p.dropped.Add(1)
		}
	}
}

// Dropped reports how many sent frames did not fit in Sent.
func (p *Port) Dropped() uint64 { return p.dropped.Load() }

// Attach implements fabric.Port.
func (p *Port) Attach(r fabric.Receiver) {
	p.mu.Lock()
	p.recv = r
	up := p.up
	p.mu.Unlock()
	r.LinkChanged(up)
}

// Detach implements fabric.Port.
func (p *Port) Detach() {
	p.mu.Lock()
	p.recv = nil
	p.mu.Unlock()
}

// LinkUp implements fabric.Port.
func (p *Port) LinkUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recv != nil && p.up
}

// SetLink changes the carrier and tells the attached receiver.
func (p *Port) SetLink(up bool) {
	p.mu.Lock()
	p.up = up
	r := p.recv
	p.mu.Unlock()
	if r != nil {
		r.LinkChanged(up)
	}
}

// Inject delivers frames to the attached receiver, as the wire would. It
// reports whether a receiver was attached.
func (p *Port) Inject(frames ...[]byte) bool {
	p.mu.Lock()
	r := p.recv
	p.mu.Unlock()
	if r == nil {
		return false
	}
	r.Deliver(frames)
	return true
}

// Next returns the next frame the device sent, or an error when ctx ends.
func (p *Port) Next(ctx context.Context) ([]byte, error) {
	select {
	case f := <-p.Sent:
		return f, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("fabrictest: no frame sent: %w", ctx.Err())
	}
}

// Receiver is a fabric.Receiver that records deliveries and link changes.
type Receiver struct {
	Frames chan []byte // every delivered frame, copied
	Links  chan bool   // every LinkChanged
}

var _ fabric.Receiver = (*Receiver)(nil)

// NewReceiver returns a receiver whose channels buffer n entries; delivery
// blocks when they are full.
func NewReceiver(n int) *Receiver {
	return &Receiver{Frames: make(chan []byte, n), Links: make(chan bool, n)}
}

// Deliver implements fabric.Receiver.
func (r *Receiver) Deliver(frames [][]byte) {
	for _, f := range frames {
		r.Frames <- append([]byte(nil), f...)
	}
}

// LinkChanged implements fabric.Receiver.
func (r *Receiver) LinkChanged(up bool) { r.Links <- up }

// Frame builds an Ethernet frame from dst to src with the given EtherType
// and payload, padded to the 60-byte minimum as a NIC's driver would.
func Frame(dst, src [6]byte, etherType uint16, payload []byte) []byte {
	f := make([]byte, 0, 14+len(payload))
	f = append(f, dst[:]...)
	f = append(f, src[:]...)
	f = append(f, byte(etherType>>8), byte(etherType))
	f = append(f, payload...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}
