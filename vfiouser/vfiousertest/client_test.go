package vfiousertest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/vfiouser"
	"golang.org/x/sys/unix"
)

// The client must catch every server mistake QEMU punishes. These tests
// run it against a scripted server on a socketpair.

type out struct {
	b   []byte
	fds []int
}

// scripted is a server that answers each request with respond's messages.
type scripted struct {
	fd      int
	respond func(h vfiouser.Header, p []byte) []out
	wg      sync.WaitGroup
	mu      sync.Mutex
	got     []vfiouser.Header
}

func newScripted(t *testing.T, respond func(h vfiouser.Header, p []byte) []out) (*scripted, *Client) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{fd: fds[1], respond: respond}
	s.wg.Add(1)
	go s.run()
	c := NewClient(fds[0])
	c.Timeout = time.Second
	t.Cleanup(func() {
		c.Close()
		unix.Shutdown(s.fd, unix.SHUT_RDWR)
		s.wg.Wait()
		unix.Close(s.fd)
		checkNoClientGoroutines(t)
	})
	return s, c
}

func (s *scripted) run() {
	defer s.wg.Done()
	oob := make([]byte, unix.CmsgSpace(64))
	for {
		hb := make([]byte, 16)
		if _, f, err := recvFull(s.fd, hb, oob); err != nil {
			return
		} else {
			closeAll(f)
		}
		h, _ := vfiouser.DecodeHeader(hb)
		p := make([]byte, h.Size-16)
		if len(p) > 0 {
			if _, f, err := recvFull(s.fd, p, oob); err != nil {
				return
			} else {
				closeAll(f)
			}
		}
		s.mu.Lock()
		s.got = append(s.got, h)
		s.mu.Unlock()
		for _, o := range s.respond(h, p) {
			var oobb []byte
			if len(o.fds) > 0 {
				oobb = unix.UnixRights(o.fds...)
			}
			unix.SendmsgN(s.fd, o.b, oobb, nil, unix.MSG_NOSIGNAL)
		}
	}
}

func checkNoClientGoroutines(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		if !bytes.Contains(buf, []byte("vfiousertest.(*Client).runReader")) {
			return
		}
	}
	t.Error("client reader goroutine leaked")
}

func msg(h vfiouser.Header, payload []byte) []byte {
	b := make([]byte, 16+len(payload))
	h.Size = uint32(len(b))
	h.Put(b)
	copy(b[16:], payload)
	return b
}

func reply(h vfiouser.Header, payload []byte) []byte {
	return msg(vfiouser.Header{ID: h.ID, Command: h.Command, Flags: vfiouser.FlagTypeReply}, payload)
}

// answer is a respond that replies to every request with payload.
func answer(payload []byte) func(*testing.T, vfiouser.Header, []byte) []out {
	return func(_ *testing.T, h vfiouser.Header, _ []byte) []out { return []out{{b: reply(h, payload)}} }
}

func goodInfo() []byte {
	p := make([]byte, 16)
	binary.LittleEndian.PutUint32(p[0:], 16)
	binary.LittleEndian.PutUint32(p[4:], 3)
	binary.LittleEndian.PutUint32(p[8:], 9)
	binary.LittleEndian.PutUint32(p[12:], 5)
	return p
}

func eventfd(t *testing.T) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func wantViolation(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		t.Errorf("got %v, want a violation mentioning %q", err, substr)
	}
}

