package myri10ge

// The receive packet buffer. A Myri-10G takes frames off the wire into its
// SRAM and DMAs each to the host when a buffer is there for it; a frame
// that finds its ring empty waits in SRAM, behind the frames before it,
// until the driver posts buffers, and is dropped (dropped_no_small_buffer,
// dropped_no_big_buffer) only when that room is full. The model keeps such
// a FIFO per slice. Without it every frame that arrived while a TCG guest
// was still reposting buffers was lost: 25-325 of ~32,000 frames of a TCP
// stream per boot, each a loss the sender had to recover from, where an
// e1000e loses none because QEMU keeps the frame until the guest has a
// descriptor (docs/speed.md).
//
// Held frames leave in order when buffers appear: when a trapped store or
// the ring poller takes a posting (drainHoldLocked), and before any later
// frame of the slice. They are discarded, and counted as drops, when the
// data path stops, the slice halts, the firmware resets or the client
// detaches.

const (
	rxHoldFrames = 128     // frames a slice's FIFO holds at most
	rxHoldBytes  = 1 << 20 // frame bytes a slice's FIFO holds at most
)

// rxHold is one slice's FIFO of frames waiting for buffers. Each slot
// keeps its backing array across uses, so a warmed-up FIFO copies frames
// in without allocating.
type rxHold struct {
	frames  [rxHoldFrames][]byte
	head, n int
	bytes   int
}

func (h *rxHold) empty() bool { return h.n == 0 }

// push copies f to the back of the FIFO; false when there is no room.
func (h *rxHold) push(f []byte) bool {
	if h.n == rxHoldFrames || h.bytes+len(f) > rxHoldBytes {
		return false
	}
	i := (h.head + h.n) % rxHoldFrames
	h.frames[i] = append(h.frames[i][:0], f...)
	h.n++
	h.bytes += len(f)
	return true
}

// front is the oldest frame; valid until the next pop or push.
func (h *rxHold) front() []byte { return h.frames[h.head] }

func (h *rxHold) pop() {
	h.bytes -= len(h.frames[h.head])
	h.head = (h.head + 1) % rxHoldFrames
	h.n--
}

// discard empties the FIFO and returns how many frames it held.
func (h *rxHold) discard() int {
	n := h.n
	h.head, h.n, h.bytes = 0, 0, 0
	return n
}

// holdLocked keeps frame f, which found too few buffers, in slice s's
// FIFO. A full FIFO drops it and counts it as the firmware does.
func (n *NIC) holdLocked(s *slice, f []byte) bool {
	if s.hold.push(f) {
		n.stats.RxHeld++
		return true
	}
	if len(f) > n.fw.smallBytes {
		n.drops.noBig++
	} else {
		n.drops.noSmall++
	}
	return false
}

// drainHoldLocked writes slice s's held frames into the buffers the driver
// has posted since, oldest first, and reports whether any landed. The
// caller raises the interrupt.
func (n *NIC) drainHoldLocked(s *slice) bool {
	landed := false
	for !s.hold.empty() {
		f := s.hold.front()
		got := n.fillLocked(s, f)
		switch {
		case got == rxShort:
			return landed
		case s.hold.empty():
			// A DMA abort halted the slice, and haltLocked dropped every
			// held frame, f among them.
			return landed
		case got == rxFilled:
			n.stats.RxFrames++
			n.stats.RxBytes += uint64(len(f))
			landed = true
		default:
			n.stats.RxDropped++
		}
		s.hold.pop()
	}
	return landed
}

// drainPostedLocked is called after the driver posted buffers to slice s:
// frames waiting for them land, and the driver hears of it.
func (n *NIC) drainPostedLocked(s *slice) {
	if !s.hold.empty() && n.drainHoldLocked(s) {
		n.maybeInterruptLocked(s)
	}
}

// discardHeldLocked drops the frames slice s holds (the data path stopped,
// the slice halted, the firmware reset or the client left).
func (n *NIC) discardHeldLocked(s *slice) {
	n.stats.RxDropped += uint64(s.hold.discard())
}
