// Package fabric is the emulated Ethernet wire: ports that devices send
// frames down, a learning switch joining them, link state per port and pcap
// capture of everything that crosses the switch.
package fabric

// MaxFrame is the largest frame the wire carries: a 9000-byte MTU plus the
// Ethernet header and an 802.1Q tag (no FCS: the wire is virtual).
const MaxFrame = 9000 + 14 + 4

// MinFrame is the shortest frame the wire accepts: an Ethernet header.
const MinFrame = 14

// Port is a device's attachment to the wire.
//
// Send goes down; received frames and link changes come up through the
// Receiver given to Attach, on a goroutine the port owns, in order.
type Port interface {
	// Send transmits whole Ethernet frames (no FCS). It copies what it
	// keeps and never blocks: when a destination's queue is full the frame
	// is dropped and counted, as a congested switch would.
	Send(frames [][]byte)
	// Attach starts delivery to r. Frames that arrive while nothing is
	// attached are dropped. Attaching also raises the port's carrier.
	Attach(r Receiver)
	// Detach stops delivery and waits until no Receiver call is running.
	// It is idempotent.
	Detach()
	// LinkUp reports the carrier: a receiver is attached and the link has
	// not been taken down administratively.
	LinkUp() bool
}

// Receiver takes what a port delivers. Its methods run on the port's
// delivery goroutine, one call at a time.
type Receiver interface {
	// Deliver hands up a batch of frames. The slices are valid only during
	// the call; the receiver copies what it keeps.
	Deliver(frames [][]byte)
	// LinkChanged reports a carrier change.
	LinkChanged(up bool)
}