func TestClientAcceptsGoodReplies(t *testing.T) {
	_, c := newScripted(t, func(h vfiouser.Header, p []byte) []out {
		if h.NoReply() {
			return nil
		}
		return []out{{b: reply(h, goodInfo())}}
	})
	if _, err := c.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteRegionPosted(0, 0, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestClientCatchesViolations(t *testing.T) {
	// The calls that only need an error.
	deviceInfo := func(c *Client) error { _, err := c.DeviceInfo(); return err }
	regionInfo0 := func(c *Client) error { _, err := c.RegionInfo(0); return err }
	tests := []struct {
		name    string
		respond func(t *testing.T, h vfiouser.Header, p []byte) []out
		call    func(c *Client) error
		want    string
	}{
		{
			name: "reply to NO_REPLY",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				if h.Command == vfiouser.CmdRegionWrite {
					return []out{{b: reply(h, p[:16])}}
				}
				return []out{{b: reply(h, goodInfo())}}
			},
			call: func(c *Client) error { return c.WriteRegionPosted(0, 0, []byte{1, 2, 3, 4}) },
			want: "NO_REPLY",
		},
		{
			name: "fd on GET_INFO",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				return []out{{b: reply(h, goodInfo()), fds: []int{eventfd(t)}}}
			},
			call: deviceInfo,
			want: "fds",
		},
		{"reply larger than request", answer(append(goodInfo(), make([]byte, 16)...)), deviceInfo, "larger than"},
		{"short GET_INFO", answer(goodInfo()[:12]), deviceInfo, "payload 12 bytes, want 16"},
		{
			name: "wrong command",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				h.Command = vfiouser.CmdDeviceReset
				return []out{{b: reply(h, goodInfo())}}
			},
			call: deviceInfo,
			want: "to a DEVICE_GET_INFO request",
		},
		{
			name: "error reply with payload",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				b := msg(vfiouser.Header{ID: h.ID, Command: h.Command, Flags: 0x21, Error: 22}, []byte{1, 2, 3, 4})
				return []out{{b: b}}
			},
			call: deviceInfo,
			want: "want 16",
		},
		{
			name: "reply to no request",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				stray := h
				stray.ID += 1000
				return []out{{b: reply(stray, goodInfo())}, {b: reply(h, goodInfo())}}
			},
			call: deviceInfo,
			want: "to no request",
		},
		{
			name: "late reply",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				if h.ID == 0 {
					time.Sleep(1200 * time.Millisecond)
				}
				return []out{{b: reply(h, goodInfo())}}
			},
			call: func(c *Client) error {
				if _, err := c.DeviceInfo(); !errors.Is(err, ErrTimeout) {
					return errors.New("first call did not time out")
				}
				return c.Sync()
			},
			want: "timed-out",
		},
		{"VERSION max_msg_fds 32", answer(append([]byte{0, 0, 0, 0}, `{"capabilities":{"max_msg_fds":32}}`+"\x00"...)), (*Client).Negotiate, "max_msg_fds"},
		{"VERSION without NUL", answer(append([]byte{0, 0, 0, 0}, `{"capabilities":{}}`...)), (*Client).Negotiate, "NUL"},
		{"VERSION 0.1", answer(append([]byte{0, 0, 1, 0}, `{"capabilities":{}}`+"\x00"...)), (*Client).Negotiate, "version 0.1"},
		{"region info MMAP without fd", answer(regionInfoReply(7, 4096)), regionInfo0, "exactly 1"},
		{
			name: "region info two fds",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				return []out{{b: reply(h, regionInfoReply(7, 4096)), fds: []int{eventfd(t), eventfd(t)}}}
			},
			call: regionInfo0,
			want: "exactly 1",
		},
		{"region info BAR not a power of two", answer(regionInfoReply(3, 3000)), regionInfo0, "power of two"},
		{
			name: "read reply without data",
			respond: func(t *testing.T, h vfiouser.Header, p []byte) []out {
				return []out{{b: reply(h, p[:16])}}
			},
			call: func(c *Client) error { return c.ReadRegion(7, 0, make([]byte, 4)) },
			want: "payload 16 bytes, want 20",
		},
		{"reset reply with payload", answer([]byte{0, 0, 0, 0}), (*Client).Reset, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := newScripted(t, func(h vfiouser.Header, p []byte) []out { return tt.respond(t, h, p) })
			err := tt.call(c)
			wantViolation(t, err, tt.want)
			if cerr := c.Close(); cerr == nil {
				t.Error("Close reported no violation")
			}
		})
	}
}

