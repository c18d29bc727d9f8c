package vfiouser_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/internal/leaktest"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

var le = binary.LittleEndian

func TestNegotiate(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "neg")
	caps := c.Caps()
	want := `{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}`
	if diff := cmp.Diff(want, caps.JSON); diff != "" {
		t.Errorf("capability JSON (-want +got):\n%s", diff)
	}
	if got := vfiouser.HeaderSize + 4 + len(caps.JSON) + 1; got > 214 {
		t.Errorf("VERSION reply is %d bytes, QEMU accepts at most 214", got)
	}
	if !hasLog(s.Log, logrus.InfoLevel, "version negotiated") || !hasLog(s.Log, logrus.InfoLevel, "client connected") {
		t.Errorf("missing Info lifecycle logs")
	}
	// A second VERSION is refused; the connection stays usable.
	if err := c.Negotiate(); !vfiousertest.IsErrno(err, unix.EINVAL) {
		t.Errorf("second VERSION: %v, want EINVAL error reply", err)
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestVersionReplyFitsRequest(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "vfit")
	tests := []struct {
		name    string
		json    string
		wantLen int // reply JSON length incl. NUL, 0: error reply
		errno   unix.Errno
	}{
		{"qemu", vfiousertest.QEMUVersionJSON, 123, 0},
		{"short request gets fewer optional keys", `{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"write_multiple":true,"x":[1,2,3,4,5,6,7,8,9]}}`, 87, 0},
		{"empty object", `{}`, 65, 0},
		{"not json", `{"capabilities":`, 0, unix.EINVAL},
		{"max_msg_fds too big", `{"capabilities":{"max_msg_fds":17}}`, 0, unix.EINVAL},
		{"max_data_xfer_size zero", `{"capabilities":{"max_data_xfer_size":0}}`, 0, unix.EINVAL},
		{"write_multiple not bool", `{"capabilities":{"write_multiple":1}}`, 0, unix.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s.Path)
			p := make([]byte, 4, 64)
			p = append(append(p, tt.json...), 0)
			h := vfiouser.Header{ID: 7, Command: vfiouser.CmdVersion, Size: uint32(16 + len(p))}
			r, err := c.RawCall(h, p, nil)
			if tt.errno != 0 {
				if !vfiousertest.IsErrno(err, tt.errno) {
					t.Fatalf("got %v, want error reply %v", err, tt.errno)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(r.Payload) - 4; got != tt.wantLen {
				t.Errorf("reply JSON+NUL %d bytes, want %d (%q)", got, tt.wantLen, r.Payload[4:])
			}
			if tt.name != "empty object" && len(r.Payload)+16 > int(h.Size) {
				t.Errorf("reply %d bytes > request %d", len(r.Payload)+16, h.Size)
			}
			var v map[string]any
			if r.Payload[len(r.Payload)-1] != 0 || json.Unmarshal(r.Payload[4:len(r.Payload)-1], &v) != nil {
				t.Errorf("reply text %q is not NUL-terminated JSON", r.Payload[4:])
			}
		})
	}
}

