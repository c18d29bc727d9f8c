package fabric

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/myriemu/myriemu/fault"
	"github.com/sirupsen/logrus"
)

// DefaultAging is how long the switch remembers where a MAC address lives
// (the 802.1D default).
const DefaultAging = 300 * time.Second

// portQueueLen bounds each port's receive queue, in frames. A full queue
// drops, as a switch's egress buffer does.
const portQueueLen = 2048

// deliverBatch is the most frames handed to a Receiver in one call.
const deliverBatch = 64

// Switch is a learning Ethernet switch joining any number of ports.
//
// Frames are learned and forwarded on the sender's goroutine; each
// destination port queues a copy and delivers it on its own goroutine, so
// a device never runs another device's receive path and two devices
// sending to each other cannot deadlock.
type Switch struct {
	log   *logrus.Entry
	aging time.Duration
	bufs  framePool
	clock *coarseClock

	capture atomic.Pointer[Capture]
	faults  *fault.Set // the wire fault door (fault.go)
	ft      faultTimers

	mu    sync.Mutex // guards ports, table and gen
	ports []*SwitchPort
	table map[[6]byte]macEntry
	// gen counts changes of where a MAC lives (an entry added, moved or
	// dropped), so that a port's lookup cache (portCache) can tell it is
	// still right.
	gen uint64
}

type macEntry struct {
	port *SwitchPort
	seen time.Duration // on the switch's clock
}

// NewSwitch returns a switch with no ports.
func NewSwitch(log *logrus.Entry) *Switch {
	return &Switch{
		log:   log.WithField("component", "fabric"),
		aging: DefaultAging,
		clock: newCoarseClock(),
		table: make(map[[6]byte]macEntry),
	}
}

// SetCapture makes every frame that enters the switch go to c as well
// (nil stops capturing). It returns the capture it replaced, which the
// caller closes.
func (s *Switch) SetCapture(c *Capture) *Capture {
	return s.capture.Swap(c)
}

// NewPort adds a port named name (used in logs and statistics). Its
// administrative link state starts up.
func (s *Switch) NewPort(name string) *SwitchPort {
	p := &SwitchPort{
		sw:     s,
		name:   name,
		queue:  newFrameQueue(portQueueLen),
		notify: make(chan struct{}, 1),
	}
	p.adminUp.Store(true)
	s.mu.Lock()
	s.ports = append(s.ports, p)
	s.mu.Unlock()
	return p
}

// Ports lists the switch's ports in creation order.
func (s *Switch) Ports() []*SwitchPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*SwitchPort(nil), s.ports...)
}

// Close detaches every port. It is idempotent.
func (s *Switch) Close() {
	s.ft.stop()
	s.clock.stop()
	for _, p := range s.Ports() {
		p.Detach()
	}
}

// forward learns the sources of frames sent by src and queues a copy of
// each frame for every port it must reach.
func (s *Switch) forward(src *SwitchPort, frames [][]byte) {
	if c := s.capture.Load(); c != nil {
		c.write(frames)
	}
	now := s.clock.since()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		if len(f) < MinFrame || len(f) > MaxFrame {
			src.tx.errors++
			continue
		}
		src.tx.frames++
		src.tx.bytes += uint64(len(f))
		var dst, srcMAC [6]byte
		copy(dst[:], f[0:6])
		copy(srcMAC[:], f[6:12])
		c := &src.cache
		if srcMAC[0]&1 == 0 && (c.src != srcMAC || c.srcAt != now || c.srcGen != s.gen) {
			e, ok := s.table[srcMAC]
			if !ok || e.port != src {
				s.gen++
			}
			if !ok || e.port != src || e.seen != now {
				s.table[srcMAC] = macEntry{port: src, seen: now}
			}
			c.src, c.srcAt, c.srcGen = srcMAC, now, s.gen
		}
		if dst[0]&1 == 0 {
			if !c.dstOK || c.dst != dst || c.dstAt != now || c.dstGen != s.gen {
				c.dst, c.dstPort, c.dstAt, c.dstGen, c.dstOK = dst, nil, now, s.gen, true
				if e, ok := s.table[dst]; ok && now-e.seen < s.aging {
					c.dstPort = e.port
				}
			}
			if to := c.dstPort; to != nil {
				if to != src {
					to.enqueue(&s.bufs, f)
				}
				continue
			}
		}
		for _, p := range s.ports {
			if p != src {
				p.enqueue(&s.bufs, f)
			}
		}
	}
}

// forget drops the MAC entries that point at p.
func (s *Switch) forget(p *SwitchPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(p)
}

// forgetLocked drops the MAC entries that point at p.
func (s *Switch) forgetLocked(p *SwitchPort) {
	for mac, e := range s.table {
		if e.port == p {
			delete(s.table, mac)
		}
	}
	s.gen++
}

