package myrimx_test

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
)

// FuzzCommandStream drives random command streams on two endpoints of two
// NICs and checks the device against an oracle: a sequential model of
// §6.3-§6.6 that predicts every completion (type, status, cmd_seq,
// cookie, lengths, match, source) and every byte of every buffer. Each
// command is executed (a FENCE the oracle does not see waits for it)
// before the next is posted, so the outcome is deterministic. The audit
// runs in enforce mode and must see nothing.
//
// Input: 8 bytes per command; see decode.
func FuzzCommandStream(f *testing.F) {
	f.Add([]byte{
		0, 0, 1, 1, 1, 0, 0, 100, // REG ep0 id1 gen1 SEND_SRC buf0 len 4001
		0, 1, 2, 1, 2, 0, 1, 120, // REG ep1 id2 gen1 RECV_DST buf0 off100
		3, 1, 2, 1, 0, 60, 1, 3, // RECV ep1 (2,1) any match
		2, 0, 1, 1, 2, 40, 1, 0, // SEND ep0 (1,1) 2000 bytes
	})
	f.Add([]byte{
		0, 1, 0, 0, 3, 1, 0, 250, // REG ep1 id0 gen0 both, buf1
		0, 0, 3, 2, 1, 1, 1, 200, // REG ep0 id3 gen2 SEND_SRC buf1 off100
		2, 0, 3, 2, 0, 100, 2, 0, // SEND ep0 -> ep1 match 2, waits
		2, 0, 3, 2, 10, 10, 2, 0, // second, same match: arrival order
		3, 1, 0, 0, 0, 5, 2, 3, // RECV short: TRUNCATED
		3, 1, 0, 0, 0, 200, 2, 3, // RECV takes the second
		1, 0, 3, 2, 0, 0, 0, 0, // DEREG ep0 (3,2)
		0, 0, 3, 2, 1, 1, 1, 200, // REG the same generation again: BUSY
		2, 0, 3, 2, 0, 1, 0, 0, // SEND with the stale handle
	})
	f.Add([]byte{
		3, 1, 0, 0, 0, 1, 0, 3, // RECV without a region
		0, 1, 1, 1, 2, 2, 0, 1, // REG of unmapped pages
		7, 0, 0x99, 0, 0, 0, 0, 0, // garbage
		5, 0, 1, 0, 0, 0, 0, 0, // FENCE with event
		6, 1, 1, 0, 0, 0, 0, 0, // NOP with event
		0, 1, 1, 1, 2, 0, 0, 10, // REG
		3, 1, 1, 1, 0, 1, 3, 1, // RECV mask 1
		4, 1, 0, 0, 0, 0, 0, 0, // CANCEL it
		1, 1, 1, 1, 5, 0, 0, 0, // DEREG
		1, 1, 1, 1, 5, 0, 0, 0, // DEREG again: retired, SUCCESS
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 8*48 {
			data = data[:8*48]
		}
		runStream(t, data)
	})
}

// Buffers: each endpoint has two buffers of three scattered pages, and a
// third "buffer" the client never mapped.
const (
	fzPages = 3
	fzSize  = fzPages * 4096
)

type oracleRegion struct {
	gen, access uint32
	buf         int
	first, len  uint64
}

type oracleOp struct {
	kind        myrimx.Opcode
	ep          int
	seq         uint32
	cookie      uint64
	id, gen     uint32
	off         uint64
	length      uint32
	match, mask uint64
	reg         oracleRegion
}

type oracleEP struct {
	slots      map[uint32]oracleRegion
	retired    map[uint32][]uint32
	recvs      []*oracleOp
	unexpected []*oracleOp
	mine       []*oracleOp
	mem        [2][]byte // the buffers' bytes
}

type oracle struct {
	eps    [2]*oracleEP
	events [2][]mxtest.Event // expected from the current command
	nics   [2]uint64
}

func (o *oracle) post(ep int, ev mxtest.Event) { o.events[ep] = append(o.events[ep], ev) }

// lookup mirrors the device's acquire (§6.5 step 1).
func (e *oracleEP) lookup(id, gen, access uint32, off uint64, n uint32) (oracleRegion, myrimx.Status) {
	r, ok := e.slots[id]
	if id >= myrimx.RegionsPerEP || !ok || r.gen != gen {
		return r, myrimx.StatusBadRDMAWin
	}
	if r.access&access != access || off > r.len || uint64(n) > r.len-off {
		return r, myrimx.StatusAccess
	}
	return r, myrimx.StatusSuccess
}

