package myri10ge_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fabric"
)

// Tests of the transmit engine (send.go, tso.go). Packets are real frames
// built with gopacket, laid out in guest RAM, encoded into descriptors the
// way the Linux driver does (myritest.EncodeSend), posted with the driver's
// store order (myritest.SubmitOrder) and taken; every frame is decoded and
// its checksums verified with a plain RFC 1071 sum.

const (
	ramBase     = 0x2_0000_0000 // guest bus address of the test RAM: above 4 GiB
	ramSize     = 1 << 20
	testEntries = 64
)

// txEnv is a send ring over memfd guest RAM behind a dma.Map.
type txEnv struct {
	tb      testing.TB
	ram     []byte
	mem     *dma.Map
	ring    []byte
	entries int
	eng     *myri10ge.SendEngine
}

func newTxEnv(tb testing.TB, entries int) *txEnv {
	tb.Helper()
	ram := dmatest.NewRAM(tb, ramSize)
	m := dma.NewMap(nil)
	if err := m.Add(dma.Mapping{IOVA: ramBase, Size: ramSize, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		tb.Fatalf("dma map: %v", err)
	}
	m.SetBusMaster(true)
	tb.Cleanup(func() { m.Close() })
	return &txEnv{tb: tb, ram: ram.Bytes(), mem: m, ring: make([]byte, entries*16), entries: entries, eng: myri10ge.NewSendEngine()}
}

// piece is where part of a packet sits: at a RAM offset, n bytes (n < 0:
// the rest of the packet).
type piece struct{ at, n int }

// place copies pkt into mem (based at guest address base) as pieces, and
// zeroes the 60 bytes after the last one (skb tailroom a padded packet
// uses).
func place(mem []byte, base uint64, pkt []byte, pieces []piece) []myritest.TxFrag {
	var frags []myritest.TxFrag
	off := 0
	for _, p := range pieces {
		n := p.n
		if n < 0 || n > len(pkt)-off {
			n = len(pkt) - off
		}
		copy(mem[p.at:], pkt[off:off+n])
		clear(mem[p.at+n : min(p.at+n+60, len(mem))])
		frags = append(frags, myritest.TxFrag{Addr: base + uint64(p.at), Len: n})
		off += n
	}
	if off != len(pkt) {
		panic(fmt.Sprintf("pieces hold %d of %d bytes", off, len(pkt)))
	}
	return frags
}

// post encodes p, replays the driver's stores into the ring at idx, and
// returns the number of descriptors. Until the doorbell store nothing may
// be taken.
func (e *txEnv) post(p myritest.TxPacket, boundary, idx int) int {
	e.tb.Helper()
	descs, err := myritest.EncodeSend(p, boundary)
	if err != nil {
		e.tb.Fatalf("EncodeSend: %v", err)
	}
	stores := myritest.SubmitOrder(0, e.entries, idx, descs)
	for i, s := range stores {
		if i == len(stores)-1 {
			if n, _, err := e.eng.Take(e.ring, uint32(idx), e.mem); n != 0 || err != nil {
				e.tb.Fatalf("take before the doorbell = %d, %v; want 0, nil", n, err)
			}
		}
		copy(e.ring[s.Off:], s.Data)
	}
	return len(descs)
}

// take takes at idx and checks that n descriptors were consumed and
// cleared and the rest of the ring left alone.
func (e *txEnv) take(idx, want int) [][]byte {
	e.tb.Helper()
	before := bytes.Clone(e.ring)
	n, frames, err := e.eng.Take(e.ring, uint32(idx), e.mem)
	if err != nil || n != want {
		e.tb.Fatalf("take at %d = %d descriptors, %v; want %d, nil", idx, n, err, want)
	}
	checkConsumed(e.tb, before, e.ring, idx, n)
	return frames
}

// checkConsumed checks that exactly the n slots from idx were cleared,
// that they had been posted, and that the other slots did not change.
func checkConsumed(tb testing.TB, before, after []byte, idx, n int) {
	tb.Helper()
	entries := len(before) / 16
	consumed := make(map[int]bool)
	for j := range n {
		s := (idx + j) % entries
		consumed[s] = true
		if before[s*16+15] == 0 {
			tb.Errorf("slot %d consumed but its flags were 0", s)
		}
	}
	for s := range entries {
		got := after[s*16 : s*16+16]
		want := before[s*16 : s*16+16]
		if consumed[s] {
			want = make([]byte, 16)
		}
		if !bytes.Equal(got, want) {
			tb.Errorf("slot %d = % x, want % x (consumed %v)", s, got, want, consumed[s])
		}
	}
}

// frameSpec describes a test frame; buildFrame makes it with gopacket.
type frameSpec struct {
	VLAN     bool // an 802.1Q tag
	IPv6     bool
	DestOpts bool // IPv6: an 8-byte destination-options header before L4
	IPOpts   bool // IPv4: 4 bytes of options (IHL 6)
	UDP      bool
	TSOpt    bool // TCP timestamps: a 32-byte TCP header
	Seq      uint32
	ID       uint16
	FIN      bool
	PSH      bool
	CWR      bool
}

func (s frameSpec) l3() int {
	if s.VLAN {
		return 18
	}
	return 14
}

// l3Len is the IP header's length, options and extension headers included.
func (s frameSpec) l3Len() int {
	switch {
	case s.IPv6 && s.DestOpts:
		return 48
	case s.IPv6:
		return 40
	case s.IPOpts:
		return 24
	}
	return 20
}

// l4Len is the TCP or UDP header's length.
func (s frameSpec) l4Len() int {
	switch {
	case s.UDP:
		return 8
	case s.TSOpt:
		return 32
	}
	return 20
}

func (s frameSpec) l4() int     { return s.l3() + s.l3Len() }
func (s frameSpec) hdrLen() int { return s.l4() + s.l4Len() }

// csumOffset is where the L4 checksum sits within the L4 header.
func (s frameSpec) csumOffset() int {
	if s.UDP {
		return 6
	}
	return 16
}

var (
	srcMAC = net.HardwareAddr{0x02, 0x60, 0xdd, 0x00, 0x00, 0x01}
	dstMAC = net.HardwareAddr{0x02, 0x60, 0xdd, 0x00, 0x00, 0x02}
	src4   = net.IP{10, 0, 0, 1}
	dst4   = net.IP{10, 0, 0, 2}
	src6   = net.ParseIP("fd00::1")
	dst6   = net.ParseIP("fd00::2:0:0:2")
)

// buildFrame serializes s with payload, lengths and checksums correct.
func buildFrame(tb testing.TB, s frameSpec, payload []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC}
	ls := []gopacket.SerializableLayer{eth}
	inner := layers.EthernetTypeIPv4
	if s.IPv6 {
		inner = layers.EthernetTypeIPv6
	}
	eth.EthernetType = inner
	if s.VLAN {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{Priority: 3, VLANIdentifier: 100, Type: inner})
	}
	proto := layers.IPProtocolTCP
	if s.UDP {
		proto = layers.IPProtocolUDP
	}
	var nl gopacket.NetworkLayer
	if s.IPv6 {
		ip := &layers.IPv6{Version: 6, FlowLabel: 0x12345, NextHeader: proto, HopLimit: 64, SrcIP: src6, DstIP: dst6}
		ls, nl = append(ls, ip), ip
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: s.ID, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: src4, DstIP: dst4}
		if s.IPOpts {
			// Router alert (RFC 2113): 4 bytes.
			ip.Options = []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}}
		}
		ls, nl = append(ls, ip), ip
	}
	if s.UDP {
		u := &layers.UDP{SrcPort: 4000, DstPort: 5000}
		u.SetNetworkLayerForChecksum(nl)
		ls = append(ls, u)
	} else {
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: s.Seq, Ack: 0x01020304, ACK: true,
			FIN: s.FIN, PSH: s.PSH, CWR: s.CWR, Window: 501}
		if s.TSOpt {
			tcp.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
				{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}},
			}
		}
		tcp.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	b := buf.Bytes()
	if n := s.hdrLen() + len(payload); len(b) > n && n < 60 {
		b = b[:n] // gopacket pads to 60; the driver pads, so build short frames
	}
	if s.IPv6 && s.DestOpts {
		// Splice in destination options (PadN) before the L4 header; the
		// L4 checksum does not cover extension headers.
		l3, l4 := s.l3(), s.l3()+40
		opts := []byte{byte(proto), 0, 1, 4, 0, 0, 0, 0}
		b = slices.Concat(b[:l4], opts, b[l4:])
		b[l3+6] = 60
		binary.BigEndian.PutUint16(b[l3+4:], binary.BigEndian.Uint16(b[l3+4:])+8)
	}
	if len(b) != s.hdrLen()+len(payload) {
		tb.Fatalf("built a %d-byte frame, want %d", len(b), s.hdrLen()+len(payload))
	}
	return b
}

