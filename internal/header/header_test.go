package header

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// frame builds an Ethernet frame: tags (TPIDs) then etherType, then l3.
func frame(etherType uint16, tags []uint16, l3 []byte) []byte {
	f := make([]byte, 12, 64)
	for _, tpid := range tags {
		f = binary.BigEndian.AppendUint16(f, tpid)
		f = append(f, 0, 1) // TCI
	}
	f = binary.BigEndian.AppendUint16(f, etherType)
	return append(f, l3...)
}

// ipv4 returns an IPv4 header of hl bytes (hl/4 in IHL) carrying proto,
// followed by pay.
func ipv4(hl int, proto uint8, frag uint16, pay []byte) []byte {
	b := make([]byte, max(hl, IPv4MinSize))
	b[0] = 0x40 | byte(hl/4)&0xF
	binary.BigEndian.PutUint16(b[ipv4FragOff:], frag)
	b[ipv4ProtoOff] = proto
	copy(b[ipv4AddrsOff:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	return append(b, pay...)
}

func ipv6(next uint8, pay []byte) []byte {
	b := make([]byte, IPv6Size)
	b[0] = 0x60
	b[ipv6NextOff] = next
	return append(b, pay...)
}

func TestParse(t *testing.T) {
	ports := []byte{0x12, 0x34, 0x00, 0x50}
	tests := []struct {
		name string
		f    []byte
		want Layers
		ok   bool
	}{
		{"short", make([]byte, 13), Layers{}, false},
		{"ARP", frame(0x0806, nil, make([]byte, 28)), Layers{EtherType: 0x0806, L3: 14}, true},
		{"IPv4 TCP", frame(EtherTypeIPv4, nil, ipv4(20, ProtoTCP, 0, ports)), Layers{EtherTypeIPv4, 14, 34, ProtoTCP}, true},
		{"IPv4 options UDP", frame(EtherTypeIPv4, nil, ipv4(24, ProtoUDP, 0, ports)), Layers{EtherTypeIPv4, 14, 38, ProtoUDP}, true},
		{"802.1Q IPv4", frame(EtherTypeIPv4, []uint16{EtherTypeVLAN}, ipv4(20, ProtoTCP, 0, ports)), Layers{EtherTypeIPv4, 18, 38, ProtoTCP}, true},
		{"QinQ IPv4", frame(EtherTypeIPv4, []uint16{EtherTypeQinQ, EtherTypeVLAN}, ipv4(20, ProtoTCP, 0, ports)), Layers{EtherTypeIPv4, 22, 42, ProtoTCP}, true},
		{"three tags", frame(EtherTypeIPv4, []uint16{EtherTypeVLAN, EtherTypeVLAN, EtherTypeVLAN}, nil), Layers{EtherType: EtherTypeVLAN, L3: 22}, true},
		{"truncated tag", frame(EtherTypeVLAN, nil, []byte{0, 1}), Layers{}, false},
		{"IPv4 fragment", frame(EtherTypeIPv4, nil, ipv4(20, ProtoTCP, 0x2000, ports)), Layers{EtherType: EtherTypeIPv4, L3: 14}, true},
		{"IPv4 IHL 16", frame(EtherTypeIPv4, nil, ipv4(16, ProtoTCP, 0, ports)), Layers{EtherType: EtherTypeIPv4, L3: 14}, false},
		{"IPv4 IHL past the frame", frame(EtherTypeIPv4, nil, ipv4(60, ProtoTCP, 0, nil)[:24]), Layers{EtherType: EtherTypeIPv4, L3: 14}, false},
		{"IPv4 version 6", frame(EtherTypeIPv4, nil, ipv6(ProtoTCP, ports)), Layers{EtherType: EtherTypeIPv4, L3: 14}, false},
		{"IPv6 TCP", frame(EtherTypeIPv6, nil, ipv6(ProtoTCP, ports)), Layers{EtherTypeIPv6, 14, 54, ProtoTCP}, true},
		{"IPv6 hop-by-hop UDP", frame(EtherTypeIPv6, nil, ipv6(ipv6HopByHop, append([]byte{ProtoUDP, 0, 0, 0, 0, 0, 0, 0}, ports...))), Layers{EtherTypeIPv6, 14, 62, ProtoUDP}, true},
		{"IPv6 extension past the frame", frame(EtherTypeIPv6, nil, ipv6(ipv6DestOptions, []byte{ProtoTCP, 9, 0, 0, 0, 0, 0, 0})), Layers{EtherType: EtherTypeIPv6, L3: 14}, true},
		{"IPv6 short", frame(EtherTypeIPv6, nil, make([]byte, 39)), Layers{EtherType: EtherTypeIPv6, L3: 14}, false},
	}
	for _, tt := range tests {
		got, ok := Parse(tt.f)
		if ok != tt.ok {
			t.Errorf("%s: ok = %v, want %v", tt.name, ok, tt.ok)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestTCPValid(t *testing.T) {
	tcp := make(TCP, 24)
	for _, tt := range []struct {
		doff byte
		want bool
	}{{5, true}, {6, true}, {4, false}, {7, false}} {
		tcp[tcpDataOffOff] = tt.doff << 4
		if got := tcp.Valid(); got != tt.want {
			t.Errorf("data offset %d words in 24 bytes: Valid = %v, want %v", tt.doff, got, tt.want)
		}
	}
	if TCP(make([]byte, 19)).Valid() {
		t.Error("19 bytes valid")
	}
}

// FuzzParse: whatever the frame, the offsets Parse reports lie inside it,
// in order, and the views they name are valid.
func FuzzParse(f *testing.F) {
	f.Add(frame(EtherTypeIPv4, nil, ipv4(20, ProtoTCP, 0, make([]byte, 20))))
	f.Add(frame(EtherTypeIPv6, []uint16{EtherTypeVLAN}, ipv6(ipv6HopByHop, make([]byte, 28))))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, ok := Parse(b)
		if !ok {
			return
		}
		if l.L3 < EthernetMinSize || l.L3 > len(b) || (l.L4 != 0 && (l.L4 < l.L3 || l.L4 > len(b))) {
			t.Fatalf("offsets %+v outside a %d-byte frame", l, len(b))
		}
		switch l.EtherType {
		case EtherTypeIPv4:
			if !IPv4(b[l.L3:]).Valid() {
				t.Fatal("IPv4 header not valid")
			}
		case EtherTypeIPv6:
			if !IPv6(b[l.L3:]).Valid() {
				t.Fatal("IPv6 header not valid")
			}
		default:
			if l.L4 != 0 {
				t.Fatalf("transport header in a non-IP frame: %+v", l)
			}
		}
	})
}
