package vhostuser

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

const wait = 20 * time.Second

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// Guest memory layout of the fake front end: one memfd region of 1 MiB at
// guest physical 0, which the front end "maps" at userBase.
const (
	memSize  = 1 << 20
	userBase = 0x7f0000000000
	qsize    = 16
	// Ring placement (guest physical), per queue q at q*0x10000.
	descOff  = 0x0000
	availOff = 0x1000
	usedOff  = 0x2000
	bufOff   = 0x4000 // buffers: 2 KiB each
)

// frontEnd is a fake QEMU: it owns guest memory and speaks vhost-user.
type frontEnd struct {
	t     testing.TB
	c     *net.UnixConn
	mem   []byte
	memfd int
	kick  [nQueues]int
	call  [nQueues]int
	avail [nQueues]uint16
}

type backendUnderTest struct {
	b       *Backend
	tx      chan []byte
	carrier chan bool
	wg      sync.WaitGroup
}

func startBackend(t testing.TB) (*backendUnderTest, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vu.sock")
	bt := &backendUnderTest{tx: make(chan []byte, 1024), carrier: make(chan bool, 64)}
	b, err := Listen(Config{
		Path: path,
		Transmit: func(frames [][]byte) {
			for _, f := range frames {
				bt.tx <- append([]byte(nil), f...)
			}
		},
		Carrier: func(up bool) { bt.carrier <- up },
		Log:     quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	bt.b = b
	bt.wg.Go(b.Serve)
	t.Cleanup(func() { b.Close(); bt.wg.Wait() })
	return bt, path
}

func dial(t testing.TB, path string) *frontEnd {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, memSize); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	fe := &frontEnd{t: t, c: c, mem: mem, memfd: fd}
	for q := range nQueues {
		fe.kick[q], _ = unix.Eventfd(0, unix.EFD_CLOEXEC)
		fe.call[q], _ = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	t.Cleanup(func() {
		c.Close()
		unix.Munmap(mem)
		unix.Close(fd)
		for q := range nQueues {
			unix.Close(fe.kick[q])
			unix.Close(fe.call[q])
		}
	})
	return fe
}

// send sends a request; with wantReply it returns the reply's payload.
func (fe *frontEnd) send(req Request, flags uint32, payload []byte, fds []int, wantReply bool) []byte {
	fe.t.Helper()
	b := appendHeader(nil, Header{Request: req, Flags: flagVersion | flags, Size: uint32(len(payload))})
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := fe.c.WriteMsgUnix(b, oob, nil); err != nil {
		fe.t.Fatalf("send %s: %v", req, err)
	}
	if !wantReply {
		return nil
	}
	fe.c.SetReadDeadline(time.Now().Add(wait))
	hdr := make([]byte, HeaderSize)
	if _, err := io.ReadFull(fe.c, hdr); err != nil {
		fe.t.Fatalf("reply to %s: %v", req, err)
	}
	h := Header{Request(binary.LittleEndian.Uint32(hdr)), binary.LittleEndian.Uint32(hdr[4:]), binary.LittleEndian.Uint32(hdr[8:])}
	if h.Request != req || h.Flags&flagReply == 0 {
		fe.t.Fatalf("reply to %s: header %+v", req, h)
	}
	p := make([]byte, h.Size)
	if _, err := io.ReadFull(fe.c, p); err != nil {
		fe.t.Fatalf("reply to %s: %v", req, err)
	}
	return p
}

func state(i, n uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, i), n)
}

func memTable(regions ...Region) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regions {
		for _, v := range []uint64{r.GuestPhys, r.Size, r.UserAddr, r.MmapOffset} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b
}