// portCache is what a sending port last learned and looked up in the
// switch's table, so that a stream of frames between two MACs costs no map
// access. An entry holds while the table's gen and the clock's reading are
// the ones it was made at: a reading younger than the ageing time keeps
// the entry fresh. Guarded by the switch's mu.
type portCache struct {
	src     [6]byte
	srcAt   time.Duration
	srcGen  uint64
	dstOK   bool
	dst     [6]byte
	dstPort *SwitchPort // nil: unknown, flooded
	dstAt   time.Duration
	dstGen  uint64
}

// PortStats are a port's counters. Tx is what the device sent into the
// switch, Rx what the switch delivered to the device.
type PortStats struct {
	TxFrames, TxBytes, TxErrors, TxDropped uint64
	RxFrames, RxBytes, RxDropped           uint64
}

type portCounters struct {
	txDropped                    atomic.Uint64
	rxFrames, rxBytes, rxDropped atomic.Uint64
}

// txCounters are what the switch took from a port, counted under the
// switch's mu that forward holds anyway: two atomic adds per frame cost
// more than the rest of the table work.
type txCounters struct {
	frames, bytes, errors uint64
}

// SwitchPort is one port of a Switch. It implements Port.
type SwitchPort struct {
	sw    *Switch
	name  string
	queue *frameQueue
	stats portCounters
	tx    txCounters // guarded by sw.mu
	cache portCache  // guarded by sw.mu

	adminUp  atomic.Bool
	attached atomic.Bool

	notify chan struct{} // wakes the delivery goroutine for link events

	mu          sync.Mutex // guards recv, stop, done, pendingLink
	recv        Receiver
	stop        chan struct{}
	done        chan struct{}
	pendingLink []bool

	heldMu sync.Mutex
	held   []byte // a frame wire.reorder holds back (fault.go)

	paced pacer // frames wire.rate and wire.slot send later (fault.go)
}

var _ Port = (*SwitchPort)(nil)

// Name returns the port's name.
func (p *SwitchPort) Name() string { return p.name }

// Send implements Port.
func (p *SwitchPort) Send(frames [][]byte) {
	if !p.LinkUp() {
		p.stats.txDropped.Add(uint64(len(frames)))
		return
	}
	if p.sw.faults.Armed(fault.Wire) {
		p.sendFaulty(frames)
		return
	}
	p.sw.forward(p, frames)
}

// LinkUp implements Port.
func (p *SwitchPort) LinkUp() bool { return p.attached.Load() && p.adminUp.Load() }

