package myritest

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// txDesc is a decoded descriptor, for readable diffs.
type txDesc struct {
	Addr      uint64
	PseudoHdr int
	Len       int
	RDMA      int
	Cksum     int
	Flags     uint8
}

func decodeDescs(ds [][16]byte) []txDesc {
	var out []txDesc
	for _, d := range ds {
		out = append(out, txDesc{
			Addr:      uint64(binary.BigEndian.Uint32(d[0:]))<<32 | uint64(binary.BigEndian.Uint32(d[4:])),
			PseudoHdr: int(binary.BigEndian.Uint16(d[8:])),
			Len:       int(binary.BigEndian.Uint16(d[10:])),
			RDMA:      int(d[13]),
			Cksum:     int(d[14]),
			Flags:     d[15],
		})
	}
	return out
}

// Flag combinations, named as in the driver.
const (
	noTSOFirst = txFlagNoTSO | txFlagFirst
	pld        = txFlagTSOPld
)

// tcp4TSO is a TSO packet of pieces (Len their sum) behind Ethernet, IPv4
// and TCP headers without options: transport offset 34, headers 54 bytes,
// the TCP checksum at 16.
func tcp4TSO(mss int, pieces ...TxFrag) TxPacket {
	p := TxPacket{Frags: pieces, CsumStart: 34, CsumOffset: 16, MSS: mss, HdrLen: 54}
	for _, f := range pieces {
		p.Len += f.Len
	}
	return p
}

// The expectations below were worked out by hand from myri10ge_xmit.
func TestEncodeSend(t *testing.T) {
	tests := []struct {
		name     string
		p        TxPacket
		boundary int // tx_boundary; 0 is 4096, the aligned firmware's
		want     []txDesc
	}{{
		name: "linear 1514 TCP checksum offload, SMALL",
		p:    TxPacket{Frags: []TxFrag{{0x1000, 1514}}, Len: 1514, CsumStart: 34, CsumOffset: 16},
		want: []txDesc{{0x1000, 50, 1514, 1, 34, noTSOFirst | txFlagCksum | txFlagSmall}},
	}, {
		name: "1521 bytes is not SMALL",
		p:    TxPacket{Frags: []TxFrag{{0x1000, 1521}}, Len: 1521},
		want: []txDesc{{0x1000, 0, 1521, 1, 0, noTSOFirst}},
	}, {
		name:     "cut at a 2048 boundary",
		p:        TxPacket{Frags: []TxFrag{{0x1F00, 1514}}, Len: 1514, CsumStart: 34, CsumOffset: 16},
		boundary: 2048,
		want: []txDesc{
			{0x1F00, 50, 256, 2, 34, noTSOFirst | txFlagCksum | txFlagSmall},
			{0x2000, 50, 1258, 1, 0, txFlagNoTSO | txFlagCksum | txFlagSmall},
		},
	}, {
		name: "odd pieces: ALIGN_ODD and cksum_offset counting down",
		p: TxPacket{Frags: []TxFrag{{0x10000, 21}, {0x20001, 33}, {0x30000, 100}}, Len: 154,
			CsumStart: 34, CsumOffset: 6},
		want: []txDesc{
			{0x10000, 40, 21, 3, 34, noTSOFirst | txFlagCksum | txFlagSmall},
			{0x20001, 40, 33, 1, 13, txFlagNoTSO | txFlagCksum | txFlagSmall | txFlagAlignOdd},
			{0x30000, 40, 100, 1, 0, txFlagNoTSO | txFlagCksum | txFlagSmall},
		},
	}, {
		name: "ALIGN_ODD needs CKSUM",
		p:    TxPacket{Frags: []TxFrag{{0x10000, 21}, {0x20000, 100}}, Len: 121},
		want: []txDesc{
			{0x10000, 0, 21, 2, 0, noTSOFirst | txFlagSmall},
			{0x20000, 0, 100, 1, 0, txFlagNoTSO | txFlagSmall},
		},
	}, {
		name: "ARP padded to 60",
		p:    TxPacket{Frags: []TxFrag{{0x4000, 42}}, Len: 42},
		want: []txDesc{{0x4000, 0, 60, 1, 0, noTSOFirst | txFlagSmall}},
	}, {
		name: "software checksum when csum_start > 255",
		p:    TxPacket{Frags: []TxFrag{{0x4000, 400}}, Len: 400, CsumStart: 300, CsumOffset: 6},
		want: []txDesc{{0x4000, 0, 400, 1, 0, noTSOFirst | txFlagSmall}},
	}, {
		name: "software checksum when the field is past 127",
		p:    TxPacket{Frags: []TxFrag{{0x4000, 400}}, Len: 400, CsumStart: 120, CsumOffset: 16},
		want: []txDesc{{0x4000, 0, 400, 1, 0, noTSOFirst | txFlagSmall}},
	}, {
		name: "the high word is not carried across 4 GiB",
		p:    TxPacket{Frags: []TxFrag{{0x1_FFFF_F800, 4096}}, Len: 4096},
		want: []txDesc{
			{0x1_FFFF_F800, 0, 2048, 2, 0, noTSOFirst},
			{0x1_0000_0000, 0, 2048, 1, 0, txFlagNoTSO},
		},
	}, {
		// Headers 54, MSS 1000, payload 500+1200+800: segments end at
		// payload offsets 1000, 2000 and 2500.
		name: "TSO IPv4: header cut, CHOP, rdma runs, TSO_LAST",
		p:    tcp4TSO(1000, TxFrag{0x1000, 554}, TxFrag{0x3000, 1200}, TxFrag{0x5000, 800}),
		want: []txDesc{
			{0x1000, 1000, 54, 1, 34, txFlagTSOHdr | txFlagFirst},
			{0x1036, 1000, 500, 2, 0, pld | txFlagFirst | txFlagSmall},
			{0x3000, 1000, 1200, 2, 0, pld | txFlagSmall | txFlagTSOChop},
			{0x5000, 1000, 800, 1, 0, pld | txFlagSmall | txFlagTSOChop | txFlagTSOLast},
		},
	}, {
		// Payload 1000+1000 with MSS 1000: each descriptor is exactly one
		// segment, so no CHOP, FIRST on each, only the last is TSO_LAST.
		name: "TSO segments ending on descriptor ends",
		p:    tcp4TSO(1000, TxFrag{0x1000, 54}, TxFrag{0x3000, 1000}, TxFrag{0x5000, 1000}),
		want: []txDesc{
			{0x1000, 1000, 54, 1, 34, txFlagTSOHdr | txFlagFirst},
			{0x3000, 1000, 1000, 1, 0, pld | txFlagFirst | txFlagSmall},
			{0x5000, 1000, 1000, 1, 0, pld | txFlagFirst | txFlagSmall | txFlagTSOLast},
		},
	}, {
		// Headers spread over two pieces (30 + 64), a big MSS (no SMALL),
		// an odd payload descriptor, IPv6: cksum_offset is the TCP header
		// length in every descriptor.
		name: "TSO IPv6: header over two descriptors, ALIGN_ODD",
		p: TxPacket{Frags: []TxFrag{{0x1000, 30}, {0x2000, 64 + 1961}, {0x4001, 3001}}, Len: 5056,
			CsumStart: 54 + 20, CsumOffset: 16, MSS: 1600, HdrLen: 54 + 20 + 20, IPv6: true},
		want: []txDesc{
			// headers: 30, then the 64 up to 94 (cum_len -94, -64)
			{0x1000, 1600, 30, 2, 20, txFlagTSOHdr | txFlagFirst},
			{0x2000, 1600, 64, 1, 20, txFlagTSOHdr},
			// payload 0..1961 holds the boundary at 1600
			{0x2040, 1600, 1961, 2, 20, pld | txFlagFirst | txFlagTSOChop},
			// 361..3362 (odd start) holds 1600 and 3200, ends 162 into
			// the last segment
			{0x4001, 1600, 3001, 1, 20, pld | txFlagTSOChop | txFlagTSOLast | txFlagAlignOdd},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boundary := tt.boundary
			if boundary == 0 {
				boundary = 4096
			}
			ds, err := EncodeSend(tt.p, boundary)
			if err != nil {
				t.Fatalf("EncodeSend: %v", err)
			}
			if diff := cmp.Diff(tt.want, decodeDescs(ds)); diff != "" {
				t.Errorf("descriptors (-want +got):\n%s", diff)
			}
			for i, d := range ds {
				if d[12] != 0 {
					t.Errorf("descriptor %d pad = %#x, want 0", i, d[12])
				}
			}
		})
	}
}