func arpFrame(tb testing.TB) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: srcMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: srcMAC, SourceProtAddress: src4,
			DstHwAddress: make([]byte, 6), DstProtAddress: dst4})
	if err != nil {
		tb.Fatalf("serialize ARP: %v", err)
	}
	return buf.Bytes()[:42] // without gopacket's padding to 60
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31+i>>8) ^ seed
	}
	return b
}

// sum16 is RFC 1071 written out: 16-bit words, end-around carry.
func sum16(parts ...[]byte) uint16 {
	var s uint32
	odd := false
	for _, b := range parts {
		for _, x := range b {
			if odd {
				s += uint32(x)
			} else {
				s += uint32(x) << 8
			}
			odd = !odd
			s = s&0xFFFF + s>>16
		}
	}
	return uint16(s)
}

// pseudoHeader is the TCP/UDP pseudo-header for an L4 segment of n bytes.
func pseudoHeader(v6 bool, src, dst net.IP, proto byte, n int) []byte {
	if v6 {
		b := slices.Concat([]byte(src.To16()), []byte(dst.To16()), []byte{0, 0, 0, 0, 0, 0, 0, proto})
		binary.BigEndian.PutUint32(b[32:], uint32(n))
		return b
	}
	b := slices.Concat([]byte(src.To4()), []byte(dst.To4()), []byte{0, proto, 0, 0})
	binary.BigEndian.PutUint16(b[10:], uint16(n))
	return b
}

// frameInfo is what inspect decodes from a frame, for diffs.
type frameInfo struct {
	Len     int
	VLAN    uint16
	IPID    uint16 // IPv4
	IPLen   int    // IPv4 total length, IPv6 payload length
	L4      string
	Seq     uint32
	Flags   string
	Payload int
	IPCsum  bool // IPv4 header checksum verifies (true for IPv6)
	L4Csum  bool // TCP/UDP checksum verifies over the pseudo-header
}

// inspect decodes frame with gopacket and verifies its checksums with
// sum16; it returns the decoded fields and the L4 payload.
func inspect(tb testing.TB, frame []byte) (frameInfo, []byte) {
	tb.Helper()
	fi, payload, err := decodeFrame(frame)
	if err != nil {
		tb.Fatalf("decode: %v", err)
	}
	return fi, payload
}