func TestCommandsBeforeVersion(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "prever")
	c := dial(t, s.Path)
	if _, err := c.DeviceInfo(); !vfiousertest.IsErrno(err, unix.EINVAL) {
		t.Errorf("DEVICE_GET_INFO before VERSION: %v, want EINVAL", err)
	}
	if err := c.Negotiate(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceInfo(t *testing.T) {
	leaktest.Check(t)
	_, c := startNegotiated(t, "info")
	di, err := c.DeviceInfo()
	if err != nil {
		t.Fatal(err)
	}
	want := vfiousertest.DeviceInfo{Flags: vfiouser.DeviceInfoPCI | vfiouser.DeviceInfoReset, NumRegions: 9, NumIRQs: 5}
	if diff := cmp.Diff(want, di); diff != "" {
		t.Errorf("DeviceInfo (-want +got):\n%s", diff)
	}
}

func TestRegionInfo(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "rinfo")

	// BAR2 has a sparse cap: QEMU's first try (argsz 32) gets the bare
	// struct with the argsz it needs and no fd.
	ri, need, err := c.RegionInfoArgsz(2, 32)
	if err != nil {
		t.Fatal(err)
	}
	if need != 32+16+16 || ri.Fd != -1 || len(ri.Sparse) != 0 {
		t.Errorf("argsz 32: need %d fd %d sparse %v, want 64, -1, none", need, ri.Fd, ri.Sparse)
	}

	tests := []struct {
		index uint32
		want  vfiousertest.RegionInfo
		fd    bool
	}{
		{0, vfiousertest.RegionInfo{Index: 0, Flags: 3, Size: 4096, Fd: -1}, false},
		{1, vfiousertest.RegionInfo{Index: 1, Fd: -1}, false},
		{2, vfiousertest.RegionInfo{Index: 2, Flags: 0xf, Size: 16384, Sparse: []vfiousertest.Area{{Offset: 4096, Size: 12288}}}, true},
		{4, vfiousertest.RegionInfo{Index: 4, Flags: 1, Size: 4096, Fd: -1}, false},
		{6, vfiousertest.RegionInfo{Index: 6, Fd: -1}, false},
		{7, vfiousertest.RegionInfo{Index: 7, Flags: 3, Size: 256, Fd: -1}, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.index), func(t *testing.T) {
			ri, err := c.RegionInfo(tt.index)
			if err != nil {
				t.Fatal(err)
			}
			defer ri.Close()
			if tt.fd {
				if ri.Fd < 0 {
					t.Fatal("no fd with MMAP")
				}
				if !sameFile(t, ri.Fd, s.Fake.BAR2Fd()) {
					t.Error("region fd is not the function's memfd")
				}
				tt.want.Fd = ri.Fd
			}
			if diff := cmp.Diff(tt.want, ri); diff != "" {
				t.Errorf("RegionInfo (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := c.RegionInfo(9); !vfiousertest.IsErrno(err, unix.EINVAL) {
		t.Errorf("region 9: %v, want EINVAL", err)
	}
}

func sameFile(t *testing.T, a, b int) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		t.Fatal("fstat failed")
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func TestIRQInfo(t *testing.T) {
	leaktest.Check(t)
	_, c := startNegotiated(t, "iinfo")
	tests := []struct {
		index uint32
		want  vfiousertest.IRQInfo
		errno unix.Errno
	}{
		{0, vfiousertest.IRQInfo{Flags: 1, Count: 1}, 0},
		{2, vfiousertest.IRQInfo{Flags: 9, Count: 4}, 0},
		{3, vfiousertest.IRQInfo{Flags: 1, Count: 0}, 0},
		{4, vfiousertest.IRQInfo{}, unix.EINVAL}, // function refuses REQ
		{5, vfiousertest.IRQInfo{}, unix.EINVAL}, // out of range
	}
	for _, tt := range tests {
		ii, err := c.IRQInfo(tt.index)
		if tt.errno != 0 {
			if !vfiousertest.IsErrno(err, tt.errno) {
				t.Errorf("index %d: %v, want %v", tt.index, err, tt.errno)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, ii); diff != "" {
			t.Errorf("index %d (-want +got):\n%s", tt.index, diff)
		}
	}
}

func TestRegionReadWrite(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "rw")

	// QEMU's first read: the whole config region in one message.
	cfg, err := c.ReadConfig(0, 256)
	if err != nil {
		t.Fatal(err)
	}
	if got := le.Uint32(cfg); got != 0x7e571234 {
		t.Errorf("config id %#x, want 0x7e571234", got)
	}
	if err := c.WriteConfig32(0x3c, 0x0b); err != nil {
		t.Fatal(err)
	}
	if v, err := c.ReadConfig32(0x3c); err != nil || v != 0x0b {
		t.Errorf("config 0x3c = %#x, %v; want 0xb", v, err)
	}
	// Posted BAR write, then a read that must see it (in-order handling).
	if err := c.WriteRegionPosted(0, 0x10, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if err := c.ReadRegion(0, 0x10, got); err != nil || !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Errorf("read after posted write: %x, %v", got, err)
	}
	// The mmappable BAR is also served by messages (notes 4.5).
	if err := c.WriteRegion(2, 0, []byte{9, 9}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 16384)
	if err := c.ReadRegion(2, 0, big); err != nil || big[0] != 9 || big[1] != 9 {
		t.Errorf("BAR2 read: %x, %v", big[:2], err)
	}

	errs := []struct {
		name   string
		index  uint32
		off    uint64
		n      int
		write  bool
		errno  unix.Errno
		logMsg string
	}{
		{"past end", 0, 4093, 4, false, unix.EINVAL, "client protocol error"},
		{"offset past end", 7, 1 << 40, 1, false, unix.EINVAL, ""},
		{"offset wraps", 7, ^uint64(0), 2, true, unix.EINVAL, ""},
		{"absent region", 1, 0, 4, false, unix.EINVAL, ""},
		{"no such region", 12, 0, 4, false, unix.EINVAL, ""},
		{"read-only region", 4, 0, 4, true, unix.EINVAL, ""},
		{"function error", 0, vfiouser.FakeEIOOffset, 4, true, unix.EIO, ""},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.write {
				err = c.WriteRegion(tt.index, tt.off, make([]byte, tt.n))
			} else {
				err = c.ReadRegion(tt.index, tt.off, make([]byte, tt.n))
			}
			if !vfiousertest.IsErrno(err, tt.errno) {
				t.Errorf("got %v, want error reply %v", err, tt.errno)
			}
			if tt.logMsg != "" && !hasLog(s.Log, logrus.WarnLevel, tt.logMsg) {
				t.Errorf("no Warn %q", tt.logMsg)
			}
		})
	}
	// Above max_data_xfer_size: E2BIG. Region 2 is 16 KiB; use a server
	// with a 4 KiB limit.
	fake2 := newFake(t)
	s2 := startServerWith(t, "rw4k", fake2, 4096)
	c2 := negotiated(t, s2.Path)
	if err := c2.ReadRegion(2, 0, make([]byte, 8192)); !vfiousertest.IsErrno(err, unix.E2BIG) {
		t.Errorf("8 KiB read with 4 KiB max: %v, want E2BIG", err)
	}
}

func TestWriteMulti(t *testing.T) {
	leaktest.Check(t)
	_, c := startNegotiated(t, "multi")
	var ws []vfiousertest.Write
	for i := range 250 { // two messages: 200 + 50
		ws = append(ws, vfiousertest.Write{Region: 0, Offset: uint64(8 * i), Data: []byte{byte(i), byte(i >> 8), 0xaa}})
	}
	if err := c.WriteMulti(ws); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8*250)
	if err := c.ReadRegion(0, 0, got); err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		if want := []byte{byte(i), byte(i >> 8), 0xaa}; !bytes.Equal(got[8*i:8*i+3], want) {
			t.Fatalf("entry %d: %x, want %x", i, got[8*i:8*i+3], want)
		}
	}
	// A bad entry (read-only region) rejects the whole message before any
	// write; NO_REPLY means no error reply either, only a Warn.
	bad := []vfiousertest.Write{{Region: 0, Offset: 0, Data: []byte{0x55}}, {Region: 4, Offset: 0, Data: []byte{1}}}
	if err := c.WriteMulti(bad); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadRegion(0, 0, got[:1]); err != nil || got[0] != 0 {
		t.Errorf("byte 0 = %#x after a rejected WRITE_MULTI, want 0 (unchanged)", got[0])
	}
}