func TestEncodeSendErrors(t *testing.T) {
	many := make([]TxFrag, 13)
	for i := range many {
		many[i] = TxFrag{uint64(0x10000 * (i + 1)), 100}
	}
	manyTSO := []TxFrag{{0x1000, 54}}
	for i := range 64 {
		manyTSO = append(manyTSO, TxFrag{uint64(0x10000 * (i + 1)), 100})
	}
	tests := []struct {
		name     string
		p        TxPacket
		boundary int
		is       error
	}{
		{"boundary not a power of two", TxPacket{Frags: []TxFrag{{0, 100}}, Len: 100}, 3000, nil},
		{"lengths disagree", TxPacket{Frags: []TxFrag{{0, 100}}, Len: 101}, 4096, nil},
		{"negative fragment", TxPacket{Frags: []TxFrag{{0, 101}, {0, -1}}, Len: 100}, 4096, nil},
		{"empty", TxPacket{}, 4096, nil},
		{"short packet in pieces", TxPacket{Frags: []TxFrag{{0, 20}, {0x100, 22}}, Len: 42}, 4096, nil},
		{"TSO without checksum", TxPacket{Frags: []TxFrag{{0, 2000}}, Len: 2000, MSS: 1000, HdrLen: 54}, 4096, nil},
		{"TSO without payload", TxPacket{Frags: []TxFrag{{0, 54}}, Len: 54, MSS: 1000, HdrLen: 54, CsumStart: 34}, 4096, nil},
		{"13 pieces", TxPacket{Frags: many, Len: 1300}, 4096, ErrTooManyDescs},
		{"65 TSO pieces", TxPacket{Frags: manyTSO, Len: 54 + 6400, MSS: 1000, HdrLen: 54, CsumStart: 34}, 4096, ErrTooManyDescs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := EncodeSend(tt.p, tt.boundary)
			if err == nil {
				t.Fatalf("EncodeSend = %d descriptors, want an error", len(ds))
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("EncodeSend error %v, want %v", err, tt.is)
			}
		})
	}
}

