package fabric

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/myriemu/myriemu/fault"
)

// faultTimers are the switch's pending wire.delay deliveries and
// wire.link.flap restorations; Close cancels them.
type faultTimers struct {
	fault.Delays
	onLink func(port string, up bool)
}

// SetFaults puts the wire fault door under set: every frame a port sends
// is offered to it (device = the sending port's name) while a rule is
// armed at the wire door. Call it before traffic starts.
func (s *Switch) SetFaults(set *fault.Set) { s.faults = set }

// OnFaultLink registers fn to hear the link changes wire.link.flap makes
// (for LINK_CHANGED events). Call it before traffic starts.
func (s *Switch) OnFaultLink(fn func(port string, up bool)) { s.ft.onLink = fn }

// sendFaulty is Send with the wire door armed.
func (p *SwitchPort) sendFaulty(frames [][]byte) {
	s := p.sw
	out := make([][]byte, 0, len(frames)+1)
	for _, f := range frames {
		act, ok := s.faults.Eval(fault.Wire, &fault.Op{Point: "frame", Device: p.name, Len: len(f), Dir: "tx"})
		if !ok {
			out = append(out, f)
			out = p.releaseHeld(out)
			continue
		}
		switch act.Kind {
		case fault.WireLoss:
			p.stats.txDropped.Add(1)
		case fault.WireCorrupt:
			c := append([]byte(nil), f...)
			if len(c) > MinFrame {
				// Past the Ethernet header, so the frame still reaches
				// its destination and the damage is the receiver's to find.
				c[MinFrame+int(act.Rand%uint64(len(c)-MinFrame))] ^= byte(act.Int("mask"))
			}
			out = append(out, c)
		case fault.WireDup:
			for range min(act.Int("count"), 64) + 1 {
				out = append(out, f)
			}
		case fault.WireReorder:
			held := append([]byte(nil), f...)
			p.heldMu.Lock()
			prev := p.held
			p.held = held
			p.heldMu.Unlock()
			if prev != nil {
				out = append(out, prev)
			}
		case fault.WireDelay:
			c := append([]byte(nil), f...)
			s.ft.after(act.Duration("delay"), func() {
				if p.LinkUp() {
					s.forward(p, [][]byte{c})
				}
			})
		case fault.WireRate, fault.WireSlot:
			// What went before leaves first; this frame waits its turn.
			p.flushOrQueue(out)
			out = out[:0]
			p.pace(f, &act)
		case fault.WirePauseFlood:
			out = append(out, f)
			p.pauseFlood(&act)
		case fault.WireRxOverflow:
			p.overflowAt(f)
		case fault.WireFrameBad:
			if act.Arg("kind") == "oversize" {
				c := make([]byte, MaxFrame)
				copy(c, f)
				out = append(out, c)
			} else {
				out = append(out, f[:min(len(f), MinFrame+18)]) // a runt: 32 bytes at most
			}
		case fault.WireLinkFlap:
			p.stats.txDropped.Add(1)
			p.SetLink(false)
			s.ft.link(p.name, false)
			s.ft.after(act.Duration("down"), func() {
				p.SetLink(true)
				s.ft.link(p.name, true)
			})
		default:
			out = append(out, f)
		}
	}
	p.flushOrQueue(out)
}

// pacer holds the frames wire.rate and wire.slot delay, in sending order,
// each with the time it leaves.
type pacer struct {
	mu      sync.Mutex
	q       []pacedFrame
	free    time.Time // wire.rate: when the port's line is free again
	pending bool      // a release is scheduled
}

type pacedFrame struct {
	f  []byte
	at time.Time
}

// flushOrQueue forwards frames now, or, while the pacer holds frames the
// port sent earlier, queues them behind those: a paced port never
// reorders.
func (p *SwitchPort) flushOrQueue(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	q := &p.paced
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := len(q.q); n > 0 {
		at := q.q[n-1].at
		for _, f := range frames {
			q.q = append(q.q, pacedFrame{append([]byte(nil), f...), at})
		}
		return
	}
	if p.LinkUp() {
		p.sw.forward(p, frames)
	}
}

