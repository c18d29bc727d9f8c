package vhostuser

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/myriemu/myriemu/internal/ratelog"
	"golang.org/x/sys/unix"
)

func newFuzzBackend() *Backend {
	return &Backend{log: quietLog(), warn: ratelog.New(), stop: make(chan struct{})}
}

// FuzzMessage decodes any bytes as a message (header then payload, no
// fds) and hands a decodable one to the request handler of a backend with
// no guest memory: no panic, a reply only for requests that have one, and
// accessors that refuse every payload of the wrong size.
func FuzzMessage(f *testing.F) {
	seed := func(req Request, payload []byte) []byte {
		return append(appendHeader(nil, Header{Request: req, Flags: flagVersion, Size: uint32(len(payload))}), payload...)
	}
	f.Add(seed(ReqGetFeatures, nil))
	f.Add(seed(ReqSetFeatures, u64(FeatureVersion1)))
	f.Add(seed(ReqSetVringNum, state(0, 256)))
	f.Add(seed(ReqSetVringAddr, ringAddr(1)))
	f.Add(seed(ReqSetMemTable, memTable(Region{0, 4096, userBase, 0})))
	f.Add(seed(ReqGetVringBase, state(1, 0)))
	f.Add(seed(ReqSetVringEnable, state(0, 1)))
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < HeaderSize {
			return
		}
		h, err := parseHeader(data)
		if err != nil {
			return
		}
		if h.Size > maxPayload {
			t.Fatalf("accepted a %d-byte payload size", h.Size)
		}
		payload := data[HeaderSize:]
		if uint32(len(payload)) > h.Size {
			payload = payload[:h.Size]
		}
		m := &Message{Header: h, Payload: payload}
		if _, err := m.U64(); err == nil && len(payload) != sizeU64 {
			t.Fatal("U64 accepted a wrong size")
		}
		if _, _, err := m.State(); err == nil && len(payload) != sizeState {
			t.Fatal("State accepted a wrong size")
		}
		if _, err := m.Addr(); err == nil && len(payload) != sizeAddr {
			t.Fatal("Addr accepted a wrong size")
		}
		if _, err := m.MemTable(); err == nil {
			t.Fatal("MemTable accepted a table without fds")
		}
		b := newFuzzBackend()
		out, _ := b.handle(m)
		switch h.Request {
		case ReqGetFeatures, ReqGetProtocolFeatures, ReqGetVringBase:
		default:
			if out != nil {
				t.Fatalf("%s answered with a payload", h.Request)
			}
		}
		b.reset()
	})
}

// FuzzRing runs the transmit and receive paths over rings whose
// descriptors and indices are any bytes, in real shared memory: no panic,
// no frame larger than the wire's, and the used index never passes the
// entries taken.
func FuzzRing(f *testing.F) {
	f.Add(make([]byte, 64), uint16(1), uint16(1))
	d := binary.LittleEndian.AppendUint64(nil, bufOff)
	d = binary.LittleEndian.AppendUint32(d, 100)
	d = binary.LittleEndian.AppendUint16(d, descFNext)
	d = binary.LittleEndian.AppendUint16(d, 1)
	f.Add(d, uint16(1), uint16(0))
	fd, err := unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		f.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, memSize); err != nil {
		f.Fatal(err)
	}
	mem, err := mapMemory([]Region{{0, memSize, userBase, 0}}, []int{fd})
	if err != nil {
		f.Fatal(err)
	}
	defer mem.unmap()
	raw := mem.regions[0].data
	f.Fuzz(func(t *testing.T, descs []byte, availIdx, head uint16) {
		clear(raw[:0x20000])
		b := newFuzzBackend()
		b.mem = mem
		var sent int
		b.cfg.Transmit = func(frames [][]byte) {
			for _, fr := range frames {
				if len(fr) > maxFrame {
					t.Fatalf("a %d-byte frame", len(fr))
				}
			}
			sent += len(frames)
		}
		for q := range nQueues {
			base := uint64(q) * 0x10000
			copy(raw[base+descOff:base+descOff+qsize*descSize], descs)
			a := raw[base+availOff:]
			binary.LittleEndian.PutUint16(a[2:], availIdx)
			for i := range qsize {
				binary.LittleEndian.PutUint16(a[4+2*i:], head+uint16(i))
			}
			r := &b.rings[q]
			r.num = qsize
			r.addr = VringAddr{Desc: userBase + base + descOff, Avail: userBase + base + availOff, Used: userBase + base + usedOff}
			if err := r.mapRing(mem); err != nil {
				t.Fatal(err)
			}
			r.kick, r.enabled = nil, true
		}
		// ready() wants a kick fd; these paths do not read it.
		b.rings[txQueue].kick, b.rings[rxQueue].kick = nullFile(t), nullFile(t)
		b.drainTxLocked()
		b.Receive([][]byte{make([]byte, 60), make([]byte, 1514)})
		for q := range nQueues {
			r := &b.rings[q]
			if int16(r.lastAvail-r.usedIdx) < 0 || uint32(r.lastAvail-r.usedIdx) > qsize {
				t.Fatalf("ring %d: used %d, taken %d", q, r.usedIdx, r.lastAvail)
			}
		}
		b.rings[txQueue].kick.Close()
		b.rings[rxQueue].kick.Close()
		b.rings = [nQueues]vring{}
	})
}

func nullFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