func decodeFrame(frame []byte) (frameInfo, []byte, error) {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	if el := pkt.ErrorLayer(); el != nil {
		return frameInfo{}, nil, el.Error()
	}
	fi := frameInfo{Len: len(frame), IPCsum: true}
	if d, ok := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); ok {
		fi.VLAN = d.VLANIdentifier
	}
	var v6 bool
	var src, dst net.IP
	switch {
	case pkt.Layer(layers.LayerTypeIPv4) != nil:
		ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		fi.IPID, fi.IPLen = ip.Id, int(ip.Length)
		fi.IPCsum = sum16(ip.Contents) == 0xFFFF
		src, dst = ip.SrcIP, ip.DstIP
	case pkt.Layer(layers.LayerTypeIPv6) != nil:
		ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		fi.IPLen = int(ip.Length)
		v6, src, dst = true, ip.SrcIP, ip.DstIP
	default:
		return fi, nil, nil
	}
	var l4 []byte
	var proto byte
	var payload []byte
	switch {
	case pkt.Layer(layers.LayerTypeTCP) != nil:
		tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		fi.L4, fi.Seq, proto = "TCP", tcp.Seq, 6
		for _, f := range []struct {
			on   bool
			name string
		}{{tcp.CWR, "CWR"}, {tcp.ACK, "ACK"}, {tcp.PSH, "PSH"}, {tcp.FIN, "FIN"}} {
			if f.on {
				fi.Flags += f.name + " "
			}
		}
		l4, payload = slices.Concat(tcp.Contents, tcp.Payload), tcp.Payload
	case pkt.Layer(layers.LayerTypeUDP) != nil:
		udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		fi.L4, proto = "UDP", 17
		l4, payload = slices.Concat(udp.Contents, udp.Payload), udp.Payload
	default:
		return fi, nil, nil
	}
	fi.Payload = len(payload)
	fi.L4Csum = sum16(pseudoHeader(v6, src, dst, proto, len(l4)), l4) == 0xFFFF
	return fi, payload, nil
}

