package mxtest

import (
	"sync/atomic"
	"unsafe"

	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
)

// loadWord loads the first 4 bytes of b as the device stored them: one
// atomic 4-byte store (b is mmapped guest RAM, 4-aligned).
func loadWord(b []byte) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[0])))
}

// What a buggy or hostile driver does, on purpose.

// UnmappedBuffer is a buffer whose pages the client never mapped: its REG
// must fail BAD_ADDRESS.
func (n *NIC) UnmappedBuffer(pages int) Buffer {
	b := Buffer{Length: uint64(pages) * 4096, UserVA: 0x7e00_0000_0000}
	for i := range pages {
		b.Pages = append(b.Pages, 0x10_0000_0000+uint64(i)*4096)
	}
	return b
}

// ReadOnlyBuffer maps size more bytes of RAM at iova read-only (as a ROM
// or a read-only client map) and returns a buffer over them: a REG with
// RECV_DST must fail BAD_ADDRESS, one with SEND_SRC only succeeds.
func (n *NIC) ReadOnlyBuffer(iova uint64, size int) Buffer {
	ram := dmatest.NewRAM(n.tb, size)
	if err := n.Map.Add(dma.Mapping{IOVA: iova, Size: uint64(size), Fd: ram.Fd(), Prot: dma.ProtRead}); err != nil {
		n.tb.Fatalf("mxtest: read-only map: %v", err)
	}
	b := Buffer{Length: uint64(size), UserVA: 0x7d00_0000_0000}
	for off := 0; off < size; off += 4096 {
		b.Pages = append(b.Pages, iova+uint64(off))
	}
	return b
}

// ChangePageList rewrites entry i of a registered buffer's page list in
// guest memory after REG: the device's copy must stay the truth.
func (n *NIC) ChangePageList(list uint64, i int, page uint64) {
	le.PutUint64(n.Bytes(list+8*uint64(i), 8), page)
}

// Garbage returns k command slots of random bytes whose opcodes are not
// valid (the rest of each slot random too).
func Garbage(k int, seed uint64) [][myrimx.CmdSize]byte {
	out := make([][myrimx.CmdSize]byte, k)
	x := seed | 1
	for i := range out {
		for j := range out[i] {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			out[i][j] = byte(x)
		}
		out[i][myrimx.CmdOpcode] = byte(0x80 | x%0x7f) // never a real opcode
	}
	return out
}

// Flood posts k NOPs asking for events without polling: once the event
// queue is full the endpoint must go to ERROR with EVENTQ_FULL.
func (e *Endpoint) Flood(k int) {
	for range k {
		e.Post(NopCmd(true))
	}
}

// Reopen resets and reopens the endpoint with the same rings (how a
// driver recovers an endpoint in ERROR).
func (e *Endpoint) Reopen() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.NIC.Write32(e.reg+myrimx.EPCtrl, myrimx.EPCtrlReset)
	clear(e.NIC.Bytes(e.EQ, myrimx.EventSize<<e.EQOrder))
	e.tail, e.eqHead, e.pending = 0, 0, nil
	e.NIC.Write32(e.reg+myrimx.EPCtrl, myrimx.EPCtrlOpen)
}
