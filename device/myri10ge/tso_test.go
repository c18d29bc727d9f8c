package myri10ge_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/myriemu/myriemu/device/myri10ge/myritest"
)

// tsoCase is one TSO packet: the super-frame spec, its payload length and
// MSS, and how it sits in guest memory.
type tsoCase struct {
	name     string
	spec     frameSpec
	payload  int
	mss      int
	pieces   []piece
	boundary int
	idx      int
}

// tsoPacket lays out the super-frame of c in guest RAM, with junk where
// the stack leaves seeds and where the device must recompute (IPv4 header
// checksum, TCP checksum), and describes it for the encoder. It returns
// the payload.
func tsoPacket(tb testing.TB, e *txEnv, c tsoCase) (myritest.TxPacket, []byte) {
	tb.Helper()
	pay := pattern(c.payload, byte(c.mss))
	super := buildFrame(tb, c.spec, pay)
	if !c.spec.IPv6 {
		binary.BigEndian.PutUint16(super[c.spec.l3()+10:], 0x1234)
	}
	binary.BigEndian.PutUint16(super[c.spec.l4()+16:], 0xBEEF)
	p := myritest.TxPacket{Frags: place(e.ram, ramBase, super, c.pieces), Len: len(super),
		CsumStart: c.spec.l4(), CsumOffset: 16, MSS: c.mss, HdrLen: c.spec.hdrLen(), IPv6: c.spec.IPv6}
	return p, pay
}

// checkSegments checks frames against the segments a correct TSO makes of
// c: built independently with gopacket, byte for byte, and decoded with
// their checksums verified.
func checkSegments(tb testing.TB, c tsoCase, pay []byte, frames [][]byte) {
	tb.Helper()
	nseg := (len(pay) + c.mss - 1) / c.mss
	if len(frames) != nseg {
		tb.Fatalf("%d segments, want %d", len(frames), nseg)
	}
	var got []byte
	for k, f := range frames {
		chunk := pay[k*c.mss : min((k+1)*c.mss, len(pay))]
		s := c.spec
		s.Seq += uint32(k * c.mss)
		s.ID += uint16(k)
		s.CWR = c.spec.CWR && k == 0
		s.FIN = c.spec.FIN && k == nseg-1
		s.PSH = c.spec.PSH && k == nseg-1
		checkFrame(tb, fmt.Sprintf("segment %d of %d", k, nseg), buildFrame(tb, s, chunk), f)
		fi, p := inspect(tb, f)
		if !fi.IPCsum || !fi.L4Csum {
			tb.Errorf("segment %d checksums: IP ok %v, TCP ok %v", k, fi.IPCsum, fi.L4Csum)
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, pay) {
		tb.Errorf("segment payloads joined (%d bytes) differ from the payload (%d bytes)", len(got), len(pay))
	}
}

func TestSendTSO(t *testing.T) {
	var pages []piece // 64 KiB: headers and 1000 bytes linear, 15 pages, a tail
	pages = append(pages, piece{0x1000, 66 + 1000})
	for i := range 15 {
		pages = append(pages, piece{0x10000 + i*0x2000, 4096})
	}
	pages = append(pages, piece{0x40000, -1})
	tests := []tsoCase{
		{name: "IPv4 64 KiB MSS 1448", spec: frameSpec{TSOpt: true, Seq: 1000, ID: 0x100, PSH: true},
			payload: 45 * 1448, mss: 1448, pieces: pages, boundary: 4096},
		{name: "FIN PSH CWR, payload not a multiple of MSS", spec: frameSpec{CWR: true, FIN: true, PSH: true, Seq: 0x70000000},
			payload: 10000, mss: 1448, pieces: []piece{{0x1000, -1}}, boundary: 4096},
		{name: "jumbo MSS 8948", spec: frameSpec{TSOpt: true},
			payload: 60000, mss: 8948, pieces: []piece{{0x1000, 66}, {0x10000, -1}}, boundary: 4096},
		{name: "IPv6 MSS 1428", spec: frameSpec{IPv6: true, TSOpt: true, PSH: true},
			payload: 20000, mss: 1428, pieces: []piece{{0x1000, 86 + 500}, {0x3000, -1}}, boundary: 4096},
		{name: "IPv6 with destination options", spec: frameSpec{IPv6: true, DestOpts: true},
			payload: 7000, mss: 1432, pieces: []piece{{0x1000, -1}}, boundary: 4096},
		{name: "VLAN IPv4", spec: frameSpec{VLAN: true, TSOpt: true},
			payload: 5000, mss: 1448, pieces: []piece{{0x1000, 70}, {0x5000, -1}}, boundary: 4096},
		{name: "VLAN IPv6", spec: frameSpec{VLAN: true, IPv6: true},
			payload: 5000, mss: 1440, pieces: []piece{{0x1000, -1}}, boundary: 2048},
		{name: "header over two descriptors", spec: frameSpec{},
			payload: 4000, mss: 1448, pieces: []piece{{0x1000, 30}, {0x2000, -1}}, boundary: 4096},
		{name: "header and payload in one buffer across 2048 boundaries", spec: frameSpec{TSOpt: true},
			payload: 6000, mss: 1448, pieces: []piece{{0x1000 + 2000, -1}}, boundary: 2048},
		{name: "ring wrap", spec: frameSpec{TSOpt: true},
			payload: 8000, mss: 1448, pieces: []piece{{0x1000, 66}, {0x3001, 3000}, {0x5000, -1}}, boundary: 4096, idx: testEntries - 2},
		{name: "single segment", spec: frameSpec{PSH: true, CWR: true, FIN: true},
			payload: 100, mss: 1448, pieces: []piece{{0x1000, -1}}, boundary: 4096},
		{name: "segments end on descriptor ends", spec: frameSpec{},
			payload: 2 * 1448, mss: 1448, pieces: []piece{{0x1000, 54}, {0x2000, 1448}, {0x3000, -1}}, boundary: 4096},
		{name: "sequence number wraps", spec: frameSpec{Seq: 0xFFFFF000},
			payload: 10000, mss: 1448, pieces: []piece{{0x1000, -1}}, boundary: 4096},
		{name: "IPv4 ID wraps", spec: frameSpec{ID: 0xFFFE},
			payload: 5000, mss: 1448, pieces: []piece{{0x1000, -1}}, boundary: 4096},
		{name: "IPv4 options", spec: frameSpec{IPOpts: true, TSOpt: true},
			payload: 5000, mss: 1444, pieces: []piece{{0x1000, -1}}, boundary: 4096},
		{name: "tiny MSS", spec: frameSpec{FIN: true},
			payload: 300, mss: 7, pieces: []piece{{0x1000, 54}, {0x2000, -1}}, boundary: 4096},
		{name: "odd MSS and odd pieces", spec: frameSpec{},
			payload: 5003, mss: 1001, pieces: []piece{{0x1000, 54 + 7}, {0x2003, 1999}, {0x4001, -1}}, boundary: 4096},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			e := newTxEnv(t, testEntries)
			p, pay := tsoPacket(t, e, c)
			nd := e.post(p, c.boundary, c.idx)
			frames := e.take(c.idx, nd)
			checkSegments(t, c, pay, frames)
			if n, frames, err := e.eng.Take(e.ring, uint32(c.idx+nd), e.mem); n != 0 || frames != nil || err != nil {
				t.Errorf("take after the chain = %d, %d frames, %v; want nothing", n, len(frames), err)
			}
		})
	}
}

