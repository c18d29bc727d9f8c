package vfiouser_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// Benchmarks compare the server with a raw socketpair doing the same
// syscalls with the same message sizes (ARCHITECTURE.md: a raw baseline in
// the same run). A 4-byte REGION_READ is a 32-byte request and a 36-byte
// reply; a posted 4-byte REGION_WRITE is 36 bytes and no reply.
//
//	go test -run '^$' -bench . -benchmem ./vfiouser/

// rawConn is a synchronous client doing exactly what QEMU does per
// message: one sendmsg, then recvmsg of the header and of the payload.
type rawConn struct {
	fd  int
	hdr [16]byte
	buf []byte
	oob []byte
}

func newRawConn(fd int) *rawConn {
	return &rawConn{fd: fd, buf: make([]byte, 4096), oob: make([]byte, unix.CmsgSpace(4*16))}
}

func (r *rawConn) send(tb testing.TB, b []byte) {
	if _, err := unix.SendmsgN(r.fd, b, nil, nil, unix.MSG_NOSIGNAL); err != nil {
		tb.Fatal(err)
	}
}

func (r *rawConn) recvFull(tb testing.TB, p []byte) {
	for n := 0; n < len(p); {
		m, _, _, err := vfiouser.Recvmsg(r.fd, p[n:], r.oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || m == 0 {
			tb.Fatalf("recvmsg: %d, %v", m, err)
		}
		n += m
	}
}

// recv reads one message and returns its header.
func (r *rawConn) recv(tb testing.TB) vfiouser.Header {
	r.recvFull(tb, r.hdr[:])
	h, _ := vfiouser.DecodeHeader(r.hdr[:])
	if n := int(h.Size) - 16; n > 0 {
		r.recvFull(tb, r.buf[:n])
	}
	return h
}

func readMsg(id uint16) []byte {
	b := make([]byte, 32)
	vfiouser.Header{ID: id, Command: vfiouser.CmdRegionRead, Size: 32}.Put(b)
	le.PutUint64(b[16:], 0x10)
	le.PutUint32(b[24:], 0) // BAR0
	le.PutUint32(b[28:], 4)
	return b
}

func postedWriteMsg(id uint16) []byte {
	b := make([]byte, 36)
	vfiouser.Header{ID: id, Command: vfiouser.CmdRegionWrite, Size: 36, Flags: vfiouser.FlagNoReply}.Put(b)
	le.PutUint64(b[16:], 0x10)
	le.PutUint32(b[24:], 0)
	le.PutUint32(b[28:], 4)
	return b
}

// serverConn connects a rawConn to a fresh server and negotiates.
func serverConn(b *testing.B) *rawConn {
	return negotiatedRaw(b, startServer(b, "bench").Path)
}

// dialRaw connects a rawConn to the server at path; the socket is closed
// when the test ends.
func dialRaw(tb testing.TB, path string) *rawConn {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		tb.Fatal(err)
	}
	return newRawConn(fd)
}

// versionMsg is QEMU's VERSION request with message ID id.
func versionMsg(id uint16) []byte {
	p := append([]byte{0, 0, 0, 0}, vfiousertest.QEMUVersionJSON...)
	p = append(p, 0)
	msg := make([]byte, 16+len(p))
	vfiouser.Header{ID: id, Command: vfiouser.CmdVersion, Size: uint32(len(msg))}.Put(msg)
	copy(msg[16:], p)
	return msg
}

// negotiatedRaw dials a rawConn and negotiates the version as QEMU does.
func negotiatedRaw(tb testing.TB, path string) *rawConn {
	tb.Helper()
	r := dialRaw(tb, path)
	r.send(tb, versionMsg(0))
	if h := r.recv(tb); h.IsError() {
		tb.Fatalf("VERSION: %v", h)
	}
	return r
}