// checkFrame compares got with want byte for byte and field by field.
func checkFrame(tb testing.TB, what string, want, got []byte) {
	tb.Helper()
	wi, _ := inspect(tb, want)
	gi, _ := inspect(tb, got)
	if diff := cmp.Diff(wi, gi); diff != "" {
		tb.Errorf("%s (-want +got):\n%s", what, diff)
	}
	if !bytes.Equal(want, got) {
		i := 0
		for i < min(len(want), len(got)) && want[i] == got[i] {
			i++
		}
		tb.Errorf("%s: %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

// offloadPacket lays out the frame want in pieces with the L4 checksum
// field holding the stack's pseudo-header seed, as Linux leaves it for
// CHECKSUM_PARTIAL, and describes it for the encoder.
func offloadPacket(mem []byte, base uint64, s frameSpec, want []byte, pieces []piece) myritest.TxPacket {
	guest := bytes.Clone(want)
	l4, pos := s.l4(), s.l4()+s.csumOffset()
	proto := byte(6)
	if s.UDP {
		proto = 17
	}
	var ph []byte
	if s.IPv6 {
		ph = pseudoHeader(true, src6, dst6, proto, len(want)-l4)
	} else {
		ph = pseudoHeader(false, src4, dst4, proto, len(want)-l4)
	}
	binary.BigEndian.PutUint16(guest[pos:], sum16(ph))
	return myritest.TxPacket{Frags: place(mem, base, guest, pieces), Len: len(guest), CsumStart: l4, CsumOffset: s.csumOffset()}
}

// plainCase is a packet of TestSendPlain: its frame, where the guest puts
// the frame's pieces, and how many descriptors the driver's encoding takes.
type plainCase struct {
	name      string
	spec      frameSpec
	arp       bool // an ARP request, not the spec's frame
	payload   int
	offload   bool
	pieces    []piece
	boundary  int
	idx       int
	wantDescs int
	wantLen   int // 0: the frame's length
}

// packet builds the case's frame, lays it out in mem (guest RAM at base)
// and returns the frame the wire must see and the packet the driver posts.
func (c plainCase) packet(t *testing.T, mem []byte, base uint64) ([]byte, myritest.TxPacket) {
	var want []byte
	var p myritest.TxPacket
	switch {
	case c.arp:
		want = arpFrame(t)
		p = myritest.TxPacket{Frags: place(mem, base, want, c.pieces), Len: len(want)}
	case c.offload:
		want = buildFrame(t, c.spec, pattern(c.payload, 0x5A))
		p = offloadPacket(mem, base, c.spec, want, c.pieces)
	default:
		want = buildFrame(t, c.spec, pattern(c.payload, 0x5A))
		p = myritest.TxPacket{Frags: place(mem, base, want, c.pieces), Len: len(want)}
	}
	if c.wantLen > len(want) {
		want = append(want, make([]byte, c.wantLen-len(want))...)
	}
	return want, p
}

func TestSendPlain(t *testing.T) {
	tests := []plainCase{
		{name: "IPv4 TCP 1514 offload", payload: 1460, offload: true,
			pieces: []piece{{0x1000, -1}}, boundary: 4096, wantDescs: 1},
		{name: "IPv4 TCP across a 4096 boundary", payload: 1460, offload: true,
			pieces: []piece{{0x1F00, -1}}, boundary: 4096, wantDescs: 2},
		{name: "fragments across 2048 boundaries", spec: frameSpec{TSOpt: true}, payload: 1448, offload: true,
			pieces: []piece{{0x10000 + 2000, 66}, {0x20001, 700}, {0x30000 + 1500, -1}}, boundary: 2048, wantDescs: 5},
		{name: "header split before the checksum start", payload: 1000, offload: true,
			pieces: []piece{{0x10000, 21}, {0x20003, 13}, {0x30000, -1}}, boundary: 4096, wantDescs: 3},
		{name: "UDP IPv4 offload, odd lengths", spec: frameSpec{UDP: true}, payload: 333, offload: true,
			pieces: []piece{{0x5003, 41}, {0x6000, -1}}, boundary: 4096, wantDescs: 2},
		{name: "IPv6 TCP offload", spec: frameSpec{IPv6: true}, payload: 1000, offload: true,
			pieces: []piece{{0x7000, -1}}, boundary: 4096, wantDescs: 1},
		{name: "IPv6 UDP offload in pieces", spec: frameSpec{IPv6: true, UDP: true}, payload: 501, offload: true,
			pieces: []piece{{0x8000, 60}, {0x9001, -1}}, boundary: 4096, wantDescs: 2},
		{name: "IPv6 with destination options", spec: frameSpec{IPv6: true, DestOpts: true}, payload: 700, offload: true,
			pieces: []piece{{0x8000, -1}}, boundary: 4096, wantDescs: 1},
		{name: "VLAN IPv4 TCP offload", spec: frameSpec{VLAN: true}, payload: 1000, offload: true,
			pieces: []piece{{0xA000, -1}}, boundary: 4096, wantDescs: 1},
		{name: "ARP padded to 60", arp: true,
			pieces: []piece{{0xB000, -1}}, boundary: 4096, wantDescs: 1, wantLen: 60},
		{name: "tiny UDP padded to 60 with offload", spec: frameSpec{UDP: true}, payload: 4, offload: true,
			pieces: []piece{{0xB100, -1}}, boundary: 4096, wantDescs: 1, wantLen: 60},
		{name: "no offload: bytes untouched", payload: 200,
			pieces: []piece{{0xC000, 54}, {0xD000, -1}}, boundary: 4096, wantDescs: 2},
		{name: "jumbo UDP 9014 over three pages", spec: frameSpec{UDP: true}, payload: 9014 - 42, offload: true,
			pieces: []piece{{0x40064, -1}}, boundary: 4096, wantDescs: 3},
		{name: "largest frame 9018", spec: frameSpec{UDP: true}, payload: 9018 - 42, offload: true,
			pieces: []piece{{0x50000, -1}}, boundary: 4096, wantDescs: 3},
		{name: "ring wrap", payload: 1200, offload: true,
			pieces: []piece{{0x60000, 100}, {0x61000, 100}, {0x62000, 100}, {0x63000, -1}}, boundary: 4096,
			idx: testEntries - 2, wantDescs: 4},
		{name: "12 descriptors", payload: 1200, offload: true,
			pieces: []piece{{0x70000, 100}, {0x70800, 100}, {0x71000, 100}, {0x71800, 100}, {0x72000, 100}, {0x72800, 100},
				{0x73000, 100}, {0x73800, 100}, {0x74000, 100}, {0x74800, 100}, {0x75000, 100}, {0x75800, -1}},
			boundary: 2048, idx: 7, wantDescs: 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTxEnv(t, testEntries)
			want, p := tt.packet(t, e.ram, ramBase)
			if got := e.post(p, tt.boundary, tt.idx); got != tt.wantDescs {
				t.Fatalf("encoded %d descriptors, want %d", got, tt.wantDescs)
			}
			frames := e.take(tt.idx, tt.wantDescs)
			if len(frames) != 1 {
				t.Fatalf("take gave %d frames, want 1", len(frames))
			}
			checkFrame(t, "frame", want, frames[0])
			if fi, _ := inspect(t, frames[0]); !tt.arp && (!fi.IPCsum || !fi.L4Csum) {
				t.Errorf("checksums: IP ok %v, L4 ok %v", fi.IPCsum, fi.L4Csum)
			}
			if n, frames, err := e.eng.Take(e.ring, uint32(tt.idx+tt.wantDescs), e.mem); n != 0 || frames != nil || err != nil {
				t.Errorf("take after the packet = %d, %d frames, %v; want nothing", n, len(frames), err)
			}
		})
	}
}

// desc builds a raw descriptor.
func desc(addr uint64, length, pseudo, rdma, cksum int, flags uint8) [16]byte {
	var d [16]byte
	binary.BigEndian.PutUint32(d[0:], uint32(addr>>32))
	binary.BigEndian.PutUint32(d[4:], uint32(addr))
	binary.BigEndian.PutUint16(d[8:], uint16(pseudo))
	binary.BigEndian.PutUint16(d[10:], uint16(length))
	d[13], d[14], d[15] = byte(rdma), byte(cksum), flags
	return d
}

// Flags, as the driver names them.
const (
	fSmall  = 0x01
	fTSOHdr = 0x01
	fFirst  = 0x02
	fCksum  = 0x08
	fLast   = 0x08
	fNoTSO  = 0x10
	fChop   = 0x10
	fPld    = 0x20
)

func TestSendMalformed(t *testing.T) {
	tcp := frameSpec{}
	hdrAt := func(mut func([]byte)) func(*testing.T, *txEnv) {
		return func(t *testing.T, e *txEnv) {
			f := buildFrame(t, tcp, pattern(3000, 1))
			if mut != nil {
				mut(f)
			}
			copy(e.ram[0x1000:], f)
		}
	}
	a := uint64(ramBase + 0x1000)
	tsoHdr := func(h, mss int) [16]byte { return desc(a, h, mss, 1, 34, fTSOHdr|fFirst) }
	tsoPld := func(off, n, mss int, fl uint8) [16]byte { return desc(a+uint64(off), n, mss, 1, 0, fPld|fl) }
	var chain65 [][16]byte
	chain65 = append(chain65, tsoHdr(54, 1000))
	for i := range 64 {
		fl := uint8(0)
		if i == 63 {
			fl = fLast
		}
		chain65 = append(chain65, tsoPld(54+i*10, 10, 1000, fl))
	}
	var rdma13 [][16]byte
	for i := range 13 {
		fl := uint8(fNoTSO)
		if i == 0 {
			fl |= fFirst
		}
		rdma13 = append(rdma13, desc(a+uint64(100*i), 100, 0, 13, 0, fl))
	}

	tests := []struct {
		name      string
		entries   int
		idx       int
		descs     [][16]byte
		setup     func(*testing.T, *txEnv)
		wantN     int
		wantErr   error // errors.Is; nil with wantDMA false: success
		wantDMA   bool  // a *dma.Error
		wantNoErr bool
	}{
		{name: "nothing posted", wantN: 0, wantNoErr: true},
		{name: "head without FIRST", descs: [][16]byte{desc(a, 100, 0, 1, 0, fNoTSO)}, wantN: 1, wantErr: myri10ge.SendErrNotFirst},
		{name: "head without FIRST, next packet kept",
			descs: [][16]byte{desc(a, 100, 0, 1, 0, fNoTSO), desc(a, 100, 0, 1, 0, fNoTSO|fFirst)},
			wantN: 1, wantErr: myri10ge.SendErrNotFirst},
		{name: "continuation not posted",
			descs: [][16]byte{desc(a, 100, 0, 3, 0, fNoTSO|fFirst), desc(a, 100, 0, 1, 0, fNoTSO)},
			wantN: 2, wantErr: myri10ge.SendErrNotPosted},
		{name: "continuation is the next packet",
			descs: [][16]byte{desc(a, 100, 0, 2, 0, fNoTSO|fFirst), desc(a, 100, 0, 1, 0, fNoTSO|fFirst)},
			wantN: 1, wantErr: myri10ge.SendErrNotPosted},
		{name: "rdma_count 13", descs: rdma13, wantN: 13, wantErr: myri10ge.SendErrTooManyDescs},
		{name: "rdma_count past the ring", entries: 4, idx: 2,
			descs: [][16]byte{desc(a, 100, 0, 8, 0, fNoTSO|fFirst), desc(a, 100, 0, 1, 0, fNoTSO), desc(a, 100, 0, 1, 0, fNoTSO), desc(a, 100, 0, 1, 0, fNoTSO)},
			wantN: 4, wantErr: myri10ge.SendErrNotPosted},
		{name: "rdma_count 0 counts as 1", descs: [][16]byte{desc(a, 100, 0, 0, 0, fNoTSO|fFirst)}, wantN: 1, wantNoErr: true},
		{name: "runt", descs: [][16]byte{desc(a, 13, 0, 1, 0, fNoTSO|fFirst)}, wantN: 1, wantErr: myri10ge.SendErrLength},
		{name: "longer than 9018",
			descs: [][16]byte{desc(a, 9000, 0, 2, 0, fNoTSO|fFirst), desc(a, 19, 0, 1, 0, fNoTSO)},
			wantN: 2, wantErr: myri10ge.SendErrLength},
		{name: "checksum start past the end", descs: [][16]byte{desc(a, 100, 100, 1, 101, fNoTSO|fFirst|fCksum)},
			wantN: 1, wantErr: myri10ge.SendErrCksumOffset},
		{name: "checksum field past the end", descs: [][16]byte{desc(a, 100, 99, 1, 34, fNoTSO|fFirst|fCksum)},
			wantN: 1, wantErr: myri10ge.SendErrCksumOffset},
		{name: "checksum field before its start", descs: [][16]byte{desc(a, 100, 30, 1, 40, fNoTSO|fFirst|fCksum)},
			wantN: 1, wantErr: myri10ge.SendErrCksumOffset},
		{name: "checksum field in the last two bytes", descs: [][16]byte{desc(a, 100, 98, 1, 34, fNoTSO|fFirst|fCksum)},
			wantN: 1, wantNoErr: true},
		{name: "unmapped address", descs: [][16]byte{desc(0x1000, 100, 0, 1, 0, fNoTSO|fFirst)}, wantN: 1, wantDMA: true, wantErr: dma.ErrUnmapped},
		{name: "past the end of RAM",
			descs: [][16]byte{desc(a, 100, 0, 2, 0, fNoTSO|fFirst), desc(ramBase+ramSize-10, 100, 0, 1, 0, fNoTSO)},
			wantN: 2, wantDMA: true, wantErr: dma.ErrUnmapped},
		{name: "bus mastering off", descs: [][16]byte{desc(a, 100, 0, 1, 0, fNoTSO|fFirst)},
			setup: func(_ *testing.T, e *txEnv) { e.mem.SetBusMaster(false) }, wantN: 1, wantDMA: true, wantErr: dma.ErrBusMasterOff},
		{name: "TSO MSS 0", setup: hdrAt(nil), descs: [][16]byte{tsoHdr(54, 0), tsoPld(54, 1000, 0, fFirst|fLast)},
			wantN: 2, wantErr: myri10ge.SendErrTSOMSS},
		{name: "TSO without payload descriptor", setup: hdrAt(nil), descs: [][16]byte{desc(a, 54, 1000, 1, 34, fTSOHdr|fFirst|fLast)},
			wantN: 1, wantErr: myri10ge.SendErrTSONoPayload},
		{name: "TSO with an empty payload", setup: hdrAt(nil), descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 0, 1000, fFirst|fLast)},
			wantN: 2, wantErr: myri10ge.SendErrTSONoPayload},
		{name: "TSO without TSO_LAST", setup: hdrAt(nil), descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 1000, 1000, fFirst)},
			wantN: 2, wantErr: myri10ge.SendErrTSONoLast},
		{name: "TSO chain stops at the next packet",
			setup: hdrAt(nil), descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 1000, 1000, fFirst|fLast), tsoHdr(54, 1000)},
			wantN: 2, wantNoErr: true},
		{name: "TSO chain of 65", entries: 128, setup: hdrAt(nil), descs: chain65, wantN: 65, wantErr: myri10ge.SendErrTooManyDescs},
		{name: "TSO over an ARP header", setup: func(t *testing.T, e *txEnv) { copy(e.ram[0x1000:], arpFrame(t)) },
			descs: [][16]byte{tsoHdr(42, 1000), tsoPld(42, 100, 1000, fFirst|fLast)},
			wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO over UDP", setup: hdrAt(func(f []byte) { f[14+9] = 17 }),
			descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO over an IPv4 fragment", setup: hdrAt(func(f []byte) { f[14+6] |= 0x20 }),
			descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO IPv4 header length 4", setup: hdrAt(func(f []byte) { f[14] = 0x44 }),
			descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO TCP data offset 4", setup: hdrAt(func(f []byte) { f[34+12] = 0x40 }),
			descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO header descriptors hold a payload byte", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(55, 1000), tsoPld(55, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO header descriptors cut the TCP header", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(40, 1000), tsoPld(40, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO IPv6 routing header", setup: func(t *testing.T, e *txEnv) {
			f := buildFrame(t, frameSpec{IPv6: true, DestOpts: true}, pattern(2000, 1))
			f[14+6] = 43
			copy(e.ram[0x1000:], f)
		}, descs: [][16]byte{tsoHdr(82, 1000), tsoPld(82, 1000, 1000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOHeader},
		{name: "TSO segment longer than 9018", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(54, 9000), tsoPld(54, 9000, 9000, fFirst|fLast)}, wantN: 2, wantErr: myri10ge.SendErrTSOSegTooLong},
		{name: "TSO segment of 9018", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(54, 8964), tsoPld(54, 9000, 8964, fFirst|fLast)}, wantN: 2, wantNoErr: true},
		{name: "TSO MSS 1 over 40000 bytes", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(54, 1), tsoPld(54, 40000, 1, fFirst|fLast|fChop)}, wantN: 2, wantErr: myri10ge.SendErrTSOTooMany},
		{name: "TSO chain longer than 65 KiB", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(54, 1000), tsoPld(54, 40000, 1000, fFirst), tsoPld(54, 40000, 1000, fLast|fChop)},
			wantN: 3, wantErr: myri10ge.SendErrLength},
		{name: "TSO payload unmapped", setup: hdrAt(nil),
			descs: [][16]byte{tsoHdr(54, 1000), desc(0x10, 1000, 1000, 1, 0, fPld|fFirst|fLast)}, wantN: 2, wantDMA: true, wantErr: dma.ErrUnmapped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := tt.entries
			if entries == 0 {
				entries = testEntries
			}
			e := newTxEnv(t, entries)
			copy(e.ram[0x1000:], pattern(0x10000, 7))
			if tt.setup != nil {
				tt.setup(t, e)
			}
			for j, d := range tt.descs {
				copy(e.ring[(tt.idx+j)%entries*16:], d[:])
			}
			before := bytes.Clone(e.ring)
			n, frames, err := e.eng.Take(e.ring, uint32(tt.idx), e.mem)
			if n != tt.wantN {
				t.Errorf("take consumed %d, want %d (err %v)", n, tt.wantN, err)
			}
			checkConsumed(t, before, e.ring, tt.idx, n)
			if tt.wantNoErr {
				if err != nil {
					t.Errorf("take error %v, want none", err)
				}
				return
			}
			if frames != nil {
				t.Errorf("take gave %d frames with an error, want nil", len(frames))
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("take error %v, want %v", err, tt.wantErr)
			}
			var de *dma.Error
			if got := errors.As(err, &de); got != tt.wantDMA {
				t.Errorf("take error %v is a *dma.Error: %v, want %v", err, got, tt.wantDMA)
			}
		})
	}
}