// Packets posted back to back, the ring wrapping under them: each take
// stops where the next packet starts, for TSO by the flags rule of §5.5.
func TestSendBackToBack(t *testing.T) {
	e := newTxEnv(t, testEntries)
	a := tsoCase{spec: frameSpec{TSOpt: true, FIN: true}, payload: 9000, mss: 1448,
		pieces: []piece{{0x1000, 66}, {0x2000, 4096}, {0x4000, -1}}, boundary: 4096}
	c := tsoCase{spec: frameSpec{IPv6: true}, payload: 3000, mss: 1000,
		pieces: []piece{{0x20000, 74}, {0x21000, -1}}, boundary: 4096}

	pa, payA := tsoPacket(t, e, a)
	bSpec := frameSpec{UDP: true}
	wantB := buildFrame(t, bSpec, pattern(700, 9))
	pb := offloadPacket(e.ram, ramBase, bSpec, wantB, []piece{{0x10000, 42}, {0x10100, -1}})
	pc, payC := tsoPacket(t, e, c)

	idx := testEntries - 3
	na := e.post(pa, 4096, idx)
	nb := e.post(pb, 4096, idx+na)
	nc := e.post(pc, 4096, idx+na+nb)

	checkSegments(t, a, payA, e.take(idx, na))
	framesB := e.take((idx+na)%testEntries, nb)
	if len(framesB) != 1 {
		t.Fatalf("packet B: %d frames, want 1", len(framesB))
	}
	checkFrame(t, "packet B", wantB, framesB[0])
	checkSegments(t, c, payC, e.take((idx+na+nb)%testEntries, nc))
}