func matchOK(recv *oracleOp, match uint64) bool { return match&recv.mask == recv.match&recv.mask }

// transfer moves the message and posts both completions.
func (o *oracle) transfer(s, r *oracleOp) {
	n := min(s.length, r.length)
	src := o.eps[s.ep].mem[s.reg.buf][s.reg.first+s.off:]
	copy(o.eps[r.ep].mem[r.reg.buf][r.reg.first+r.off:], src[:n])
	o.post(s.ep, mxtest.Event{Type: myrimx.EvtSendDone, Seq: s.seq, Cookie: s.cookie, Match: s.match, MsgLen: s.length,
		XferLen: n, Region: s.id, Gen: s.gen})
	st := myrimx.StatusSuccess
	if s.length > r.length {
		st = myrimx.StatusTruncated
	}
	o.post(r.ep, mxtest.Event{Type: myrimx.EvtRecvDone, Status: st, Seq: r.seq, Cookie: r.cookie, Match: s.match,
		SrcNIC: o.nics[s.ep], SrcEP: 0, MsgLen: s.length, XferLen: n, Region: r.id, Gen: r.gen})
}

func (o *oracle) abort(op *oracleOp, st myrimx.Status) {
	e := o.eps[op.ep]
	e.mine = slices.DeleteFunc(e.mine, func(x *oracleOp) bool { return x == op })
	if op.kind == myrimx.OpSend {
		d := o.eps[1-op.ep]
		d.unexpected = slices.DeleteFunc(d.unexpected, func(x *oracleOp) bool { return x == op })
		o.post(op.ep, mxtest.Event{Type: myrimx.EvtSendDone, Status: st, Seq: op.seq, Cookie: op.cookie, Match: op.match,
			MsgLen: op.length, Region: op.id, Gen: op.gen})
	} else {
		e.recvs = slices.DeleteFunc(e.recvs, func(x *oracleOp) bool { return x == op })
		o.post(op.ep, mxtest.Event{Type: myrimx.EvtRecvDone, Status: st, Seq: op.seq, Cookie: op.cookie, Region: op.id, Gen: op.gen})
	}
}

// fzEP is the harness side of one endpoint.
type fzEP struct {
	nic   *mxtest.NIC
	ep    *mxtest.Endpoint
	bufs  [3]mxtest.Buffer
	lists [3]uint64 // page lists in guest memory
	fence uint64
}

func runStream(t *testing.T, data []byte) {
	hub := myrimx.NewHub()
	var h [2]*fzEP
	o := &oracle{}
	for i := range 2 {
		n := mxtest.NewNIC(t, hub, mxtest.Options{Name: fmt.Sprintf("fz%d", i), Audit: dma.AuditEnforce,
			RAMSize: 2 << 20, Base: uint64(1+2*i) << 30, Endpoints: 1})
		e := &fzEP{nic: n, ep: n.Open(0, 7, 10)}
		oe := &oracleEP{slots: map[uint32]oracleRegion{}, retired: map[uint32][]uint32{}}
		for b := range 2 {
			e.bufs[b] = n.AllocBuffer(fzSize, true)
			p := pattern(fzSize, uint64(10*i+b))
			n.Fill(e.bufs[b], 0, p)
			oe.mem[b] = p
		}
		e.bufs[2] = n.UnmappedBuffer(fzPages)
		for b := range 3 {
			e.lists[b] = n.Alloc(8*fzPages, 8)
			for k, pg := range e.bufs[b].Pages {
				n.ChangePageList(e.lists[b], k, pg)
			}
		}
		h[i], o.eps[i] = e, oe
		o.nics[i] = n.Dev.NICID()
	}
	seqs := [2]uint32{}
	for i := 0; i+8 <= len(data); i += 8 {
		b := data[i : i+8]
		ep := int(b[1] & 1)
		e, oe := h[ep], o.eps[ep]
		cmd, want := decode(b, e, oe, o, ep, seqs[ep]+1)
		seqs[ep]++
		o.events = [2][]mxtest.Event{}
		want(o)
		e.ep.Post(cmd)
		e.fence++
		if err := e.ep.Fence(e.fence); err != nil {
			t.Fatalf("command %d: %v", i/8, err)
		}
		seqs[ep]++ // the fence's cmd_seq
		for k := range 2 {
			got := collect(t, h[k].ep, len(o.events[k]))
			sortEvents(got)
			sortEvents(o.events[k])
			if !slices.Equal(got, o.events[k]) {
				t.Fatalf("command %d (% x) on ep%d: endpoint %d events\n got  %v\n want %v", i/8, b, ep, k, got, o.events[k])
			}
		}
	}
	for k := range 2 {
		for bi := range 2 {
			if got := h[k].nic.Read(h[k].bufs[bi], 0, fzSize); !bytes.Equal(got, o.eps[k].mem[bi]) {
				t.Fatalf("endpoint %d buffer %d differs from the oracle", k, bi)
			}
		}
		if c := h[k].nic.Dev.AuditCounters(); c.Violations != 0 {
			t.Fatalf("endpoint %d: audit %+v", k, c)
		}
	}
}

