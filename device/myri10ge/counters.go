package myri10ge

import "fmt"

// Counters is every counter the NIC keeps, as query-counters shows it:
// the NIC-wide Stats (kept over the NIC's life), the firmware's receive
// drop counters that the interrupt block reports to the driver (§6.1;
// CMD_RESET zeroes them, as ethtool -S sees), and each slice's ring
// indices (CMD_RESET zeroes those too).
type Counters struct {
	Stats  Stats
	Drops  DropCounters
	Slices []SliceCounters
}

// DropCounters are the receive drops of the interrupt block (§6.1).
type DropCounters struct {
	Pause             uint32 // dropped_pause: PAUSE frames received
	UnicastFiltered   uint32 // dropped_unicast_filtered
	MulticastFiltered uint32 // dropped_multicast_filtered
	LinkError         uint32 // dropped_link_error_or_filtered: the data path was stopped
	Runt              uint32 // dropped_runt
	Overrun           uint32 // dropped_overrun: longer than the MTU
	NoSmallBuffer     uint32 // dropped_no_small_buffer
	NoBigBuffer       uint32 // dropped_no_big_buffer
}

// SliceCounters are one slice's indices, all counting up from the last
// CMD_RESET (and wrapping at 2^32, as the firmware's do).
type SliceCounters struct {
	Slice          int
	SendTaken      uint32 // send descriptors consumed
	SendDone       uint32 // packets completed: send_done_count
	SmallPosted    uint32 // small receive buffers the driver posted
	SmallFilled    uint32 // ... and the NIC filled
	BigPosted      uint32
	BigFilled      uint32
	RxDone         uint32 // rx_done slots written
	Held           int    // frames waiting in the slice's FIFO for buffers now (rxhold.go)
	IRQTokenHome   bool   // the NIC holds the interrupt token (§6.2)
	RxTokenHome    bool   // the NIC holds the receive token
	Halted         bool   // stopped by a DMA abort until the driver resets the NIC
	SendDoneInIRQ  uint32 // send_done_count in the last interrupt block
	RxDoneAnnounce bool   // rx_done slots written that no interrupt announced yet
}

// Counters returns a snapshot of every counter.
func (n *NIC) Counters() Counters {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := &n.drops
	c := Counters{Stats: n.stats, Drops: DropCounters{Pause: d.pause,
		UnicastFiltered: d.unicastFiltered, MulticastFiltered: d.multicastFiltered, LinkError: d.linkError,
		Runt: d.runt, Overrun: d.overrun, NoSmallBuffer: d.noSmall, NoBigBuffer: d.noBig}}
	for _, s := range n.slices {
		c.Slices = append(c.Slices, SliceCounters{Slice: s.idx, SendTaken: s.txIdx, SendDone: s.sendDone,
			SmallPosted: s.rx[ringSmall].posted, SmallFilled: s.rx[ringSmall].consumed,
			BigPosted: s.rx[ringBig].posted, BigFilled: s.rx[ringBig].consumed,
			RxDone: s.rxDoneIdx, IRQTokenHome: s.irqToken, RxTokenHome: s.rxToken, Halted: s.halted,
			SendDoneInIRQ: s.txReported, RxDoneAnnounce: s.rxPending, Held: s.hold.n})
	}
	return c
}

// ErrorEvent is a device error worth telling the server's clients about
// (DEVICE_ERROR): a slice the firmware halted after a DMA abort, or a
// protocol violation by the guest's driver.
type ErrorEvent struct {
	Kind   string // slice-halt, guest-error
	Slice  int    // -1: no slice's
	What   string // the DMA that failed, or the violation
	Detail string // the DMA's error, or the offending value
}

// SetErrorSink makes the NIC report its errors to fn. fn is called with
// the NIC's lock held, from whatever goroutine found the error: it must
// not block and must not call the NIC. Call it before Attach.
func (n *NIC) SetErrorSink(fn func(ErrorEvent)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.errSink = fn
}

// reportErrorLocked hands e to the error sink, if there is one.
func (n *NIC) reportErrorLocked(e ErrorEvent) {
	if n.errSink != nil {
		n.errSink(e)
	}
}

// reportGuestErrorLocked reports a driver protocol violation.
func (n *NIC) reportGuestErrorLocked(msg, key string, val any) {
	if n.errSink != nil {
		n.errSink(ErrorEvent{Kind: "guest-error", Slice: -1, What: msg, Detail: fmt.Sprintf("%s=%v", key, val)})
	}
}
