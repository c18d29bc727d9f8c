package vhostuser

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"
)

// TestMalformedMessages is the malformed-message suite: each bad request is
// refused (an error reply where the front end asked for one) and counted,
// and the session goes on; an undecodable header drops the connection,
// counted, and the next front end is served.
func TestMalformedMessages(t *testing.T) {
	leaktest.Check(t)
	bt, path := startBackend(t)
	fe := dial(t, path)
	fe.send(ReqSetProtocolFeatures, 0, u64(ProtocolReplyAck), nil, false)
	refused := func(name string, req Request, payload []byte, fds []int) {
		t.Helper()
		st := fe.send(req, flagNeedReply, payload, fds, true)
		if len(st) != 8 || binary.LittleEndian.Uint64(st) == 0 {
			t.Errorf("%s: acked %x, want a refusal", name, st)
		}
	}
	refused("short state", ReqSetVringNum, []byte{1, 2, 3}, nil)
	refused("ring out of range", ReqSetVringNum, state(7, 16), nil)
	refused("ring size not a power of two", ReqSetVringNum, state(0, 12), nil)
	refused("ring size zero", ReqSetVringNum, state(0, 0), nil)
	refused("features not offered", ReqSetFeatures, u64(1<<40), nil)
	refused("protocol features not offered", ReqSetProtocolFeatures, u64(1<<20), nil)
	refused("mem table without fds", ReqSetMemTable, memTable(Region{0, memSize, userBase, 0}), nil)
	refused("mem table with two fds for one region", ReqSetMemTable, memTable(Region{0, memSize, userBase, 0}), []int{fe.memfd, fe.memfd})
	refused("mem table of zero regions", ReqSetMemTable, memTable(), nil)
	refused("mem table region wrapping", ReqSetMemTable, memTable(Region{^uint64(0) - 10, memSize, userBase, 0}), []int{fe.memfd})
	refused("kick without fd and without the no-fd flag", ReqSetVringKick, u64(0), nil)
	refused("kick polling mode", ReqSetVringKick, u64(0x100), nil)
	refused("kick for a ring out of range", ReqSetVringKick, u64(5), []int{fe.kick[0]})
	refused("base beyond 16 bits", ReqSetVringBase, state(0, 1<<20), nil)
	refused("unknown request", Request(99), nil, nil)
	// Ring addresses outside guest memory, once memory is known.
	fe.send(ReqSetMemTable, 0, memTable(Region{0, memSize, userBase, 0}), []int{fe.memfd}, false)
	fe.send(ReqSetVringNum, 0, state(0, qsize), nil, false)
	bad := ringAddr(0)
	binary.LittleEndian.PutUint64(bad[8:], userBase+memSize-8) // descriptor table runs off the end
	refused("descriptor table outside memory", ReqSetVringAddr, bad, nil)
	if n := bt.b.Stats().BadMessages; n != 16 {
		t.Errorf("%d bad messages counted, want 16", n)
	}

	// Undecodable: the connection goes.
	hdr := appendHeader(nil, Header{Request: ReqGetFeatures, Flags: 2}) // version 2
	fe.c.Write(hdr)
	fe.c.SetReadDeadline(time.Now().Add(wait))
	if _, err := fe.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after a header of version 2")
	}
	fe2 := dial(t, path)
	fe2.c.Write(appendHeader(nil, Header{Request: ReqSetMemTable, Flags: flagVersion, Size: 1 << 20}))
	fe2.c.SetReadDeadline(time.Now().Add(wait))
	if _, err := fe2.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after a 1 MiB payload size")
	}
	fe3 := dial(t, path)
	fe3.setUp() // served as if nothing happened
	if n := bt.b.Stats().BadMessages; n != 18 {
		t.Errorf("%d bad messages counted, want 18", n)
	}
}

// TestMalformedRings: a guest that corrupts a ring puts the backend in its
// error state (carrier down, counted), touching nothing outside guest
// memory; the front end's next session works again.
func TestMalformedRings(t *testing.T) {
	leaktest.Check(t)
	cases := []struct {
		name string
		q    int
		ring func(fe *frontEnd) // sets up and offers the bad chain
	}{
		{"tx descriptor outside memory", txQueue, func(fe *frontEnd) {
			fe.setDesc(txQueue, 0, memSize-10, 100, 0, 0)
			fe.offer(txQueue, 0)
		}},
		{"tx descriptor length wrapping", txQueue, func(fe *frontEnd) {
			fe.setDesc(txQueue, 0, buf(txQueue, 0), 0xffffffff, 0, 0)
			fe.offer(txQueue, 0)
		}},
		{"tx descriptor loop", txQueue, func(fe *frontEnd) {
			fe.setDesc(txQueue, 0, buf(txQueue, 0), 100, descFNext, 1)
			fe.setDesc(txQueue, 1, buf(txQueue, 1), 100, descFNext, 0)
			fe.offer(txQueue, 0)
		}},
		{"tx next beyond the ring", txQueue, func(fe *frontEnd) {
			fe.setDesc(txQueue, 0, buf(txQueue, 0), 100, descFNext, qsize+3)
			fe.offer(txQueue, 0)
		}},
		{"tx head beyond the ring", txQueue, func(fe *frontEnd) {
			fe.offer(txQueue, qsize)
		}},
		{"tx indirect descriptor", txQueue, func(fe *frontEnd) {
			fe.setDesc(txQueue, 0, buf(txQueue, 0), 16, descFIndirect, 0)
			fe.offer(txQueue, 0)
		}},
		{"tx writable buffer", txQueue, func(fe *frontEnd) {
			fe.setDesc(txQueue, 0, buf(txQueue, 0), 100, descFWrite, 0)
			fe.offer(txQueue, 0)
		}},
		{"tx available index far ahead", txQueue, func(fe *frontEnd) {
			fe.avail[txQueue] = 999 // offer makes it 1000, with only 16 entries
			fe.offer(txQueue, 0)
		}},
		{"rx read-only buffer", rxQueue, func(fe *frontEnd) {
			fe.setDesc(rxQueue, 0, buf(rxQueue, 0), 2048, 0, 0)
			fe.offer(rxQueue, 0)
		}},
		{"rx buffer outside memory", rxQueue, func(fe *frontEnd) {
			fe.setDesc(rxQueue, 0, memSize+4096, 2048, descFWrite, 0)
			fe.offer(rxQueue, 0)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bt, path := startBackend(t)
			fe := dial(t, path)
			fe.setUp()
			if !<-bt.carrier {
				t.Fatal("carrier not up")
			}
			c.ring(fe)
			if c.q == rxQueue {
				bt.b.Receive([][]byte{testFrame(100, 1)})
			}
			eventually(t, "ring error counted", func() bool { return bt.b.Stats().RingErrors == 1 })
			if up := <-bt.carrier; up {
				t.Fatal("carrier still up after a ring error")
			}
			bt.b.Receive([][]byte{testFrame(100, 1)}) // dropped, not processed
			if st := bt.b.Stats(); st.RxFrames != 0 || st.TxFrames != 0 {
				t.Errorf("data moved on a broken ring: %+v", st)
			}
			fe.c.Close()
			fe2 := dial(t, path)
			fe2.setUp()
			if !<-bt.carrier {
				t.Fatal("carrier not up for the next session")
			}
		})
	}
}