func sortEvents(evs []mxtest.Event) {
	slices.SortFunc(evs, func(a, b mxtest.Event) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Type, b.Type))
	})
}

// collect waits for n events (bounded) and then checks that no more are
// queued.
func collect(t *testing.T, e *mxtest.Endpoint, n int) []mxtest.Event {
	t.Helper()
	var got []mxtest.Event
	deadline := time.Now().Add(mxtest.WaitTimeout)
	for len(got) < n {
		got = append(got, e.Drain()...)
		if len(got) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %d: %d events, want %d: %v", e.Index, len(got), n, got)
		}
		time.Sleep(20 * time.Microsecond)
	}
	return append(got, e.Drain()...)
}

// decode turns 8 input bytes into a command and the oracle's prediction.
func decode(b []byte, e *fzEP, oe *oracleEP, o *oracle, ep int, seq uint32) (mxtest.Cmd, func(*oracle)) {
	id, gen := uint32(b[2]%4), uint32(b[3]%4)
	if b[2] == 0xff {
		id = myrimx.RegionsPerEP + 1
	}
	switch b[0] % 8 {
	case 0: // REG
		access := uint32(b[4] % 4)
		buf := int(b[5] % 3)
		first := uint64(b[6]%2) * 100
		length := min(1+uint64(b[7])*50, fzSize-first)
		bb := e.bufs[buf]
		bb.FirstOff, bb.Length = first, length
		c := mxtest.RegCmd(id, gen, access, bb, e.lists[buf])
		// Pages actually needed for first+length.
		np := uint32((first + length + 4095) / 4096)
		le32(c[:], myrimx.CmdRegNrPages, np)
		return c, func(o *oracle) {
			ev := mxtest.Event{Type: myrimx.EvtRegDone, Seq: seq, Cookie: uint64(id)<<32 | uint64(gen), Region: id, Gen: gen}
			_, busy := oe.slots[id]
			switch {
			case id >= myrimx.RegionsPerEP || access == 0:
				ev.Status = myrimx.StatusBadCommand
			case busy || slices.Contains(oe.retired[id], gen):
				ev.Status = myrimx.StatusBusy
			case buf == 2:
				ev.Status = myrimx.StatusBadAddress
			default:
				oe.slots[id] = oracleRegion{gen: gen, access: access, buf: buf, first: first, len: length}
			}
			o.post(ep, ev)
		}
	case 1: // DEREG
		reason := myrimx.Reason(b[4] % 12)
		return mxtest.DeregCmd(id, gen, reason), func(o *oracle) {
			ev := mxtest.Event{Type: myrimx.EvtDeregDone, Seq: seq, Cookie: uint64(id)<<32 | uint64(gen), Region: id,
				Gen: gen, Reason: uint8(reason)}
			r, ok := oe.slots[id]
			switch {
			case ok && r.gen == gen:
				for _, q := range []*oracleEP{o.eps[0], o.eps[1]} {
					for _, op := range slices.Concat(q.recvs, q.unexpected) {
						if op.ep == ep && op.id == id && op.gen == gen {
							o.abort(op, myrimx.StatusRegionInvalidated)
						}
					}
				}
				delete(oe.slots, id)
				g := append(oe.retired[id], gen)
				if len(g) > 8 {
					g = g[len(g)-8:]
				}
				oe.retired[id] = g
			case !slices.Contains(oe.retired[id], gen):
				ev.Status = myrimx.StatusBadRDMAWin
			}
			o.post(ep, ev)
		}
	case 2: // SEND to the other endpoint
		off, n, match := uint64(b[4])*50, uint32(b[5])*50, uint64(b[6]%4)
		nic := o.nics[1-ep]
		if b[7] == 0xff {
			nic = 0x1234 // no such NIC
		}
		cookie := uint64(seq) | 0xa<<32
		return mxtest.SendCmd(id, gen, off, n, nic, 0, match, cookie), func(o *oracle) {
			r, st := oe.lookup(id, gen, myrimx.AccessSendSrc, off, n)
			if st == myrimx.StatusSuccess && nic == 0x1234 {
				st = myrimx.StatusBadEndpoint
			}
			if st != myrimx.StatusSuccess {
				o.post(ep, mxtest.Event{Type: myrimx.EvtSendDone, Status: st, Seq: seq, Cookie: cookie, Match: match,
					MsgLen: n, Region: id, Gen: gen})
				return
			}
			op := &oracleOp{kind: myrimx.OpSend, ep: ep, seq: seq, cookie: cookie, id: id, gen: gen, off: off, length: n,
				match: match, reg: r}
			dest := o.eps[1-ep]
			for i, rv := range dest.recvs {
				if matchOK(rv, match) {
					dest.recvs = slices.Delete(dest.recvs, i, i+1)
					o.eps[rv.ep].mine = slices.DeleteFunc(o.eps[rv.ep].mine, func(x *oracleOp) bool { return x == rv })
					o.transfer(op, rv)
					return
				}
			}
			dest.unexpected = append(dest.unexpected, op)
			oe.mine = append(oe.mine, op)
		}
	case 3: // RECV
		off, n, match := uint64(b[4])*50, uint32(b[5])*50, uint64(b[6]%4)
		mask := []uint64{0, 1, 2, ^uint64(0)}[b[7]%4]
		cookie := uint64(seq) | 0xb<<32
		return mxtest.RecvCmd(id, gen, off, n, match, mask, cookie), func(o *oracle) {
			r, st := oe.lookup(id, gen, myrimx.AccessRecvDst, off, n)
			if st != myrimx.StatusSuccess {
				o.post(ep, mxtest.Event{Type: myrimx.EvtRecvDone, Status: st, Seq: seq, Cookie: cookie, Region: id, Gen: gen})
				return
			}
			op := &oracleOp{kind: myrimx.OpRecv, ep: ep, seq: seq, cookie: cookie, id: id, gen: gen, off: off, length: n,
				match: match, mask: mask, reg: r}
			for i, s := range oe.unexpected {
				if matchOK(op, s.match) {
					oe.unexpected = slices.Delete(oe.unexpected, i, i+1)
					o.eps[s.ep].mine = slices.DeleteFunc(o.eps[s.ep].mine, func(x *oracleOp) bool { return x == s })
					o.transfer(s, op)
					return
				}
			}
			oe.recvs = append(oe.recvs, op)
			oe.mine = append(oe.mine, op)
		}
	case 4: // CANCEL a recent command of this endpoint
		target := seq - 2*uint32(1+b[2]%4) // commands alternate with the harness's fences
		return mxtest.CancelCmd(target), func(o *oracle) {
			ev := mxtest.Event{Type: myrimx.EvtCancelDone, Seq: seq, Status: myrimx.StatusNotFound}
			for _, op := range oe.mine {
				if op.seq == target {
					o.abort(op, myrimx.StatusCancelled)
					ev.Status = myrimx.StatusSuccess
					break
				}
			}
			o.post(ep, ev)
		}
	case 5: // FENCE (the harness's fence numbering continues from it)
		withEvent := b[2]&1 != 0
		e.fence++
		fseq := e.fence
		return mxtest.FenceCmd(fseq, withEvent), func(o *oracle) {
			if withEvent {
				o.post(ep, mxtest.Event{Type: myrimx.EvtFenceDone, Seq: seq, Cookie: fseq, Match: fseq})
			}
		}
	case 6: // NOP
		withEvent := b[2]&1 != 0
		return mxtest.NopCmd(withEvent), func(o *oracle) {
			if withEvent {
				o.post(ep, mxtest.Event{Type: myrimx.EvtNopDone, Seq: seq})
			}
		}
	default: // an opcode the device does not know
		var c mxtest.Cmd
		c[myrimx.CmdOpcode] = 0x80 | b[2]
		if b[2]&1 != 0 {
			c[myrimx.CmdOpcode] = 0
		}
		copy(c[8:], b)
		cookie := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 |
			uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		return c, func(o *oracle) {
			o.post(ep, mxtest.Event{Type: myrimx.EvtEPError, Status: myrimx.StatusBadCommand, Seq: seq, Cookie: cookie})
		}
	}
}