// SetLink sets the port's administrative link state, as pulling or
// plugging the cable would; the attached receiver sees LinkChanged.
func (p *SwitchPort) SetLink(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.adminUp.Swap(up) == up || p.recv == nil {
		return
	}
	p.pendingLink = append(p.pendingLink, up)
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Stats returns the port's counters.
func (p *SwitchPort) Stats() PortStats {
	p.sw.mu.Lock()
	tx := p.tx
	p.sw.mu.Unlock()
	c := &p.stats
	return PortStats{
		TxFrames: tx.frames, TxBytes: tx.bytes,
		TxErrors: tx.errors, TxDropped: c.txDropped.Load(),
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(),
		RxDropped: c.rxDropped.Load(),
	}
}

// Attach implements Port. The first call r sees is LinkChanged with the
// carrier at attach time.
func (p *SwitchPort) Attach(r Receiver) {
	p.Detach()
	p.drain() // frames a racing sender queued after the last Detach
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recv = r
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	p.pendingLink = append(p.pendingLink[:0], p.adminUp.Load())
	p.attached.Store(true)
	select {
	case p.notify <- struct{}{}:
	default:
	}
	go p.runDeliver(r, p.stop, p.done)
	p.sw.log.WithField("port", p.name).Debug("port attached")
}

// Detach implements Port.
func (p *SwitchPort) Detach() {
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.recv, p.stop, p.done = nil, nil, nil
	p.attached.Store(false)
	p.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-done
	p.sw.forget(p)
	p.drain()
	p.sw.log.WithField("port", p.name).Debug("port detached")
}

// drain drops the frames queued for a receiver that is gone.
func (p *SwitchPort) drain() {
	var batch [deliverBatch]*frame
	for {
		fs := p.queue.pop(batch[:0], deliverBatch)
		if len(fs) == 0 {
			return
		}
		p.stats.rxDropped.Add(uint64(len(fs)))
		p.sw.bufs.give(fs)
	}
}

// enqueue queues a copy of f for delivery, or drops it. The switch's mu is
// held (the pool's sender side and the queue's producer side need it).
func (p *SwitchPort) enqueue(pool *framePool, f []byte) {
	if !p.LinkUp() {
		p.stats.rxDropped.Add(1)
		return
	}
	fr := pool.get(len(f))
	copy(fr.b, f)
	if !p.queue.push(fr) {
		p.stats.rxDropped.Add(1)
		pool.unget(fr)
	}
}

// runDeliver hands queued frames and link events to r until stop closes.
func (p *SwitchPort) runDeliver(r Receiver, stop, done chan struct{}) {
	defer close(done)
	log := p.sw.log.WithField("port", p.name)
	log.Debug("delivery started")
	defer log.Debug("delivery stopped")
	batch := make([]*frame, 0, deliverBatch)
	views := make([][]byte, 0, deliverBatch)
	var used frameReturns
	defer used.flush(&p.sw.bufs)
	for {
		select {
		case <-stop:
			return
		case <-p.notify:
			p.mu.Lock()
			events := append([]bool(nil), p.pendingLink...)
			p.pendingLink = p.pendingLink[:0]
			p.mu.Unlock()
			for _, up := range events {
				r.LinkChanged(up)
			}
		case <-p.queue.ready:
			// Batches until the queue is empty, or stop: a sender that
			// never pauses must not keep Detach waiting.
			for {
				batch = p.queue.pop(batch[:0], deliverBatch)
				if len(batch) == 0 {
					break
				}
				p.deliver(r, batch, views, &used)
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}
}

// deliver hands a batch of frames to r, then their buffers to used.
// views is scratch space of the batch's capacity.
func (p *SwitchPort) deliver(r Receiver, batch []*frame, views [][]byte, used *frameReturns) {
	views = views[:0]
	var bytes uint64
	for _, f := range batch {
		views = append(views, f.b)
		bytes += uint64(len(f.b))
	}
	// Counted before delivery, so whoever sees a frame arrive also sees
	// it counted.
	p.stats.rxFrames.Add(uint64(len(batch)))
	p.stats.rxBytes.Add(bytes)
	r.Deliver(views)
	for i, f := range batch {
		used.add(&p.sw.bufs, f)
		batch[i], views[i] = nil, nil
	}
}

// frame is a pooled copy of one frame; b is resliced to the frame length.
type frame struct {
	b   []byte
	big bool
}

// smallFrame fits every frame of a 1500-byte MTU with a VLAN tag.
const smallFrame = 1536

// framePool recycles frame buffers in two size classes, so that small
// frames do not pin jumbo-sized buffers.
//
// Small frames go round between the senders, which take them under the
// switch's mu, and the delivery goroutines, which give them back a batch
// at a time: a small frame costs no atomic operation of its own, where a
// sync.Pool Get and Put cost two. It keeps at most poolKeep of them on its
// free list, as many again in the senders' stash and returnBatch per
// delivery goroutine (1.5 MiB each); beyond that they go to a sync.Pool,
// which the GC empties. Big frames, whose copy costs far more than two
// atomic operations, only use their sync.Pool.
type framePool struct {
	stash []*frame // small frames senders take; guarded by the switch's mu

	mu   sync.Mutex
	free []*frame // small frames given back; a sender swaps it for its empty stash

	small, big sync.Pool
}

// poolKeep bounds the small free list and the stash; returnBatch is how
// many small frames a delivery goroutine collects before it gives them
// back.
const (
	poolKeep    = 1024
	returnBatch = 32
)

// get returns a frame of n bytes. The switch's mu is held.
func (fp *framePool) get(n int) *frame {
	if n > smallFrame {
		if f, ok := fp.big.Get().(*frame); ok {
			f.b = f.b[:n]
			return f
		}
		return &frame{b: make([]byte, n, MaxFrame), big: true}
	}
	st := fp.stash
	if len(st) == 0 {
		fp.mu.Lock()
		st, fp.free = fp.free, st
		fp.mu.Unlock()
	}
	if k := len(st); k > 0 {
		f := st[k-1]
		st[k-1] = nil
		fp.stash = st[:k-1]
		f.b = f.b[:n]
		return f
	}
	fp.stash = st
	if f, ok := fp.small.Get().(*frame); ok {
		f.b = f.b[:n]
		return f
	}
	return &frame{b: make([]byte, n, smallFrame)}
}

// unget puts back a frame get returned and that was not used. The
// switch's mu is held.
func (fp *framePool) unget(f *frame) { fp.putOn(&fp.stash, f) }

// give returns frames under one lock.
func (fp *framePool) give(fs []*frame) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	for i, f := range fs {
		fs[i] = nil
		fp.putOn(&fp.free, f)
	}
}

// putOn keeps a small frame on list while it has room for it, and gives
// every other frame to its sync.Pool. The caller holds list's lock.
func (fp *framePool) putOn(list *[]*frame, f *frame) {
	switch {
	case f.big:
		fp.big.Put(f)
	case len(*list) < poolKeep:
		*list = append(*list, f)
	default:
		fp.small.Put(f)
	}
}

// frameReturns collects the small frames one delivery goroutine is done
// with and gives them back to the pool returnBatch at a time.
type frameReturns struct {
	fs []*frame
}

func (r *frameReturns) add(fp *framePool, f *frame) {
	if f.big {
		fp.big.Put(f)
		return
	}
	r.fs = append(r.fs, f)
	if len(r.fs) >= returnBatch {
		fp.give(r.fs)
		r.fs = r.fs[:0]
	}
}

// flush gives back every frame collected.
func (r *frameReturns) flush(fp *framePool) {
	fp.give(r.fs)
	r.fs = r.fs[:0]
}