func TestSetIRQs(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "irqs")
	evs, err := c.EnableMSIX(t, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Fake.Trigger(2, 3); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := evs[3].Wait(ctx); err != nil {
		t.Fatalf("vector 3 eventfd: %v", err)
	}
	// QEMU's "enable MSI-X, no vectors": count 1, no fd.
	if err := c.SetIRQs(2, vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger, 0, 1, nil, nil); err != nil {
		t.Errorf("count 1 with 0 fds: %v", err)
	}
	if fd := s.Fake.IRQFd(2, 0); fd != -1 {
		t.Errorf("vector 0 still has fd %d after de-assign", fd)
	}
	// DATA_BOOL carries count bytes.
	if err := c.SetIRQs(0, vfiouser.IRQDataBool|vfiouser.IRQActionTrigger, 0, 1, nil, []byte{1}); err != nil {
		t.Errorf("DATA_BOOL: %v", err)
	}
	ev := evs[0].Fd()
	defer unix.Close(ev)
	bad := []struct {
		name                       string
		index, flags, start, count uint32
		fds                        []int
		data                       []byte
	}{
		{"fds without DATA_EVENTFD", 2, vfiouser.IRQDataNone | vfiouser.IRQActionTrigger, 0, 1, []int{ev}, nil},
		{"more fds than count", 2, vfiouser.IRQDataEventfd | vfiouser.IRQActionTrigger, 0, 1, []int{ev, ev}, nil},
		{"two data bits", 2, vfiouser.IRQDataEventfd | vfiouser.IRQDataNone | vfiouser.IRQActionTrigger, 0, 1, nil, nil},
		{"no action", 2, vfiouser.IRQDataEventfd, 0, 1, nil, nil},
		{"unknown flag", 2, vfiouser.IRQDataEventfd | vfiouser.IRQActionTrigger | 0x40, 0, 1, nil, nil},
		{"index out of range", 5, vfiouser.IRQDataNone | vfiouser.IRQActionTrigger, 0, 0, nil, nil},
		{"start+count wraps", 2, vfiouser.IRQDataNone | vfiouser.IRQActionTrigger, 0xffffffff, 2, nil, nil},
		{"bool without data", 0, vfiouser.IRQDataBool | vfiouser.IRQActionTrigger, 0, 1, nil, nil},
		{"function refuses", 2, vfiouser.IRQDataEventfd | vfiouser.IRQActionTrigger, 3, 2, []int{ev}, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.SetIRQs(tt.index, tt.flags, tt.start, tt.count, tt.fds, tt.data); !vfiousertest.IsErrno(err, unix.EINVAL) {
				t.Errorf("got %v, want EINVAL", err)
			}
		})
	}
	if err := c.DisableIRQs(2); err != nil {
		t.Fatal(err)
	}
	if fd := s.Fake.IRQFd(2, 3); fd != -1 {
		t.Errorf("vector 3 still has fd %d after disable", fd)
	}
}