// pace queues f to leave when wire.rate or wire.slot says: rate, after
// the frames before it have been clocked out at bps bits a second; slot,
// at the next slot boundary (netem's slot: frames leave in bursts).
func (p *SwitchPort) pace(f []byte, act *fault.Action) {
	q := &p.paced
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	var at time.Time
	switch act.Kind {
	case fault.WireRate:
		bps := max(act.Int("bps"), 1000)
		start := now
		if q.free.After(start) {
			start = q.free
		}
		at = start.Add(time.Duration(int64(len(f)) * 8 * int64(time.Second) / bps))
		q.free = at
	case fault.WireSlot:
		slot := max(act.Duration("slot"), time.Microsecond)
		at = now.Truncate(slot).Add(slot)
	}
	if n := len(q.q); n > 0 && at.Before(q.q[n-1].at) {
		at = q.q[n-1].at // never ahead of an earlier frame
	}
	q.q = append(q.q, pacedFrame{append([]byte(nil), f...), at})
	if !q.pending {
		q.pending = true
		p.sw.ft.after(at.Sub(now), p.release)
	}
}

// release forwards the paced frames whose time has come and schedules
// itself for the next. Holding the pacer's lock while forwarding keeps a
// frame sent meanwhile (flushOrQueue) behind them.
func (p *SwitchPort) release() {
	q := &p.paced
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	i := 0
	for i < len(q.q) && !q.q[i].at.After(now) {
		i++
	}
	if i > 0 {
		out := make([][]byte, i)
		for j := range out {
			out[j] = q.q[j].f
		}
		q.q = append(q.q[:0], q.q[i:]...)
		if p.LinkUp() {
			p.sw.forward(p, out)
		}
	}
	if len(q.q) > 0 {
		p.sw.ft.after(q.q[0].at.Sub(now), p.release)
	} else {
		q.pending = false
	}
}

// releaseHeld appends the frame wire.reorder held back, after the frame
// that overtook it.
func (p *SwitchPort) releaseHeld(out [][]byte) [][]byte {
	p.heldMu.Lock()
	h := p.held
	p.held = nil
	p.heldMu.Unlock()
	if h != nil {
		out = append(out, h)
	}
	return out
}

// overflowAt counts f as dropped by a full receive queue at its unicast
// destination (or at every other port for a broadcast).
func (p *SwitchPort) overflowAt(f []byte) {
	s := p.sw
	if len(f) < MinFrame {
		return
	}
	var dst [6]byte
	copy(dst[:], f[0:6])
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.table[dst]; ok && dst[0]&1 == 0 {
		e.port.stats.rxDropped.Add(1)
		return
	}
	for _, q := range s.ports {
		if q != p {
			q.stats.rxDropped.Add(1)
		}
	}
}

func (t *faultTimers) link(port string, up bool) {
	if t.onLink != nil {
		t.onLink(port, up)
	}
}

// after runs fn after d unless the switch closes first.
func (t *faultTimers) after(d time.Duration, fn func()) { t.After(d, fn) }

// stop cancels pending timers and waits for running ones.
func (t *faultTimers) stop() { t.Stop() }

// pauseFrameSrc is the source MAC of the PAUSE frames wire.pause.flood
// sends: the switch port's own, a locally administered address.
var pauseFrameSrc = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}

// pauseFlood makes p's link partner (the switch) send p a PAUSE frame
// asking for quanta every period, for the flood's duration: with flow
// control on, p's NIC stops transmitting meanwhile.
func (p *SwitchPort) pauseFlood(act *fault.Action) {
	f := make([]byte, MinFrame+46)
	copy(f, []byte{0x01, 0x80, 0xc2, 0x00, 0x00, 0x01}) // the MAC control group
	copy(f[6:], pauseFrameSrc[:])
	binary.BigEndian.PutUint16(f[12:], 0x8808) // MAC control
	binary.BigEndian.PutUint16(f[14:], 0x0001) // PAUSE
	binary.BigEndian.PutUint16(f[16:], uint16(act.Int("quanta")))
	period := max(act.Duration("period"), 100*time.Microsecond)
	end := time.Now().Add(act.Duration("for"))
	s := p.sw
	var tick func()
	tick = func() {
		s.mu.Lock()
		p.enqueue(&s.bufs, f)
		s.mu.Unlock()
		if time.Now().Add(period).Before(end) {
			s.ft.after(period, tick)
		}
	}
	s.ft.after(0, tick)
}