// Exactly 12 (64 for TSO) descriptors still fit.
func TestEncodeSendLimits(t *testing.T) {
	var frags []TxFrag
	for i := range 12 {
		frags = append(frags, TxFrag{uint64(0x10000 * (i + 1)), 100})
	}
	ds, err := EncodeSend(TxPacket{Frags: frags, Len: 1200}, 4096)
	if err != nil || len(ds) != 12 || ds[0][txOffRDMACount] != 12 {
		t.Errorf("12 pieces: %d descriptors (rdma_count %d), %v; want 12, 12, nil", len(ds), ds[0][txOffRDMACount], err)
	}
	frags = []TxFrag{{0x1000, 54}}
	for i := range 63 {
		frags = append(frags, TxFrag{uint64(0x10000 * (i + 1)), 100})
	}
	ds, err = EncodeSend(TxPacket{Frags: frags, Len: 54 + 6300, MSS: 1000, HdrLen: 54, CsumStart: 34}, 4096)
	if err != nil || len(ds) != 64 {
		t.Errorf("64 TSO pieces: %d descriptors, %v; want 64, nil", len(ds), err)
	}
}

func TestSubmitOrder(t *testing.T) {
	descs := make([][16]byte, 3)
	for i := range descs {
		for j := range descs[i] {
			descs[i][j] = byte(0x10*(i+1) + j)
		}
	}
	const ring = 0x200000
	slot := func(i int) uint64 { return ring + uint64(i)*16 }
	type st struct {
		Off uint64
		N   int
	}
	tests := []struct {
		name    string
		entries int
		idx     int
		n       int
		want    []st
	}{{
		name: "forward in pairs, odd last alone", entries: 16, idx: 5, n: 3,
		want: []st{{slot(5), 8}, {slot(5) + 8, 8}, {slot(6), 8}, {slot(6) + 8, 8}, {slot(7), 8}, {slot(7) + 8, 8}, {slot(5) + 12, 4}},
	}, {
		name: "single", entries: 16, idx: 0, n: 1,
		want: []st{{slot(0), 8}, {slot(0) + 8, 8}, {slot(0) + 12, 4}},
	}, {
		name: "wrapping: backwards, then the first", entries: 16, idx: 14, n: 3,
		want: []st{{slot(0), 8}, {slot(0) + 8, 8}, {slot(15), 8}, {slot(15) + 8, 8}, {slot(14), 8}, {slot(14) + 8, 8}, {slot(14) + 12, 4}},
	}, {
		// idx+cnt == entries-1 is not "< mask": backwards without a wrap.
		name: "backwards at idx+cnt == mask", entries: 16, idx: 13, n: 2,
		want: []st{{slot(14), 8}, {slot(14) + 8, 8}, {slot(13), 8}, {slot(13) + 8, 8}, {slot(13) + 12, 4}},
	}, {
		name: "forward at idx+cnt == mask-1", entries: 16, idx: 12, n: 2,
		want: []st{{slot(12), 8}, {slot(12) + 8, 8}, {slot(13), 8}, {slot(13) + 8, 8}, {slot(12) + 12, 4}},
	}, {
		name: "idx taken mod entries", entries: 16, idx: 16 + 5, n: 1,
		want: []st{{slot(5), 8}, {slot(5) + 8, 8}, {slot(5) + 12, 4}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stores := SubmitOrder(ring, tt.entries, tt.idx, descs[:tt.n])
			var got []st
			for _, s := range stores {
				got = append(got, st{s.Off, len(s.Data)})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("stores (-want +got):\n%s", diff)
			}
			// Replaying the stores leaves the descriptors in the ring, and
			// the ring shows flags 0 at the head until the last store.
			img := make([]byte, tt.entries*16)
			for i, s := range stores {
				copy(img[s.Off-ring:], s.Data)
				head := (tt.idx % tt.entries) * 16
				if flags := img[head+15]; (flags != 0) != (i == len(stores)-1) {
					t.Errorf("after store %d of %d the head flags are %#x", i+1, len(stores), flags)
				}
			}
			for i := range tt.n {
				o := (tt.idx + i) % tt.entries * 16
				if diff := cmp.Diff(descs[i][:], img[o:o+16]); diff != "" {
					t.Errorf("descriptor %d in the ring (-want +got):\n%s", i, diff)
				}
			}
		})
	}
	if s := SubmitOrder(ring, 16, 0, nil); s != nil {
		t.Errorf("SubmitOrder of nothing = %v, want nil", s)
	}
}