func TestDMAMapShared(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "dmamap")
	ram := newMappedRAM(t, c.MapRAM, 1<<20, 0x100000)
	mem := s.Fake.Mem()
	if _, err := mem.WriteAt([]byte("hello"), 0x100010); err != nil {
		t.Fatal(err)
	}
	if got := string(ram.Bytes()[0x10:0x15]); got != "hello" {
		t.Errorf("guest RAM %q, want hello", got)
	}
	reads, writes := c.DMAStats()
	if reads+writes != 0 {
		t.Errorf("shared RAM used %d message DMAs, want 0", reads+writes)
	}

	fd := ram.Fd()
	defer unix.Close(fd)
	bad := []struct {
		name              string
		iova, size, off   uint64
		fd                int
		errno             unix.Errno
		flags             uint32
		wantRegionsCount0 bool
	}{
		{"overlap", 0x180000, 0x100000, 0, -1, unix.EEXIST, 3, false},
		{"size 0", 0x400000, 0, 0, -1, unix.EINVAL, 3, false},
		{"wraps", ^uint64(0) - 0xfff, 0x2000, 0, -1, unix.EINVAL, 3, false},
		{"past the file's end", 0x800000, 0x2000, 1 << 20, fd, unix.EINVAL, 3, false},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			err := c.MapFD(tt.iova, tt.size, tt.off, tt.fd, tt.flags)
			if !vfiousertest.IsErrno(err, tt.errno) {
				t.Errorf("got %v, want %v", err, tt.errno)
			}
		})
	}
	// Unknown flag bits are accepted (notes 0).
	if err := c.MapFD(0x10000000, 0x1000, 0, -1, 0x3|0x80); err != nil {
		t.Errorf("unknown DMA_MAP flag bits: %v", err)
	}
	if got := len(mem.Regions()); got != 2 {
		t.Errorf("%d regions, want 2", got)
	}
	if err := c.Unmap(0x900000, 0x1000); !vfiousertest.IsErrno(err, unix.ENOENT) {
		t.Errorf("unmap of nothing: %v, want ENOENT (from dma.Map)", err)
	}
	if err := c.Unmap(0x100000, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.ReadAt(make([]byte, 4), 0x100010); !errors.Is(err, dma.ErrUnmapped) {
		t.Errorf("read after unmap: %v, want ErrUnmapped", err)
	}
	if err := c.UnmapAll(); err != nil {
		t.Fatal(err)
	}
	if got := len(mem.Regions()); got != 0 {
		t.Errorf("%d regions after UNMAP ALL", got)
	}
}

