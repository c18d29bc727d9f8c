package vfiouser

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/myriemu/myriemu/dma"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Fuzz targets for every parser a client can reach: framing, capability
// JSON, SET_IRQS, DMA_MAP/UNMAP and region accesses. The dispatch-based
// targets run the real handler on a fresh connection (a socketpair and a
// FakeFunction, whose accessors panic on any out-of-range access the server
// should have refused) and check the reply on the wire: nothing for
// NO_REPLY, otherwise exactly one reply that echoes id and command, a
// header-only error, sizes within what QEMU accepts, fds only on region
// info, and every received fd closed or held by the function.

// testConn is a negotiated connection with no reader goroutine; the test
// calls handle directly and reads replies from peer.
type testConn struct {
	c    *conn
	peer int
	fake *FakeFunction
}

func newTestConn(tb testing.TB) *testConn {
	tb.Helper()
	fake, err := NewFakeFunction()
	if err != nil {
		tb.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fake.Close()
		tb.Fatal(err)
	}
	unix.SetNonblock(fds[1], true)
	l := logrus.New()
	l.SetOutput(io.Discard)
	s := &Server{
		cfg:    Config{Function: fake, MaxDataXfer: MinMaxDataXfer},
		log:    logrus.NewEntry(l),
		texts:  versionReplies(MinMaxDataXfer, 65535),
		maxMsg: MinMaxDataXfer + 4096,

		dmaTimeout: dmaReplyTimeout,
	}
	c := newConn(s, fds[0])
	c.mem = dma.NewMap(nil)
	c.mem.SetMessenger(c)
	c.numRegions, c.numIRQs = fake.DeviceInfo()
	c.regions = make([]regionLimit, c.numRegions)
	for i := range c.regions {
		ri, _ := fake.RegionInfo(uint32(i))
		c.regions[i] = regionLimit{ri.Size, ri.Flags}
	}
	c.negotiated = true
	c.peer = peerCaps{MaxMsgFDs: 16, MaxDataXfer: DefaultMaxDataXfer}
	tc := &testConn{c: c, peer: fds[1], fake: fake}
	tb.Cleanup(func() {
		c.mem.Close()
		unix.Close(fds[0])
		unix.Close(fds[1])
		fake.Close()
	})
	return tc
}

// eventfds makes n fds to send.
func eventfds(tb testing.TB, n int) []int {
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			tb.Fatal(err)
		}
		fds[i] = fd
	}
	return fds
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// maxReply is the largest reply QEMU 11.1.3 accepts to request h
// (notes 1.2): the request's size, except region info and region read.
func maxReply(h Header, payload []byte) int {
	switch h.Command {
	case CmdDeviceGetRegionInfo:
		if len(payload) >= 4 {
			return HeaderSize + int(le.Uint32(payload))
		}
	case CmdRegionRead:
		if len(payload) >= 16 {
			return 32 + int(le.Uint32(payload[12:]))
		}
	}
	return int(h.Size)
}