func TestSendRingShape(t *testing.T) {
	eng := myri10ge.NewSendEngine()
	for _, size := range []int{0, 8, 20} {
		ring := make([]byte, size)
		if size > 15 {
			ring[15] = fNoTSO | fFirst
		}
		if n, frames, err := eng.Take(ring, 0, nil); n != 0 || frames != nil || !errors.Is(err, myri10ge.SendErrRing) {
			t.Errorf("take on a %d-byte ring = %d, %v, %v; want 0, nil, %v", size, n, frames, err, myri10ge.SendErrRing)
		}
	}
}

// fakeMem is guest RAM over a byte slice at base that records every access.
type fakeMem struct {
	base   uint64
	b      []byte
	reads  [][2]uint64 // addr, len
	writes int
}

func (m *fakeMem) in(addr uint64, n int) bool {
	return addr >= m.base && addr-m.base <= uint64(len(m.b)) && uint64(n) <= uint64(len(m.b))-(addr-m.base)
}

func (m *fakeMem) ReadAt(p []byte, addr uint64) (int, error) {
	m.reads = append(m.reads, [2]uint64{addr, uint64(len(p))})
	if !m.in(addr, len(p)) {
		return 0, &dma.Error{Op: dma.Read, Addr: addr, Len: len(p), Err: dma.ErrUnmapped}
	}
	return copy(p, m.b[addr-m.base:]), nil
}