func TestMessageDMA(t *testing.T) {
	leaktest.Check(t)
	fake := newFake(t)
	s := startServerWith(t, "msgdma", fake, 0)
	c := dial(t, s.Path)
	// The client accepts at most 4 KiB per DMA message: the server must split.
	if err := c.NegotiateJSON(`{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":4096,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}`); err != nil {
		t.Fatal(err)
	}
	ram := newMappedRAM(t, c.MapRAMNoFD, 64<<10, 0x40000)
	mem := fake.Mem()
	// A device worker (not the reader) may use message DMA.
	src := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
	if _, err := mem.WriteAt(src, 0x40100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ram.Bytes()[0x100:0x100+len(src)], src) {
		t.Error("DMA_WRITE data did not reach guest RAM")
	}
	back := make([]byte, len(src))
	if _, err := mem.ReadAt(back, 0x40100); err != nil || !bytes.Equal(back, src) {
		t.Errorf("DMA_READ: %v, data equal %v", err, bytes.Equal(back, src))
	}
	reads, writes := c.DMAStats()
	if reads != 4 || writes != 4 {
		t.Errorf("%d reads %d writes, want 4 and 4 (16 KiB split at 4 KiB)", reads, writes)
	}
	// Outside RAM the client answers EFAULT; the device sees an error.
	if _, err := c.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
	if err := c.MapFD(0x900000, 0x1000, 0, -1, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.ReadAt(make([]byte, 8), 0x900000); !errors.Is(err, unix.EFAULT) {
		t.Errorf("DMA outside client RAM: %v, want EFAULT", err)
	}

	// From the reader (inside a handler) message DMA must refuse at once.
	inHandlerC := make(chan error, 1)
	fake.SetOnWrite(func(index uint32, off uint64, p []byte) error {
		if index == 0 && off == 0x100 {
			_, err := mem.ReadAt(make([]byte, 4), 0x40000)
			inHandlerC <- err
			return err
		}
		return nil
	})
	start := time.Now()
	err := c.WriteRegion(0, 0x100, []byte{1, 2, 3, 4})
	if inHandler := <-inHandlerC; !errors.Is(inHandler, dma.ErrInHandler) {
		t.Errorf("message DMA on the reader: %v, want dma.ErrInHandler", inHandler)
	}
	if err == nil || time.Since(start) > time.Second {
		t.Errorf("write whose handler failed DMA: %v after %v, want a quick error reply", err, time.Since(start))
	}
	fake.SetOnWrite(nil)
}

// TestMessageDMAConcurrent: several device workers use message DMA at
// once while the client keeps sending commands; every reply reaches its
// own waiter.
func TestMessageDMAConcurrent(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "dmaconc")
	newMappedRAM(t, c.MapRAMNoFD, 64<<10, 0)
	mem := s.Fake.Mem()
	const workers, rounds = 4, 50
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	defer wg.Wait() // also after a t.Fatal below
	for w := range workers {
		wg.Go(func() {
			base := uint64(w) * 16 << 10
			buf := make([]byte, 1000)
			back := make([]byte, len(buf))
			for r := range rounds {
				for i := range buf {
					buf[i] = byte(w*rounds + r + i)
				}
				if _, err := mem.WriteAt(buf, base+uint64(r)*8); err != nil {
					errs <- err
					return
				}
				if _, err := mem.ReadAt(back, base+uint64(r)*8); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, back) {
					errs <- fmt.Errorf("worker %d round %d: data differs", w, r)
					return
				}
			}
			errs <- nil
		})
	}
	for range 100 {
		if _, err := c.ReadConfig(0, 4); err != nil {
			t.Fatal(err)
		}
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if r, w := c.DMAStats(); r != workers*rounds || w != workers*rounds {
		t.Errorf("%d reads %d writes, want %d each", r, w, workers*rounds)
	}
}

// TestPeerMaxMsgFDsZero: a client that takes no fds gets region info
// without MMAP and without an fd.
func TestPeerMaxMsgFDsZero(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "nofds")
	c := dial(t, s.Path)
	if err := c.NegotiateJSON(`{"capabilities":{"max_msg_fds":0,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}`); err != nil {
		t.Fatal(err)
	}
	ri, err := c.RegionInfo(2)
	if err != nil {
		t.Fatal(err)
	}
	defer ri.Close()
	if ri.Fd != -1 || ri.Flags&vfiousertest.RegionFlagMmap != 0 || len(ri.Sparse) != 0 {
		t.Errorf("region info %+v, want no MMAP, no fd, no caps", ri)
	}
}