// handleAndCheck runs one message through the connection and checks the
// wire and fd invariants.
func (tc *testConn) handleAndCheck(t *testing.T, h Header, payload []byte, nfds int) {
	fds := eventfds(t, nfds)
	sent := append([]int(nil), fds...)
	h.Size = uint32(HeaderSize + len(payload))
	p := append([]byte(nil), payload...)
	if !tc.c.handle(&message{hdr: h, payload: p, fds: fds}) {
		t.Fatalf("handle dropped the connection for %v", h)
	}
	// fds: closed, or held by the function (SET_IRQS) or the map (DMA_MAP
	// closes its fd after mmap or on error; a pipe/eventfd never maps).
	for _, fd := range sent {
		if fdOpen(fd) && !tc.fake.holds(fd) {
			t.Errorf("%v: fd %d neither closed nor held by the function", h, fd)
			unix.Close(fd)
		}
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*16))
	n, oobn, _, _, err := unix.Recvmsg(tc.peer, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if h.NoReply() || h.IsReply() {
		if err != unix.EAGAIN {
			t.Fatalf("%v: %d bytes came back, want no reply (%v)", h, n, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%v: no reply: %v", h, err)
	}
	var got []int
	if oobn > 0 {
		got = appendRights(nil, oob[:oobn])
		closeFDs(got)
	}
	rh, ok := DecodeHeader(buf[:n])
	if !ok || int(rh.Size) != n {
		t.Fatalf("%v: reply of %d bytes with header %v", h, n, rh)
	}
	if rh.ID != h.ID || rh.Command != h.Command || rh.Type() != FlagTypeReply || rh.Flags&^(FlagTypeMask|FlagError) != 0 {
		t.Fatalf("%v: reply header %v", h, rh)
	}
	if rh.IsError() {
		if rh.Size != HeaderSize || rh.Error == 0 || len(got) != 0 {
			t.Fatalf("%v: error reply %v with %d fds", h, rh, len(got))
		}
		return
	}
	if int(rh.Size) > maxReply(h, payload) && !(h.Command == CmdVersion && len(payload) < 70) {
		t.Fatalf("%v: reply %d bytes, QEMU accepts at most %d", h, rh.Size, maxReply(h, payload))
	}
	if len(got) > 0 && !(h.Command == CmdDeviceGetRegionInfo && len(got) == 1) {
		t.Fatalf("%v: reply carries %d fds", h, len(got))
	}
}

// holds reports whether fd is an eventfd the fake keeps.
func (f *FakeFunction) holds(fd int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.irqFDs {
		if v == fd {
			return true
		}
	}
	return false
}

// fuzzHeader builds a command header from fuzz bytes.
func fuzzHeader(cmd Command, flags uint8) Header {
	h := Header{ID: 0x1234, Command: cmd}
	if flags&1 != 0 {
		h.Flags |= FlagNoReply
	}
	if flags&2 != 0 {
		h.Flags |= FlagError
	}
	if flags&4 != 0 {
		h.Flags |= uint32(flags>>4) & FlagTypeMask
	}
	return h
}

// FuzzFraming feeds a byte stream through the receiver: messages come out
// with exactly size-16 payload bytes, never reading past a message.
func FuzzFraming(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		if len(stream) > 64<<10 {
			return
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		// Write from a goroutine: the reader must never need more than
		// the socket buffer holds.
		sent := make(chan error, 1)
		go func() {
			var err error
			if len(stream) > 0 {
				err = sendMsg(fds[1], stream, nil)
			}
			unix.Shutdown(fds[1], unix.SHUT_WR)
			sent <- err
		}()
		defer func() {
			unix.Shutdown(fds[0], unix.SHUT_RDWR)
			<-sent
		}()
		const maxMsg = 8192
		r := newReceiver(fds[0], maxMsg)
		off := 0
		var m message
		for {
			err := r.read(&m)
			if err != nil {
				rest := len(stream) - off
				switch {
				case errors.Is(err, io.EOF):
					if rest != 0 {
						t.Fatalf("EOF with %d bytes unread", rest)
					}
				case errors.Is(err, io.ErrUnexpectedEOF):
					if rest == 0 {
						t.Fatal("unexpected EOF at a message boundary")
					}
				case errors.Is(err, errFraming):
					if m.hdr.Size >= HeaderSize && m.hdr.Size <= maxMsg {
						t.Fatalf("framing error for a legal size %d", m.hdr.Size)
					}
					want, _ := DecodeHeader(stream[off:])
					if m.hdr != want {
						t.Fatalf("framing error header %v, stream has %v", m.hdr, want)
					}
				default:
					t.Fatal(err)
				}
				return
			}
			if int(m.hdr.Size) != HeaderSize+len(m.payload) || m.hdr.Size > maxMsg {
				t.Fatalf("message %v with %d payload bytes", m.hdr, len(m.payload))
			}
			if !bytes.Equal(m.payload, stream[off+HeaderSize:off+int(m.hdr.Size)]) {
				t.Fatal("payload differs from the stream")
			}
			if len(m.fds) != 0 || m.ctrunc {
				t.Fatal("fds from nowhere")
			}
			off += int(m.hdr.Size)
		}
	})
}

// FuzzCapabilities parses the client's VERSION payload; accepted limits
// are in range and every reply text is NUL-terminated JSON that fits.
func FuzzCapabilities(f *testing.F) {
	texts := versionReplies(DefaultMaxDataXfer, 65535)
	f.Fuzz(func(t *testing.T, payload []byte, limit uint16) {
		v := version(payload)
		if !v.Valid() {
			if len(payload) >= versionSize && payload[len(payload)-1] == 0 {
				t.Fatal("NUL-terminated payload refused")
			}
			return
		}
		j := v.json()
		if bytes.IndexByte(j, 0) >= 0 {
			t.Fatal("json() contains a NUL")
		}
		caps, err := parseCapabilities(j)
		if err == nil {
			if caps.MaxMsgFDs < 0 || caps.MaxMsgFDs > maxMsgFDs || caps.MaxDataXfer < 1 || caps.MaxDataXfer > MaxMaxDataXfer {
				t.Fatalf("accepted out-of-range caps %+v", caps)
			}
		} else if Errno(err) != unix.EINVAL {
			t.Fatalf("error %v without EINVAL", err)
		}
		text := pickVersionReply(texts, int(limit))
		if fits := HeaderSize + versionSize + len(text); fits > int(limit) && !bytes.Equal(text, texts[len(texts)-1]) {
			t.Fatalf("reply %d bytes > limit %d though a smaller text exists", fits, limit)
		}
		var obj map[string]map[string]any
		if text[len(text)-1] != 0 || json.Unmarshal(text[:len(text)-1], &obj) != nil || obj["capabilities"] == nil {
			t.Fatalf("bad reply text %q", text)
		}
	})
}

// FuzzSetIRQs: SET_IRQS payloads with 0..17 fds.
func FuzzSetIRQs(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte, nfds uint8, flags uint8) {
		v := irqSet(payload)
		if v.Valid() {
			fl := v.flags()
			if onesCount(fl&irqDataMask) != 1 || onesCount(fl&irqActionMask) != 1 {
				t.Fatalf("valid with flags %#x", fl)
			}
			if fl&IRQDataBool != 0 && len(v.data()) != int(v.count()) {
				t.Fatal("bool data length")
			}
		}
		tc := newTestConn(t)
		tc.handleAndCheck(t, fuzzHeader(CmdDeviceSetIRQs, flags), payload, int(nfds%18))
	})
}