// messageDMARaw negotiates a rawConn and maps guest memory [0, 0x1000)
// without an fd, so the device's DMA there becomes messages to it.
func messageDMARaw(tb testing.TB, path string) *rawConn {
	tb.Helper()
	r := negotiatedRaw(tb, path)
	r.send(tb, dmaMapMsg(1, 0, 0x1000))
	if h := r.recv(tb); h.IsError() {
		tb.Fatalf("DMA_MAP: %v", h)
	}
	return r
}

// dmaMapMsg is a DMA_MAP (read and write) of [iova, iova+size) without an fd.
func dmaMapMsg(id uint16, iova, size uint64) []byte {
	m := make([]byte, 48)
	vfiouser.Header{ID: id, Command: vfiouser.CmdDMAMap, Size: 48}.Put(m)
	le.PutUint32(m[16:], 32)
	le.PutUint32(m[20:], 3)
	le.PutUint64(m[32:], iova)
	le.PutUint64(m[40:], size)
	return m
}

// echoPair returns a rawConn whose peer is a goroutine that answers every
// 32-byte message with a 36-byte reply and swallows NO_REPLY messages,
// reading header and payload with separate recvmsg calls like the server.
func echoPair(b *testing.B) *rawConn {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		peer := newRawConn(fds[1])
		reply := make([]byte, 36)
		hb := peer.hdr[:]
		for {
			n, _, _, err := vfiouser.Recvmsg(peer.fd, hb, peer.oob, unix.MSG_CMSG_CLOEXEC)
			if err != nil || n == 0 {
				return
			}
			if n < 16 {
				peer.recvFull(b, hb[n:])
			}
			h, _ := vfiouser.DecodeHeader(hb)
			peer.recvFull(b, peer.buf[:h.Size-16])
			if h.NoReply() {
				continue
			}
			vfiouser.Header{ID: h.ID, Command: h.Command, Size: 36, Flags: vfiouser.FlagTypeReply}.Put(reply)
			copy(reply[16:32], peer.buf[:16])
			if _, err := unix.SendmsgN(peer.fd, reply, nil, nil, unix.MSG_NOSIGNAL); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() {
		unix.Shutdown(fds[0], unix.SHUT_RDWR)
		<-done
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return newRawConn(fds[0])
}

// benchSend sends msg b.N times, each with its own ID. A read waits for
// each reply; posted writes have none, so one read after the last proves
// every write before it was handled.
func benchSend(b *testing.B, r *rawConn, msg []byte, posted bool) {
	sync := readMsg(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		le.PutUint16(msg, uint16(i))
		r.send(b, msg)
		if !posted {
			r.recvReadReply(b)
		}
	}
	if posted {
		r.send(b, sync)
		r.recvReadReply(b)
	}
}

// recvReadReply takes the reply to a 4-byte read and fails on any other.
func (r *rawConn) recvReadReply(b *testing.B) {
	if h := r.recv(b); h.Size != 36 || h.IsError() {
		b.Fatalf("reply %v", h)
	}
}

func BenchmarkRegionRead4(b *testing.B) {
	// The raw baseline first: benchstat -col /impl compares against it.
	b.Run("impl=socketpair", func(b *testing.B) { benchSend(b, echoPair(b), readMsg(1), false) })
	b.Run("impl=server", func(b *testing.B) { benchSend(b, serverConn(b), readMsg(1), false) })
	b.Run("impl=vfiousertest", func(b *testing.B) {
		s := startServer(b, "benchc")
		c, err := vfiousertest.Dial(context.Background(), s.Path)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Negotiate(); err != nil {
			b.Fatal(err)
		}
		p := make([]byte, 4)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := c.ReadRegion(0, 0x10, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPostedWrite4(b *testing.B) {
	b.Run("impl=socketpair", func(b *testing.B) { benchSend(b, echoPair(b), postedWriteMsg(1), true) })
	b.Run("impl=server", func(b *testing.B) { benchSend(b, serverConn(b), postedWriteMsg(1), true) })
}