// TestMessageDMATimeout: a client that never answers a DMA request makes
// the device's access fail with ETIMEDOUT in bounded time (so a reset that
// waits for the device worker cannot outlive QEMU's 5 s); the late reply
// is then dropped as a stray, with no reply sent.
func TestMessageDMATimeout(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "dmato")
	vfiouser.SetDMATimeout(s.Server, 100*time.Millisecond)
	r := messageDMARaw(t, s.Path)
	done := make(chan error, 1)
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait() // the DMA times out; joined also after a t.Fatal
	wg.Go(func() { _, err := s.Fake.Mem().ReadAt(make([]byte, 4), 0); done <- err })
	req := r.recv(t) // the DMA_READ, never answered in time
	if req.Command != vfiouser.CmdDMARead {
		t.Fatalf("got %v, want a DMA_READ request", req)
	}
	if err := <-done; !errors.Is(err, unix.ETIMEDOUT) || time.Since(start) > 5*time.Second {
		t.Fatalf("unanswered DMA: %v after %v, want ETIMEDOUT", err, time.Since(start))
	}
	// The late reply is dropped; the connection keeps working.
	late := make([]byte, 36)
	vfiouser.Header{ID: req.ID, Command: vfiouser.CmdDMARead, Size: 36, Flags: vfiouser.FlagTypeReply}.Put(late)
	le.PutUint64(late[24:], 4)
	r.send(t, late)
	r.send(t, readMsg(2))
	if h := r.recv(t); h.ID != 2 || h.IsError() {
		t.Errorf("after the late reply: %v, want the reply to request 2", h)
	}
}

func TestMessageDMAFailsOnDisconnect(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "dmadisc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A raw client that maps fd-less RAM and never answers DMA requests.
	c, err := vfiousertest.Dial(ctx, s.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Negotiate(); err != nil {
		t.Fatal(err)
	}
	if err := c.MapFD(0, 0x1000, 0, -1, 3); err != nil {
		t.Fatal(err)
	}
	mem := s.Fake.Mem()
	done := make(chan error, 1)
	go func() {
		_, err := mem.ReadAt(make([]byte, 8), 0x800) // client answers EFAULT (no RAM)
		done <- err
	}()
	if err := <-done; !errors.Is(err, unix.EFAULT) {
		t.Fatalf("got %v, want EFAULT from the client", err)
	}
	c.Close()
	waitFor(t, "detach", func() bool { _, d, _ := s.Fake.Counts(); return d == 1 })
	if _, err := mem.ReadAt(make([]byte, 8), 0x800); !errors.Is(err, dma.ErrClosed) {
		t.Errorf("DMA after disconnect: %v, want dma.ErrClosed", err)
	}
}

func TestReset(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "reset")
	newMappedRAM(t, c.MapRAM, 4096, 0)
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, _, r := s.Fake.Counts(); r != 1 {
		t.Errorf("%d resets, want 1", r)
	}
	if n := len(s.Fake.Mem().Regions()); n != 1 {
		t.Errorf("%d DMA regions after reset, want 1 (maps survive)", n)
	}
}