func (m *fakeMem) WriteAt(p []byte, addr uint64) (int, error) {
	m.writes++
	return 0, &dma.Error{Op: dma.Write, Addr: addr, Len: len(p), Err: dma.ErrReadOnly}
}

func (m *fakeMem) Store32(addr uint64, _ uint32) error {
	m.writes++
	return &dma.Error{Op: dma.Write, Addr: addr, Len: 4, Err: dma.ErrReadOnly}
}

const (
	fuzzBase    = 0x10000
	fuzzMaxMem  = 128 << 10
	fuzzMaxRing = 256 // entries
)

var updateSendSeeds = flag.Bool("update-send-seeds", false, "rewrite testdata/fuzz/FuzzSendRing seeds made by the encoder")

// fuzzRing turns fuzz bytes into a ring of a power-of-two number of
// entries.
func fuzzRing(in []byte) []byte {
	entries := 1
	for entries*2 <= min(len(in)/16, fuzzMaxRing) {
		entries *= 2
	}
	ring := make([]byte, entries*16)
	copy(ring, in)
	return ring
}

func FuzzSendRing(f *testing.F) {
	for _, s := range sendSeeds(f) {
		f.Add(s.ring, s.mem, s.idx)
	}
	f.Fuzz(func(t *testing.T, ringIn, memIn []byte, idx uint32) {
		ring := fuzzRing(ringIn)
		entries := len(ring) / 16
		mem := &fakeMem{base: fuzzBase, b: memIn[:min(len(memIn), fuzzMaxMem)]}
		before := bytes.Clone(ring)
		n, frames, err := myri10ge.NewSendEngine().Take(ring, idx, mem)

		head := int(idx % uint32(entries))
		if n < 0 || n > entries {
			t.Fatalf("consumed %d of a %d-entry ring", n, entries)
		}
		if posted := before[head*16+15] != 0; (n > 0) != posted {
			t.Fatalf("consumed %d with the head flags %#x", n, before[head*16+15])
		}
		checkConsumed(t, before, ring, head, n)
		if n == 0 {
			if frames != nil || err != nil {
				t.Fatalf("nothing consumed, yet %d frames, %v", len(frames), err)
			}
			return
		}
		if mem.writes != 0 {
			t.Fatalf("%d DMA writes", mem.writes)
		}
		// Every read lies inside a consumed descriptor's buffer.
		for _, r := range mem.reads {
			ok := false
			for j := range n {
				d := before[(head+j)%entries*16:]
				da := uint64(binary.BigEndian.Uint32(d))<<32 | uint64(binary.BigEndian.Uint32(d[4:]))
				dl := uint64(binary.BigEndian.Uint16(d[10:]))
				if r[0] >= da && r[0]-da <= dl && r[1] <= dl-(r[0]-da) {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("read of %d bytes at %#x outside every consumed descriptor", r[1], r[0])
			}
		}
		if err != nil {
			if frames != nil {
				t.Fatalf("error %v with %d frames", err, len(frames))
			}
			var de *dma.Error
			if errors.As(err, &de) && !errors.Is(err, dma.ErrUnmapped) {
				t.Fatalf("DMA error %v is not ErrUnmapped", err)
			}
			return
		}
		if len(frames) == 0 {
			t.Fatalf("consumed %d descriptors, no frames and no error", n)
		}
		for i, fr := range frames {
			if len(fr) < fabric.MinFrame || len(fr) > fabric.MaxFrame {
				t.Fatalf("frame %d is %d bytes", i, len(fr))
			}
		}
		// Rebuild the gathered stream from the snapshot and check the
		// frames against it.
		var stream []byte
		hlen := -1
		for j := range n {
			d := before[(head+j)%entries*16:]
			da := uint64(binary.BigEndian.Uint32(d))<<32 | uint64(binary.BigEndian.Uint32(d[4:]))
			dl := int(binary.BigEndian.Uint16(d[10:]))
			if hlen < 0 && d[15]&fPld != 0 {
				hlen = len(stream)
			}
			stream = append(stream, mem.b[da-mem.base:][:dl]...)
		}
		first := before[head*16:]
		if first[15]&fNoTSO != 0 {
			checkFuzzPlain(t, first, stream, frames)
		} else {
			checkFuzzTSO(t, first, stream, hlen, frames)
		}
	})
}

func checkFuzzPlain(t *testing.T, first, stream []byte, frames [][]byte) {
	if len(frames) != 1 {
		t.Fatalf("non-TSO packet gave %d frames", len(frames))
	}
	got := frames[0]
	if first[15]&fCksum == 0 {
		if !bytes.Equal(got, stream) {
			t.Fatalf("frame differs from the gathered bytes")
		}
		return
	}
	cs, pos := int(first[14]), int(binary.BigEndian.Uint16(first[8:]))
	want := ^sum16(stream[cs:])
	if want == 0 && pos-cs == 6 {
		// Only in a UDP header (checksum at offset 6) does 0 mean "no
		// checksum"; elsewhere a computed 0 stays 0x0000 (send.go).
		want = 0xFFFF
	}
	if c := binary.BigEndian.Uint16(got[pos:]); c != want {
		t.Fatalf("checksum %#04x at %d, want %#04x", c, pos, want)
	}
	if !bytes.Equal(got[:pos], stream[:pos]) || !bytes.Equal(got[pos+2:], stream[pos+2:]) {
		t.Fatalf("frame differs from the gathered bytes outside the checksum")
	}
}

func checkFuzzTSO(t *testing.T, first, stream []byte, hlen int, frames [][]byte) {
	mss := int(binary.BigEndian.Uint16(first[8:]))
	var pay []byte
	for i, fr := range frames {
		if len(fr) <= hlen || (i < len(frames)-1 && len(fr) != hlen+mss) {
			t.Fatalf("segment %d of %d is %d bytes; headers %d, MSS %d", i, len(frames), len(fr), hlen, mss)
		}
		pay = append(pay, fr[hlen:]...)
		fi, _, err := decodeFrame(fr)
		if err != nil {
			continue // headers gopacket will not decode; lengths are checked above
		}
		if fi.L4 == "TCP" && (!fi.IPCsum || !fi.L4Csum) {
			t.Fatalf("segment %d checksums: IP %v, TCP %v", i, fi.IPCsum, fi.L4Csum)
		}
	}
	if !bytes.Equal(pay, stream[hlen:]) {
		t.Fatalf("segment payloads (%d bytes) differ from the gathered payload (%d)", len(pay), len(stream)-hlen)
	}
}

type sendSeed struct {
	name string
	ring []byte
	mem  []byte
	idx  uint32
}

// sendSeeds makes fuzz seeds with the encoder: each a ring with packets
// posted the driver's way over a small guest RAM at fuzzBase.
func sendSeeds(tb testing.TB) []sendSeed {
	type pkt struct {
		spec    frameSpec
		payload int
		mss     int
		pieces  []piece
	}
	build := func(name string, entries, idx int, pkts ...pkt) sendSeed {
		mem := make([]byte, 24<<10)
		ring := make([]byte, entries*16)
		at, end := idx, 0
		for _, p := range pkts {
			f := buildFrame(tb, p.spec, pattern(p.payload, byte(at)))
			var tp myritest.TxPacket
			if p.mss > 0 {
				tp = myritest.TxPacket{Frags: place(mem, fuzzBase, f, p.pieces), Len: len(f), CsumStart: p.spec.l4(),
					CsumOffset: 16, MSS: p.mss, HdrLen: p.spec.hdrLen(), IPv6: p.spec.IPv6}
			} else {
				tp = offloadPacket(mem, fuzzBase, p.spec, f, p.pieces)
			}
			descs, err := myritest.EncodeSend(tp, 4096)
			if err != nil {
				tb.Fatalf("seed %s: %v", name, err)
			}
			for _, s := range myritest.SubmitOrder(0, entries, at, descs) {
				copy(ring[s.Off:], s.Data)
			}
			at += len(descs)
			end = max(end, descsEnd(descs))
		}
		return sendSeed{name, ring, mem[:end], uint32(idx)}
	}
	seeds := []sendSeed{
		build("plain", 16, 0, pkt{spec: frameSpec{}, payload: 1000, pieces: []piece{{0, 54}, {0x41, -1}}}),
		build("udp6-wrap", 8, 7, pkt{spec: frameSpec{IPv6: true, UDP: true}, payload: 301, pieces: []piece{{0x600, 40}, {0x641, 40}, {0x700, -1}}}),
		build("tso4", 16, 3, pkt{spec: frameSpec{TSOpt: true, FIN: true, PSH: true}, payload: 6000, mss: 1448,
			pieces: []piece{{0x10, 200}, {0x100, 2000}, {0x900 + 5, -1}}}),
		build("tso6-vlan-then-plain", 16, 14, pkt{spec: frameSpec{IPv6: true, VLAN: true}, payload: 5000, mss: 1000,
			pieces: []piece{{0x100, 30}, {0x200, -1}}},
			pkt{spec: frameSpec{VLAN: true}, payload: 100, pieces: []piece{{0x1800, -1}}}),
		build("tso-destopts", 16, 0, pkt{spec: frameSpec{IPv6: true, DestOpts: true}, payload: 3000, mss: 1220,
			pieces: []piece{{0x100, -1}}}),
	}
	// Offload over an ARP frame, padded by the driver.
	mem := make([]byte, 4096)
	arp := arpFrame(tb)
	descs, err := myritest.EncodeSend(myritest.TxPacket{Frags: place(mem, fuzzBase, arp, []piece{{0x10, -1}}), Len: len(arp)}, 4096)
	if err != nil {
		tb.Fatal(err)
	}
	ring := make([]byte, 4*16)
	for _, s := range myritest.SubmitOrder(0, 4, 1, descs) {
		copy(ring[s.Off:], s.Data)
	}
	seeds = append(seeds, sendSeed{"arp", ring, mem[:descsEnd(descs)], 1})
	return seeds
}

// descsEnd is the end, as an offset from fuzzBase, of the buffers descs
// point at: how much fuzz RAM a seed needs.
func descsEnd(descs [][16]byte) int {
	end := 0
	for _, d := range descs {
		addr := uint64(binary.BigEndian.Uint32(d[0:]))<<32 | uint64(binary.BigEndian.Uint32(d[4:]))
		end = max(end, int(addr-fuzzBase)+int(binary.BigEndian.Uint16(d[10:])))
	}
	return end
}

// TestSendSeeds rewrites the committed seeds with -update-send-seeds, and
// otherwise checks they are there.
func TestSendSeeds(t *testing.T) {
	for _, s := range sendSeeds(t) {
		// A seed is a posted packet the engine takes whole.
		mem := &fakeMem{base: fuzzBase, b: s.mem}
		if n, frames, err := myri10ge.NewSendEngine().Take(fuzzRing(s.ring), s.idx, mem); n == 0 || len(frames) == 0 || err != nil {
			t.Errorf("seed %s: take = %d, %d frames, %v; want a packet", s.name, n, len(frames), err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\nuint32(%d)\n", s.ring, s.mem, s.idx)
		keepSeed(t, "FuzzSendRing", "encoder-"+s.name, body, *updateSendSeeds, "update-send-seeds")
	}
}

// Benchmarks: take of a 1514-byte checksum-offload packet and of a 64 KiB
// TSO chain, each with its raw baseline in the same run: a plain copy of
// the same bytes out of guest RAM plus one onesSum pass over them.

func benchEnv(b *testing.B, spec frameSpec, payload, mss int, pieces []piece) (*txEnv, []byte, int) {
	e := newTxEnv(b, testEntries)
	f := buildFrame(b, spec, pattern(payload, 3))
	var p myritest.TxPacket
	if mss > 0 {
		p = myritest.TxPacket{Frags: place(e.ram, ramBase, f, pieces), Len: len(f), CsumStart: spec.l4(), CsumOffset: 16,
			MSS: mss, HdrLen: spec.hdrLen(), IPv6: spec.IPv6}
	} else {
		p = offloadPacket(e.ram, ramBase, spec, f, pieces)
	}
	n := e.post(p, 4096, 0)
	posted := bytes.Clone(e.ring[:n*16])
	return e, posted, len(f)
}

func BenchmarkSendTake(b *testing.B) {
	var tsoPieces []piece
	tsoPieces = append(tsoPieces, piece{0x1000, 66 + 1000})
	for i := range 16 {
		tsoPieces = append(tsoPieces, piece{0x10000 + i*0x1000, 4096})
	}
	tsoPieces = append(tsoPieces, piece{0x30000, -1})
	cases := []struct {
		name    string
		spec    frameSpec
		payload int
		mss     int
		pieces  []piece
	}{
		{"cksum-1514", frameSpec{}, 1460, 0, []piece{{0x1000, -1}}},
		{"tso-64KiB-mss1448", frameSpec{TSOpt: true}, 45 * 1448, 1448, tsoPieces},
	}
	for _, c := range cases {
		e, posted, size := benchEnv(b, c.spec, c.payload, c.mss, c.pieces)
		b.Run("case="+c.name+"/impl=raw-copy+sum", func(b *testing.B) {
			src := e.ram[0x1000 : 0x1000+size]
			dst := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
				myri10ge.SendOnesSum(dst, 0)
			}
		})
		b.Run("case="+c.name+"/impl=take", func(b *testing.B) { benchTake(b, e, posted, size, e.mem) })
	}
}

// benchTake measures Take of one posted chain of size bytes read through
// mem, the ring reset to posted before each.
func benchTake(b *testing.B, e *txEnv, posted []byte, size int, mem dma.Space) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		copy(e.ring, posted)
		if n, _, err := e.eng.Take(e.ring, 0, mem); err != nil || n == 0 {
			b.Fatalf("take = %d, %v", n, err)
		}
	}
}
