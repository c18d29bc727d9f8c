package myrimx

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Hub joins the myrimx NICs of one process: a SEND names a (nic id,
// endpoint) of any of them and the device copies straight from the
// sender's guest pages to the receiver's (both guests' memory is mapped in
// this process, §5). It owns no goroutine.
//
// mu guards every endpoint's matching queues, every operation's state and
// every region's state changes and operation set.
type Hub struct {
	mu     sync.Mutex
	nics   map[uint64]*Device
	serial atomic.Uint64 // region serials: the order chunks take region locks in
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{nics: map[uint64]*Device{}} }

func (h *Hub) add(d *Device) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o, dup := h.nics[d.nicID]; dup {
		return fmt.Errorf("myrimx: %s: nic id %#x already used by %s", d.name, d.nicID, o.name)
	}
	h.nics[d.nicID] = d
	return nil
}

func (h *Hub) remove(d *Device) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nics[d.nicID] == d {
		delete(h.nics, d.nicID)
	}
}

// endpointLocked returns endpoint ep of NIC nic, or nil.
func (h *Hub) endpointLocked(nic uint64, ep uint16) *endpoint {
	d := h.nics[nic]
	if d == nil || int(ep) >= len(d.eps) {
		return nil
	}
	return d.eps[ep]
}

// opState is where a SEND or RECV is.
type opState uint8

const (
	opPosted  opState = iota + 1 // queued, unmatched
	opMatched                    // in a transfer
	opDone                       // completed
)

// op is a SEND or RECV from an endpoint's command ring.
type op struct {
	kind   Opcode
	ep     *endpoint // whose command it is
	seq    uint32
	cookie uint64
	reg    *region
	offset uint64
	length uint32
	match  uint64
	mask   uint64    // RECV
	dest   *endpoint // SEND
	state  opState
	xfer   *transfer
}

// matches is MX's rule: the message's match bits equal the receive's on
// every bit of the receive's mask.
func matches(recv *op, sendMatch uint64) bool {
	return sendMatch&recv.mask == recv.match&recv.mask
}

// transfer is a matched SEND and RECV, moved a chunk at a time by the
// worker of the device whose command matched them.
type transfer struct {
	send, recv *op
	n          uint64 // bytes to move: the shorter of the two
	done       atomic.Uint64
	finished   atomic.Bool // set under Hub.mu
}

// postSendLocked queues o at its destination or matches it with the
// first posted receive there. It returns the transfer to run, if matched.
func (h *Hub) postSendLocked(o *op) *transfer {
	dst := o.dest
	for i, r := range dst.recvs {
		if matches(r, o.match) {
			dst.recvs = slices.Delete(dst.recvs, i, i+1)
			return h.matchLocked(o, r)
		}
	}
	o.state = opPosted
	dst.unexpected = append(dst.unexpected, o)
	o.ep.mine[o] = struct{}{}
	o.reg.ops[o] = struct{}{}
	return nil
}

// postRecvLocked matches o with the earliest waiting send, in arrival
// order, or queues it.
func (h *Hub) postRecvLocked(o *op) *transfer {
	ep := o.ep
	for i, s := range ep.unexpected {
		if matches(o, s.match) {
			ep.unexpected = slices.Delete(ep.unexpected, i, i+1)
			delete(s.ep.mine, s)
			return h.matchLocked(s, o)
		}
	}
	o.state = opPosted
	ep.recvs = append(ep.recvs, o)
	ep.mine[o] = struct{}{}
	o.reg.ops[o] = struct{}{}
	return nil
}

func (h *Hub) matchLocked(s, r *op) *transfer {
	t := &transfer{send: s, recv: r, n: uint64(min(s.length, r.length))}
	for _, o := range []*op{s, r} {
		o.state = opMatched
		o.xfer = t
		o.reg.ops[o] = struct{}{}
		delete(o.ep.mine, o)
	}
	return t
}

// abortLocked completes a posted op with status, nothing transferred.
func (h *Hub) abortLocked(o *op, status Status) []completion {
	if o.state != opPosted {
		return nil
	}
	o.state = opDone
	delete(o.reg.ops, o)
	delete(o.ep.mine, o)
	if o.kind == OpSend {
		o.dest.unexpected = slices.DeleteFunc(o.dest.unexpected, func(x *op) bool { return x == o })
	} else {
		o.ep.recvs = slices.DeleteFunc(o.ep.recvs, func(x *op) bool { return x == o })
	}
	return []completion{o.completion(status, 0)}
}

// finishLocked ends t with status (SUCCESS: the receive reports TRUNCATED
// if the message was longer) and returns both completions, each with the
// bytes that reached the receiver.
func (h *Hub) finishLocked(t *transfer, status Status) []completion {
	if t.finished.Load() {
		return nil
	}
	t.finished.Store(true)
	done := t.done.Load()
	if status == StatusRegionInvalidated && done == t.n {
		status = StatusSuccess // every byte was moved before the invalidation
	}
	for _, o := range []*op{t.send, t.recv} {
		o.state = opDone
		delete(o.reg.ops, o)
	}
	recvStatus := status
	if status == StatusSuccess && t.send.length > t.recv.length {
		recvStatus = StatusTruncated
	}
	return []completion{t.send.completion(status, uint32(done)), t.recv.completion(recvStatus, uint32(done))}
}

// completion is o's SEND_DONE or RECV_DONE.
func (o *op) completion(status Status, xfer uint32) completion {
	ev := event{status: status, seq: o.seq, cookie: o.cookie, region: o.reg.id, gen: o.reg.gen, xferLen: xfer}
	if o.kind == OpSend {
		ev.typ = EvtSendDone
		ev.match = o.match
		ev.msgLen = o.length
	} else {
		ev.typ = EvtRecvDone
		if t := o.xfer; t != nil {
			ev.match = t.send.match
			ev.srcNIC = t.send.ep.dev.nicID
			ev.srcEP = uint16(t.send.ep.idx)
			ev.msgLen = t.send.length
		}
	}
	return completion{ep: o.ep, ev: ev}
}