// TestNoReplyIsNeverAnswered: NO_REPLY on any command, good or bad, gets
// no reply (notes 1.1); the client proves it with a following Sync.
func TestNoReplyIsNeverAnswered(t *testing.T) {
	leaktest.Check(t)
	_, c := startNegotiated(t, "noreply")
	read := make([]byte, 16)
	le.PutUint64(read[0:], 0)
	le.PutUint32(read[8:], 7)
	le.PutUint32(read[12:], 4)
	cases := []struct {
		name    string
		cmd     vfiouser.Command
		payload []byte
	}{
		{"read", vfiouser.CmdRegionRead, read},
		{"unknown command", 99, nil},
		{"reset", vfiouser.CmdDeviceReset, nil},
		{"bad write", vfiouser.CmdRegionWrite, []byte{1, 2, 3}},
		{"function error", vfiouser.CmdRegionWrite, append(regionAccessBytes(0, vfiouser.FakeEIOOffset, 4), 0, 0, 0, 0)},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			h := vfiouser.Header{ID: c.NextID(), Command: tt.cmd, Size: uint32(16 + len(tt.payload)), Flags: vfiouser.FlagNoReply}
			if err := c.RawPost(h, tt.payload, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func regionAccessBytes(index uint32, off uint64, count uint32) []byte {
	b := make([]byte, 16)
	le.PutUint64(b[0:], off)
	le.PutUint32(b[8:], index)
	le.PutUint32(b[12:], count)
	return b
}

func TestPanicDropsOnlyThatClient(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "panic")
	s.Fake.InjectPanics()
	other := startServer(t, "other")
	oc := negotiated(t, other.Path)

	c := negotiated(t, s.Path)
	err := c.WriteRegion(0, vfiouser.FakePanicOffset, []byte{1, 2, 3, 4})
	if !errors.Is(err, vfiousertest.ErrClosed) {
		t.Errorf("write that panics: %v, want the connection closed", err)
	}
	<-c.Done()
	if !hasLog(s.Log, logrus.ErrorLevel, "panic while serving a client; dropping it") {
		t.Error("panic not logged at Error")
	}
	waitFor(t, "detach after panic", func() bool { _, d, _ := s.Fake.Counts(); return d == 1 })
	if st := s.Stats(); st.Panics != 1 || st.Clients != 1 {
		t.Errorf("stats %+v, want 1 panic, 1 client", st)
	}
	// The same server takes the next client; the other server never noticed.
	c2 := negotiated(t, s.Path)
	if _, err := c2.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.DeviceInfo(); err != nil {
		t.Fatal(err)
	}
}

func TestDisconnectDetachesAndClosesMap(t *testing.T) {
	leaktest.Check(t)
	s := startServer(t, "detach")
	for i := 1; i <= 3; i++ {
		c := negotiated(t, s.Path)
		newMappedRAM(t, c.MapRAM, 1<<16, 0)
		mem := s.Fake.Mem()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "detach", func() bool { a, d, _ := s.Fake.Counts(); return a == i && d == i })
		if _, err := mem.ReadAt(make([]byte, 4), 0); !errors.Is(err, dma.ErrClosed) {
			t.Errorf("map after disconnect: %v, want ErrClosed", err)
		}
	}
}

func TestAttachError(t *testing.T) {
	leaktest.Check(t)
	fake := newFake(t)
	fake.AttachErr = errors.New("no")
	s := startServerWith(t, "atterr", fake, 0)
	c := dial(t, s.Path)
	<-c.Done()
	if a, d, _ := fake.Counts(); a != 0 || d != 0 {
		t.Errorf("attaches %d detaches %d, want 0 and 0 (no Detach without Attach)", a, d)
	}
}

func TestErrno(t *testing.T) {
	tests := []struct {
		err  error
		want unix.Errno
	}{
		{nil, unix.EINVAL},
		{errors.New("x"), unix.EINVAL},
		{unix.EEXIST, unix.EEXIST},
		{fmt.Errorf("wrapped: %w", unix.EFAULT), unix.EFAULT},
		{&dma.Error{Op: dma.Read, Err: dma.ErrUnmapped}, unix.EINVAL},
	}
	for _, tt := range tests {
		if got := vfiouser.Errno(tt.err); got != tt.want {
			t.Errorf("Errno(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestPipelinedInOrder: QEMU pipelines (async DMA_MAP bursts, posted
// writes). Commands are handled and answered strictly in arrival order.
func TestPipelinedInOrder(t *testing.T) {
	leaktest.Check(t)
	s, c := startNegotiated(t, "pipe")
	for i := range 2000 {
		var v [4]byte
		le.PutUint32(v[:], uint32(i))
		if err := c.PostWriteRegion(0, uint64(i%256)*4, v[:]); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 1024)
	if err := c.ReadRegion(0, 0, got); err != nil {
		t.Fatal(err)
	}
	for j := range 256 {
		want := uint32(1792 + j) // the last i < 2000 with i%256 == j
		if j >= 2000%256 {
			want -= 256
		}
		if v := le.Uint32(got[4*j:]); v != want {
			t.Fatalf("word %d = %d, want %d (the last write to it)", j, v, want)
		}
	}

	// A burst of DMA_MAPs sent without waiting, as QEMU's memory listener
	// does: the replies come back in the same order.
	c.Close()
	r := dialRaw(t, s.Path)
	burst := versionMsg(1000)
	for i := range 100 {
		burst = append(burst, dmaMapMsg(uint16(i), uint64(i)<<20, 1<<20)...)
	}
	r.send(t, burst)
	if h := r.recv(t); h.ID != 1000 || h.IsError() {
		t.Fatalf("first reply %v, want VERSION's", h)
	}
	for i := range 100 {
		if h := r.recv(t); h.ID != uint16(i) || h.Command != vfiouser.CmdDMAMap || h.IsError() || h.Size != 16 {
			t.Fatalf("reply %d: %v", i, h)
		}
	}
}
