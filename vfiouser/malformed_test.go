package vfiouser_test

import (
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"

	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// outcome is what a malformed message must lead to.
type outcome int

const (
	errorReply outcome = iota // error reply with the errno; the connection keeps working
	closeConn                 // (an error reply, then) the connection is closed cleanly
	noReply                   // nothing comes back; the connection keeps working
)

type malformed struct {
	name  string
	h     vfiouser.Header
	body  []byte
	nfds  int  // pipe write ends attached; each must be closed by the server
	raw   bool // send h+body and then close the socket (truncation)
	want  outcome
	errno unix.Errno
}

func hdr(cmd vfiouser.Command, bodyLen int, flags uint32) vfiouser.Header {
	return vfiouser.Header{Command: cmd, Size: uint32(16 + bodyLen), Flags: flags}
}

func u32s(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		le.PutUint32(b[4*i:], v)
	}
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	le.PutUint64(b, v)
	return b
}

func malformedCases() []malformed {
	regionRead := func(index uint32, off uint64, n uint32) []byte { return cat(u64(off), u32s(index, n)) }
	dmaMapBody := func(argsz, flags uint32, off, iova, size uint64) []byte {
		return cat(u32s(argsz, flags), u64(off), u64(iova), u64(size))
	}
	return []malformed{
		{name: "size below header", h: vfiouser.Header{Command: vfiouser.CmdDeviceGetInfo, Size: 8}, want: closeConn, errno: unix.EINVAL},
		{name: "size zero", h: vfiouser.Header{Command: vfiouser.CmdDeviceGetInfo, Size: 0}, want: closeConn, errno: unix.EINVAL},
		{name: "huge size", h: vfiouser.Header{Command: vfiouser.CmdRegionWrite, Size: 0xffffffff}, want: closeConn, errno: unix.EINVAL},
		{name: "size above max message", h: vfiouser.Header{Command: vfiouser.CmdRegionWrite, Size: 2 << 20}, want: closeConn, errno: unix.EINVAL},
		{name: "unknown command", h: hdr(99, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "command 0", h: hdr(0, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "GET_REGION_IO_FDS", h: hdr(vfiouser.CmdGetRegionIOFDs, 16, 0), body: u32s(16, 0, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_READ from the client", h: hdr(vfiouser.CmdDMARead, 16, 0), body: cat(u64(0), u64(4)), want: errorReply, errno: unix.EINVAL},
		{name: "DEVICE_FEATURE", h: hdr(vfiouser.CmdDeviceFeature, 4, 0), body: u32s(4), want: errorReply, errno: unix.EINVAL},
		{name: "GET_INFO argsz 8", h: hdr(vfiouser.CmdDeviceGetInfo, 16, 0), body: u32s(8, 0, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "GET_INFO short payload", h: hdr(vfiouser.CmdDeviceGetInfo, 8, 0), body: u32s(16, 0), want: errorReply, errno: unix.EINVAL},
		{name: "GET_REGION_INFO argsz 16", h: hdr(vfiouser.CmdDeviceGetRegionInfo, 32, 0), body: append(u32s(16, 0, 0, 0), make([]byte, 16)...), want: errorReply, errno: unix.EINVAL},
		{name: "GET_REGION_INFO index huge", h: hdr(vfiouser.CmdDeviceGetRegionInfo, 32, 0), body: append(u32s(32, 0, 0xffffffff, 0), make([]byte, 16)...), want: errorReply, errno: unix.EINVAL},
		{name: "GET_IRQ_INFO argsz 0", h: hdr(vfiouser.CmdDeviceGetIRQInfo, 16, 0), body: u32s(0, 0, 2, 0), want: errorReply, errno: unix.EINVAL},
		{name: "SET_IRQS argsz beyond payload", h: hdr(vfiouser.CmdDeviceSetIRQs, 20, 0), body: u32s(1000, 0x21, 2, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "SET_IRQS short", h: hdr(vfiouser.CmdDeviceSetIRQs, 12, 0), body: u32s(12, 0x21, 2), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_MAP argsz 40", h: hdr(vfiouser.CmdDMAMap, 32, 0), body: dmaMapBody(40, 3, 0, 0, 0x1000), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_MAP size 0", h: hdr(vfiouser.CmdDMAMap, 32, 0), body: dmaMapBody(32, 3, 0, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_MAP wraps", h: hdr(vfiouser.CmdDMAMap, 32, 0), body: dmaMapBody(32, 3, 0, ^uint64(0)-0xfff, 0x2000), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_MAP overlapping", h: hdr(vfiouser.CmdDMAMap, 32, 0), body: dmaMapBody(32, 3, 0, 0x7000_0000, 0x2000), want: errorReply, errno: unix.EEXIST},
		{name: "DMA_MAP two fds", h: hdr(vfiouser.CmdDMAMap, 32, 0), body: dmaMapBody(32, 3, 0, 0x9000_0000, 0x1000), nfds: 2, want: errorReply, errno: unix.EINVAL},
		{name: "DMA_MAP fd not mappable", h: hdr(vfiouser.CmdDMAMap, 32, 0), body: dmaMapBody(32, 3, 0, 0x9000_0000, 0x1000), nfds: 1, want: errorReply},
		{name: "DMA_UNMAP dirty bitmap", h: hdr(vfiouser.CmdDMAUnmap, 24, 0), body: cat(u32s(24, 1), u64(0x7000_0000), u64(0x1000)), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_UNMAP ALL with range", h: hdr(vfiouser.CmdDMAUnmap, 24, 0), body: cat(u32s(24, 2), u64(0x1000), u64(0x1000)), want: errorReply, errno: unix.EINVAL},
		{name: "DMA_UNMAP cuts a map", h: hdr(vfiouser.CmdDMAUnmap, 24, 0), body: cat(u32s(24, 0), u64(0x7000_0000), u64(0x1000)), want: errorReply},
		{name: "fd on GET_INFO", h: hdr(vfiouser.CmdDeviceGetInfo, 16, 0), body: u32s(16, 0, 0, 0), nfds: 1, want: errorReply, errno: unix.EINVAL},
		{name: "fd on REGION_READ", h: hdr(vfiouser.CmdRegionRead, 16, 0), body: regionRead(7, 0, 4), nfds: 1, want: errorReply, errno: unix.EINVAL},
		{name: "fds on DEVICE_RESET", h: hdr(vfiouser.CmdDeviceReset, 0, 0), nfds: 3, want: errorReply, errno: unix.EINVAL},
		{name: "fds on a NO_REPLY write", h: hdr(vfiouser.CmdRegionWrite, 20, vfiouser.FlagNoReply), body: append(regionRead(0, 0, 4), 1, 2, 3, 4), nfds: 2, want: noReply},
		{name: "17 fds (truncated by the kernel)", h: hdr(vfiouser.CmdDeviceSetIRQs, 20, 0), body: u32s(20, 0x24, 2, 0, 4), nfds: 17, want: errorReply, errno: unix.EINVAL},
		{name: "region read past the end", h: hdr(vfiouser.CmdRegionRead, 16, 0), body: regionRead(7, 255, 2), want: errorReply, errno: unix.EINVAL},
		{name: "region read offset 2^64-1", h: hdr(vfiouser.CmdRegionRead, 16, 0), body: regionRead(0, ^uint64(0), 1), want: errorReply, errno: unix.EINVAL},
		{name: "region read count 0", h: hdr(vfiouser.CmdRegionRead, 16, 0), body: regionRead(7, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "region read count 4 GiB", h: hdr(vfiouser.CmdRegionRead, 16, 0), body: regionRead(7, 0, 0xffffffff), want: errorReply, errno: unix.E2BIG},
		{name: "region read with data", h: hdr(vfiouser.CmdRegionRead, 20, 0), body: append(regionRead(7, 0, 4), 1, 2, 3, 4), want: errorReply, errno: unix.EINVAL},
		{name: "region write count beyond payload", h: hdr(vfiouser.CmdRegionWrite, 20, 0), body: append(regionRead(0, 0, 100), 1, 2, 3, 4), want: errorReply, errno: unix.EINVAL},
		{name: "region 9", h: hdr(vfiouser.CmdRegionRead, 16, 0), body: regionRead(9, 0, 4), want: errorReply, errno: unix.EINVAL},
		{name: "WRITE_MULTI count mismatch", h: hdr(vfiouser.CmdRegionWriteMulti, 8+24, 0), body: cat(u64(2), regionRead(0, 0, 4), u64(0)), want: errorReply, errno: unix.EINVAL},
		{name: "WRITE_MULTI entry count 9", h: hdr(vfiouser.CmdRegionWriteMulti, 8+24, 0), body: cat(u64(1), regionRead(0, 0, 9), u64(0)), want: errorReply, errno: unix.EINVAL},
		{name: "WRITE_MULTI zero entries", h: hdr(vfiouser.CmdRegionWriteMulti, 8, 0), body: u64(0), want: errorReply, errno: unix.EINVAL},
		{name: "VERSION again", h: hdr(vfiouser.CmdVersion, 5, 0), body: []byte{0, 0, 0, 0, 0}, want: errorReply, errno: unix.EINVAL},
		{name: "DEVICE_RESET with payload", h: hdr(vfiouser.CmdDeviceReset, 4, 0), body: u32s(0), want: errorReply, errno: unix.EINVAL},
		{name: "reply flag on a command", h: hdr(vfiouser.CmdDeviceGetInfo, 16, vfiouser.FlagTypeReply), body: u32s(16, 0, 0, 0), want: noReply},
		{name: "reply flag on a DMA_WRITE reply nobody asked for", h: hdr(vfiouser.CmdDMAWrite, 16, vfiouser.FlagTypeReply), body: cat(u64(0), u64(4)), want: noReply},
		{name: "error reply nobody asked for", h: hdr(vfiouser.CmdDMARead, 0, vfiouser.FlagTypeReply|vfiouser.FlagError), want: noReply},
		{name: "type 2", h: hdr(vfiouser.CmdDeviceGetInfo, 16, 2), body: u32s(16, 0, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "error flag on a command", h: hdr(vfiouser.CmdDeviceGetInfo, 16, vfiouser.FlagError), body: u32s(16, 0, 0, 0), want: errorReply, errno: unix.EINVAL},
		{name: "NO_REPLY on a read", h: hdr(vfiouser.CmdRegionRead, 16, vfiouser.FlagNoReply), body: regionRead(7, 0, 4), want: noReply},
		{name: "NO_REPLY on a bad read", h: hdr(vfiouser.CmdRegionRead, 16, vfiouser.FlagNoReply), body: regionRead(7, 4096, 4), want: noReply},
		{name: "NO_REPLY on an unknown command", h: hdr(77, 0, vfiouser.FlagNoReply), want: noReply},
		{name: "truncated payload then EOF", h: hdr(vfiouser.CmdRegionWrite, 32, 0), body: regionRead(0, 0, 16), raw: true, want: closeConn},
		{name: "truncated header then EOF", h: vfiouser.Header{}, raw: true, want: closeConn},
	}
}

// TestMalformedMessages sends each malformed message over a real socket:
// each gets an error reply (the connection then keeps working), no reply
// (NO_REPLY, stray replies), or a clean close; never a panic or a hang.
// A second server in the same process serves a client throughout.
func TestMalformedMessages(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "bad")
	other := startServer(t, "good")
	oc := negotiated(t, other.Path)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var otherErr error
	var otherOps int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := oc.ReadConfig(0, 4); err != nil {
				otherErr = err
				return
			}
			otherOps++
		}
	}()

	for _, tt := range malformedCases() {
		t.Run(tt.name, func(t *testing.T) {
			c := negotiated(t, s.Path)
			// A map for the overlap and unmap cases.
			if err := c.MapFD(0x7000_0000, 0x2000, 0, -1, 3); err != nil {
				t.Fatal(err)
			}
			var fds, readEnds []int
			for range tt.nfds {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					t.Fatal(err)
				}
				readEnds = append(readEnds, p[0])
				fds = append(fds, p[1])
			}
			defer closeFDs(readEnds)
			h := tt.h
			h.ID = c.NextID()
			var reply vfiousertest.Reply
			var err error
			switch {
			case tt.raw:
				b := make([]byte, 16+len(tt.body))
				h.Put(b)
				copy(b[16:], tt.body)
				if tt.h == (vfiouser.Header{}) {
					b = b[:8] // half a header
				}
				err = c.Raw(b, fds)
			case tt.want == noReply:
				err = c.RawPost(h, tt.body, fds)
			default:
				reply, err = c.RawCall(h, tt.body, fds)
			}
			closeFDs(fds) // the server has its own copies now
			switch tt.want {
			case errorReply:
				if _, ok := err.(*vfiousertest.ReplyError); !ok || reply.Header.Size != 16 {
					t.Fatalf("got %v (reply %v), want a header-only error reply", err, reply.Header)
				}
				if tt.errno != 0 && !vfiousertest.IsErrno(err, tt.errno) {
					t.Errorf("got %v, want %v", err, tt.errno)
				}
				if err := c.Sync(); err != nil {
					t.Fatalf("connection unusable after the error reply: %v", err)
				}
			case noReply:
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Sync(); err != nil {
					t.Fatalf("after a message that must get no reply: %v", err)
				}
			case closeConn:
				if tt.raw {
					c.Close()
					break
				}
				if err != vfiousertest.ErrClosed && !vfiousertest.IsErrno(err, tt.errno) {
					t.Errorf("got %v, want an error reply or a close", err)
				}
				select {
				case <-c.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("connection not closed")
				}
			}
			// Every fd the server received was closed by it (the pipe
			// reads EOF once no write end is left).
			for i, r := range readEnds {
				if !pipeClosed(t, r) {
					t.Errorf("fd %d of %d still open in the server", i, len(readEnds))
				}
			}
		})
	}
	close(stop)
	wg.Wait()
	if otherErr != nil || otherOps == 0 {
		t.Errorf("second server: %d reads, error %v", otherOps, otherErr)
	}
	if hasLog(s.Log, logrus.ErrorLevel, "panic while serving a client; dropping it") || s.Stats().Panics != 0 {
		t.Error("a malformed message caused a panic")
	}
	if st := s.Stats(); st.ProtocolErrors < 40 {
		t.Errorf("stats %+v: want at least 40 protocol errors counted", st)
	}
	if !hasLog(s.Log, logrus.WarnLevel, "client protocol error") {
		t.Error("no Warn for client protocol errors")
	}
	// The server still serves after all that.
	c := negotiated(t, s.Path)
	if _, err := c.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
}

// pipeClosed waits up to 5 s for the pipe's last write end to close.
func pipeClosed(t *testing.T, r int) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 5000)
	if err != nil || n == 0 {
		return false
	}
	var b [1]byte
	m, _ := unix.Read(r, b[:])
	return m == 0
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