// FuzzDMAMap: DMA_MAP and DMA_UNMAP payloads against a live map.
func FuzzDMAMap(f *testing.F) {
	f.Fuzz(func(t *testing.T, mapPayload, unmapPayload []byte, nfds uint8, flags uint8) {
		if v := dmaMap(mapPayload); v.Valid() && (v.size() == 0 || v.iova()+v.size() < v.iova()) {
			t.Fatal("valid map with size 0 or wrap")
		}
		if v := dmaUnmap(unmapPayload); v.Valid() && v.flags()&DMAUnmapAll == 0 && (v.size() == 0 || v.iova()+v.size() < v.iova()) {
			t.Fatal("valid unmap with size 0 or wrap")
		}
		tc := newTestConn(t)
		tc.handleAndCheck(t, fuzzHeader(CmdDMAMap, flags), mapPayload, int(nfds%3))
		tc.handleAndCheck(t, fuzzHeader(CmdDMAUnmap, flags>>1), unmapPayload, 0)
		for _, r := range tc.c.mem.Regions() {
			if r.Size == 0 || r.IOVA+r.Size-1 < r.IOVA {
				t.Fatalf("map holds %+v", r)
			}
		}
	})
}

// FuzzRegionAccess: REGION_READ, REGION_WRITE and REGION_WRITE_MULTI
// payloads; the fake panics if any access escapes its region.
func FuzzRegionAccess(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte, kind uint8, flags uint8) {
		cmd := []Command{CmdRegionRead, CmdRegionWrite, CmdRegionWriteMulti}[kind%3]
		tc := newTestConn(t)
		tc.handleAndCheck(t, fuzzHeader(cmd, flags), payload, 0)
	})
}

// FuzzDispatch: any command number, flags, payload and fds.
func FuzzDispatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, cmd uint16, flags uint8, payload []byte, nfds uint8) {
		tc := newTestConn(t)
		tc.handleAndCheck(t, fuzzHeader(Command(cmd), flags), payload, int(nfds%4))
	})
}