// TestClientServesDMA: the server's DMA_WRITE/DMA_READ in the 11.1.3 layout
// are served from mapped RAM; the 10.1 u32-count layout and fds are
// refused and reported.
func TestClientServesDMA(t *testing.T) {
	ram := dmatest.NewRAM(t, 8192)
	replies := make(chan vfiouser.Header, 8)
	var payloads [][]byte
	var mu sync.Mutex
	s, c := newScripted(t, func(h vfiouser.Header, p []byte) []out {
		if h.IsReply() {
			mu.Lock()
			payloads = append(payloads, p)
			mu.Unlock()
			replies <- h
			return nil
		}
		return []out{{b: reply(h, nil)}} // DMA_MAP
	})
	if err := c.MapRAMNoFD(ram, 0x10000); err != nil {
		t.Fatal(err)
	}
	send := func(b []byte, fds ...int) vfiouser.Header {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		unix.SendmsgN(s.fd, b, oob, nil, unix.MSG_NOSIGNAL)
		select {
		case h := <-replies:
			return h
		case <-time.After(5 * time.Second):
			t.Fatal("no reply from the client")
		}
		return vfiouser.Header{}
	}
	le := binary.LittleEndian
	w := make([]byte, 16+4)
	le.PutUint64(w[0:], 0x10100)
	le.PutUint64(w[8:], 4)
	copy(w[16:], "abcd")
	if h := send(msg(vfiouser.Header{ID: 1, Command: vfiouser.CmdDMAWrite}, w)); h.IsError() || h.Size != 32 {
		t.Errorf("DMA_WRITE reply %v", h)
	}
	if got := string(ram.Bytes()[0x100:0x104]); got != "abcd" {
		t.Errorf("RAM %q after DMA_WRITE", got)
	}
	r := make([]byte, 16)
	le.PutUint64(r[0:], 0x10100)
	le.PutUint64(r[8:], 4)
	if h := send(msg(vfiouser.Header{ID: 2, Command: vfiouser.CmdDMARead}, r)); h.IsError() || h.Size != 36 {
		t.Errorf("DMA_READ reply %v", h)
	}
	mu.Lock()
	if got := string(payloads[len(payloads)-1][16:]); got != "abcd" {
		t.Errorf("DMA_READ data %q", got)
	}
	mu.Unlock()
	// Outside RAM: EFAULT, not a violation.
	le.PutUint64(r[0:], 0x900000)
	if h := send(msg(vfiouser.Header{ID: 3, Command: vfiouser.CmdDMARead}, r)); h.Error != uint32(unix.EFAULT) {
		t.Errorf("DMA_READ outside RAM: %v, want EFAULT", h)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("violations so far: %v", err)
	}
	// 10.1 layout: u32 count, data at 12.
	old := make([]byte, 12+4)
	le.PutUint64(old[0:], 0x10100)
	le.PutUint32(old[8:], 4)
	if h := send(msg(vfiouser.Header{ID: 4, Command: vfiouser.CmdDMAWrite}, old)); h.Error != uint32(unix.EINVAL) {
		t.Errorf("u32-count DMA_WRITE: %v, want EINVAL", h)
	}
	le.PutUint64(r[0:], 0x10100)
	if h := send(msg(vfiouser.Header{ID: 5, Command: vfiouser.CmdDMARead}, r), eventfd(t)); h.Error != uint32(unix.EINVAL) {
		t.Errorf("DMA_READ with an fd: %v, want EINVAL", h)
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "u64 count") || !strings.Contains(err.Error(), "fds") {
		t.Errorf("violations %v, want the layout and the fd reported", err)
	}
}

func TestClientClosedServer(t *testing.T) {
	s, c := newScripted(t, func(h vfiouser.Header, p []byte) []out { return nil })
	var wg sync.WaitGroup
	defer wg.Wait() // before the cleanup closes s.fd
	wg.Go(func() {
		time.Sleep(50 * time.Millisecond)
		unix.Shutdown(s.fd, unix.SHUT_RDWR)
	})
	if _, err := c.DeviceInfo(); !errors.Is(err, ErrClosed) {
		t.Errorf("got %v, want ErrClosed", err)
	}
	<-c.Done()
	if _, err := c.DeviceInfo(); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v, want ErrClosed", err)
	}
}

func TestDialFullBacklogHonoursContext(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/s"
	if len(path) > 100 {
		t.Skip("temp path too long for sun_path")
	}
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog: nobody accepts.
	var held []*Client
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		c, err := Dial(ctx, path)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want the context's deadline", err)
			}
			return
		}
		held = append(held, c)
	}
	t.Error("four connects to a listener with backlog 0 all succeeded")
}

// regionInfoReply is a REGION_INFO reply payload (argsz 32, no caps) with
// the given flags and size.
func regionInfoReply(flags uint32, size uint64) []byte {
	r := make([]byte, 32)
	binary.LittleEndian.PutUint32(r[0:], 32)
	binary.LittleEndian.PutUint32(r[4:], flags)
	binary.LittleEndian.PutUint64(r[16:], size)
	return r
}