func ringAddr(q uint32) []byte {
	base := uint64(q) * 0x10000
	b := binary.LittleEndian.AppendUint32(nil, q)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{userBase + base + descOff, userBase + base + usedOff, userBase + base + availOff, 0} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// setUp negotiates and starts both rings, as QEMU does at guest start.
func (fe *frontEnd) setUp() {
	fe.t.Helper()
	feat := binary.LittleEndian.Uint64(fe.send(ReqGetFeatures, 0, nil, nil, true))
	if feat&FeatureVersion1 == 0 || feat&FeatureProtocolFeatures == 0 {
		fe.t.Fatalf("features %#x", feat)
	}
	fe.send(ReqGetProtocolFeatures, 0, nil, nil, true)
	fe.send(ReqSetProtocolFeatures, 0, u64(ProtocolReplyAck), nil, false)
	fe.send(ReqSetOwner, 0, nil, nil, false)
	fe.send(ReqSetFeatures, 0, u64(FeatureVersion1|FeatureProtocolFeatures), nil, false)
	if st := fe.send(ReqSetMemTable, flagNeedReply, memTable(Region{0, memSize, userBase, 0}), []int{fe.memfd}, true); binary.LittleEndian.Uint64(st) != 0 {
		fe.t.Fatal("SET_MEM_TABLE refused")
	}
	for q := uint32(0); q < nQueues; q++ {
		fe.send(ReqSetVringNum, 0, state(q, qsize), nil, false)
		fe.send(ReqSetVringBase, 0, state(q, 0), nil, false)
		fe.send(ReqSetVringAddr, 0, ringAddr(q), nil, false)
		fe.send(ReqSetVringKick, 0, u64(uint64(q)), []int{fe.kick[q]}, false)
		fe.send(ReqSetVringCall, 0, u64(uint64(q)), []int{fe.call[q]}, false)
		if st := fe.send(ReqSetVringEnable, flagNeedReply, state(q, 1), nil, true); binary.LittleEndian.Uint64(st) != 0 {
			fe.t.Fatalf("enabling ring %d refused", q)
		}
	}
}

func (fe *frontEnd) at(gpa uint64) []byte { return fe.mem[gpa:] }

// setDesc writes descriptor i of queue q.
func (fe *frontEnd) setDesc(q int, i uint16, addr uint64, n uint32, flags, next uint16) {
	d := fe.at(uint64(q)*0x10000 + descOff + uint64(i)*descSize)
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// offer makes head available on queue q and kicks.
func (fe *frontEnd) offer(q int, head uint16) {
	a := fe.at(uint64(q)*0x10000 + availOff)
	binary.LittleEndian.PutUint16(a[4+2*(fe.avail[q]%qsize):], head)
	fe.avail[q]++
	binary.LittleEndian.PutUint16(a[2:], fe.avail[q])
	unix.Write(fe.kick[q], u64(1))
}

func (fe *frontEnd) usedIdx(q int) uint16 {
	return binary.LittleEndian.Uint16(fe.at(uint64(q)*0x10000 + usedOff + 2))
}

func (fe *frontEnd) used(q int, slot uint16) (id, n uint32) {
	e := fe.at(uint64(q)*0x10000 + usedOff + 4 + 8*uint64(slot%qsize))
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
}

func buf(q, i int) uint64 { return uint64(q)*0x10000 + bufOff + uint64(i)*2048 }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i)
	}
	return f
}

// TestTransmitAndReceive: a frame the guest queues (header and frame split
// over two descriptors) comes out whole; a frame received goes into the
// guest's buffer behind a header, with an interrupt.
func TestTransmitAndReceive(t *testing.T) {
	leaktest.Check(t)
	bt, path := startBackend(t)
	fe := dial(t, path)
	fe.setUp()
	if up := <-bt.carrier; !up {
		t.Fatal("carrier not up after both rings started")
	}

	// Transmit: header in descriptor 0, the frame in 1.
	f := testFrame(1000, 3)
	copy(fe.at(buf(txQueue, 1)), f)
	fe.setDesc(txQueue, 0, buf(txQueue, 0), netHdrSize, descFNext, 1)
	fe.setDesc(txQueue, 1, buf(txQueue, 1), uint32(len(f)), 0, 0)
	fe.offer(txQueue, 0)
	select {
	case got := <-bt.tx:
		if !bytes.Equal(got, f) {
			t.Fatalf("transmitted %d bytes, differing from the %d queued", len(got), len(f))
		}
	case <-time.After(wait):
		t.Fatal("nothing transmitted")
	}
	eventually(t, "tx buffer returned", func() bool { return fe.usedIdx(txQueue) == 1 })

	// Receive: one 2 KiB writable buffer.
	fe.setDesc(rxQueue, 0, buf(rxQueue, 0), 2048, descFWrite, 0)
	fe.offer(rxQueue, 0)
	g := testFrame(1514, 9)
	bt.b.Receive([][]byte{g})
	if fe.usedIdx(rxQueue) != 1 {
		t.Fatal("no receive buffer used")
	}
	id, n := fe.used(rxQueue, 0)
	if id != 0 || n != netHdrSize+1514 {
		t.Fatalf("used element id %d len %d", id, n)
	}
	got := fe.at(buf(rxQueue, 0))[:n]
	if !bytes.Equal(got[netHdrSize:], g) || binary.LittleEndian.Uint16(got[10:]) != 1 {
		t.Fatal("received frame or header differs")
	}
	var ev [8]byte
	if _, err := unix.Read(fe.call[rxQueue], ev[:]); err != nil {
		t.Fatalf("no interrupt for the received frame: %v", err)
	}
	// No buffer left: dropped and counted.
	bt.b.Receive([][]byte{g})
	if st := bt.b.Stats(); st.RxFrames != 1 || st.RxNoBuffer != 1 || st.TxFrames != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestReconnect: the front end goes and comes back; the backend forgets
// the old session (carrier down) and serves the new one.
func TestReconnect(t *testing.T) {
	leaktest.Check(t)
	bt, path := startBackend(t)
	fe := dial(t, path)
	fe.setUp()
	<-bt.carrier
	fe.c.Close()
	select {
	case up := <-bt.carrier:
		if up {
			t.Fatal("carrier up after the front end left")
		}
	case <-time.After(wait):
		t.Fatal("carrier still up after the front end left")
	}
	fe2 := dial(t, path)
	fe2.setUp()
	if up := <-bt.carrier; !up {
		t.Fatal("carrier not up again")
	}
	if st := bt.b.Stats(); st.Connects != 2 {
		t.Errorf("%d connects", st.Connects)
	}
}
