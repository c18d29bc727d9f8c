package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/testdev/abi"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/myriemu/myriemu/vfiouser/vfiousertest"
	"golang.org/x/sys/unix"
)

// soakEnv, when set (to a duration, or to anything for 2 minutes), runs
// the hostile-neighbour soak for that long and the hostile-client cases
// at the exact sizes of issue 8. `make soak` (part of `make test`) sets
// it; without it the soak runs one cycle of the hostile client and the
// cases run smaller, crossing every limit all the same.
const soakEnv = "MYRIEMU_SOAK"

// soakDuration is how long the soak runs, and whether it was asked for.
func soakDuration(t *testing.T) (time.Duration, bool) {
	v := os.Getenv(soakEnv)
	if v == "" {
		return 0, false
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d, true
	}
	return 2 * time.Minute, true
}

// TestSoakHostileNeighbour: one client cycles through every limit on one
// testdev while a guest-less driver on the other testdev of the same
// process copies data by DMA and writes its window, and must see no error.
func TestSoakHostileNeighbour(t *testing.T) {
	leaktest.Check(t)
	d, soak := soakDuration(t)
	var extra []string
	if !soak {
		// One quick cycle: the fd-less step fills max_dma_maps.
		extra = []string{"--max-dma-maps", "8192"}
	}
	r := startHostileRig(t, extra...)
	base := warmUp(t, r)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops, cycles int
	var driverErr error
	drv := newNeighbour(t, r.other)
	wg.Go(func() { ops, driverErr = drv.run(stop) })
	tallies := errnos{}
	deadline := time.Now().Add(d)
	var hostileErr error
	for cycles == 0 || time.Now().Before(deadline) {
		if hostileErr = hostileCycle(r.victim, tallies); hostileErr != nil {
			break
		}
		cycles++
	}
	close(stop)
	wg.Wait()
	drv.close(t)
	if hostileErr != nil {
		t.Errorf("hostile client, cycle %d: %v", cycles+1, hostileErr)
	}
	if driverErr != nil {
		t.Errorf("neighbour driver after %d ops: %v", ops, driverErr)
	}
	t.Logf("%d hostile cycles (replies %v) while the neighbour ran %d DMA copies and 1 MiB window writes with no error",
		cycles, tallies, ops)
	if ops == 0 {
		t.Error("the neighbour moved no traffic")
	}
	r.otherServes(t, "after the soak")
	backToBaseline(t, base)
}

// neighbour is a guest-less driver of a testdev: RAM mapped by memfd,
// bus mastering on, DMA copies polled to completion.
type neighbour struct {
	c   *vfiousertest.Client
	ram *dmatest.RAM
}

const (
	nbIOVA = 0x80000000
	nbRAM  = 4 << 20
	nbCopy = 256 << 10
)

func newNeighbour(t *testing.T, path string) *neighbour {
	t.Helper()
	c := dialNegotiated(t, path)
	ram := dmatest.NewRAM(t, nbRAM)
	if err := c.MapRAM(ram, nbIOVA); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteConfig(0x04, []byte{1<<1 | 1<<2, 0}); err != nil { // MEMORY | MASTER
		t.Fatal(err)
	}
	return &neighbour{c: c, ram: ram}
}

func (n *neighbour) close(t *testing.T) {
	if err := n.c.Close(); err != nil {
		t.Errorf("neighbour saw protocol violations: %v", err)
	}
	n.ram.Close()
}

func (n *neighbour) reg(off uint64, v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return n.c.WriteRegion(abi.RegsBAR, off, b[:])
}

func (n *neighbour) readReg(off uint64) (uint32, error) {
	var b [4]byte
	err := n.c.ReadRegion(abi.RegsBAR, off, b[:])
	return binary.LittleEndian.Uint32(b[:]), err
}

// run copies random data from the lower to the upper half of RAM by DMA,
// checking every byte, with a 1 MiB window write every 8 ops, until stop.
func (n *neighbour) run(stop <-chan struct{}) (ops int, err error) {
	mem := n.ram.Bytes()
	win := make([]byte, abi.WindowSize)
	for {
		select {
		case <-stop:
			return ops, nil
		default:
		}
		src := uint64(rand.IntN(nbRAM/2-nbCopy)) &^ 7
		dst := nbRAM/2 + uint64(rand.IntN(nbRAM/2-nbCopy))&^7
		for i := range nbCopy / 8 {
			binary.LittleEndian.PutUint64(mem[src+uint64(i)*8:], rand.Uint64())
		}
		for _, w := range []struct {
			off uint64
			v   uint32
		}{
			{abi.RegDMASrcLo, uint32(nbIOVA + src)}, {abi.RegDMASrcHi, 0},
			{abi.RegDMADstLo, uint32(nbIOVA + dst)}, {abi.RegDMADstHi, 0},
			{abi.RegDMALen, nbCopy}, {abi.RegDMAOp, uint32(abi.OpCopy)}, {abi.RegDMADoorbell, 1},
		} {
			if err := n.reg(w.off, w.v); err != nil {
				return ops, fmt.Errorf("register %#x: %w", w.off, err)
			}
		}
		var st uint32
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			if st, err = n.readReg(abi.RegDMAStatus); err != nil {
				return ops, fmt.Errorf("DMA_STATUS: %w", err)
			}
			if st&abi.StatusBusy == 0 {
				break
			}
			if time.Now().After(deadline) {
				return ops, fmt.Errorf("copy %d still busy after 20 s", ops)
			}
		}
		if st&abi.StatusDone == 0 || st&abi.StatusError != 0 {
			return ops, fmt.Errorf("copy %d: DMA_STATUS %#x", ops, st)
		}
		if !bytes.Equal(mem[dst:dst+nbCopy], mem[src:src+nbCopy]) {
			return ops, fmt.Errorf("copy %d: destination differs from source", ops)
		}
		if ops%8 == 0 {
			win[ops%len(win)]++
			if err := n.c.WriteRegion(abi.WindowBAR, 0, win); err != nil {
				return ops, fmt.Errorf("1 MiB window write: %w", err)
			}
		}
		ops++
	}
}

// hostileCycle connects to path and runs into every limit once, counting
// the errno replies; an error is anything but the expected refusal.
func hostileCycle(path string, tally errnos) error {
	dial := func() (*vfiousertest.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := vfiousertest.Dial(ctx, path)
		if err != nil {
			return nil, err
		}
		c.Timeout = 20 * time.Second
		if err := c.Negotiate(); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	c, err := dial()
	if err != nil {
		return err
	}
	defer func() { c.Close() }()
	maxMaps := c.Caps().MaxDMAMaps
	iova := uint64(0)
	next := func() uint64 { iova += 1 << 20; return iova }
	expect := func(what string, err error, errno unix.Errno) error {
		if err == nil {
			return fmt.Errorf("%s: accepted, want %v", what, errno)
		}
		if e := tally.count(err, errno); e != nil {
			return fmt.Errorf("%s: %w", what, e)
		}
		return nil
	}
	mkfd := func(size int64) (int, error) {
		fd, err := unix.MemfdCreate("hostile-ram", unix.MFD_CLOEXEC)
		if err == nil {
			err = unix.Ftruncate(fd, size)
		}
		return fd, err
	}

	// Bytes: a whole 40 TiB sparse file.
	fd, err := mkfd(40 << 40)
	if err != nil {
		return err
	}
	err = c.MapFD(next(), 40<<40, 0, fd, rw)
	unix.Close(fd)
	if err := expect("DMA_MAP of 40 TiB", err, unix.ENOMEM); err != nil {
		return err
	}
	// Files: a new memfd per map until refused.
	for i := 0; ; i++ {
		fd, err := mkfd(4096)
		if err != nil {
			return err
		}
		err = c.MapFD(next(), 4096, 0, fd, rw)
		unix.Close(fd)
		if err != nil {
			if err := expect("DMA_MAP of a new memfd", err, unix.ENOSPC); err != nil {
				return err
			}
			break
		}
		tally["ok"]++
		if i > 1<<16 {
			return errors.New("distinct memfds never refused")
		}
	}
	if err := c.UnmapAll(); err != nil {
		return err
	}
	// Mmaps: one memfd, a map per page until refused.
	fd, err = mkfd(8 << 20 << 4)
	if err != nil {
		return err
	}
	live := 0
	for i := 0; ; i++ {
		err := c.MapFD(next(), 4096, uint64(i)<<12, fd, rw)
		if err != nil {
			unix.Close(fd)
			if err := expect("DMA_MAP of one memfd", err, unix.ENOSPC); err != nil {
				return err
			}
			break
		}
		tally["ok"]++
		live++
		if i > 1<<16 {
			unix.Close(fd)
			return errors.New("maps of one memfd never refused")
		}
	}
	// Maps: fd-less maps past max_dma_maps, pipelined as a client may.
	room, over := maxMaps-live, pipelined
	fl := errnos{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	nextMap := 0
	for range pipelined {
		wg.Go(func() {
			for {
				mu.Lock()
				i := nextMap
				nextMap++
				mu.Unlock()
				if i >= room+over {
					return
				}
				err := c.MapFD(1<<44+uint64(i)<<12, 4096, 0, -1, rw)
				mu.Lock()
				if e := fl.count(err, unix.ENOSPC); e != nil && firstErr == nil {
					firstErr = e
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("fd-less DMA_MAP: %w", firstErr)
	}
	if fl["ok"] != room || fl["ENOSPC"] != over {
		return fmt.Errorf("fd-less DMA_MAPs: %v, want %d accepted (max_dma_maps %d) and %d ENOSPC", fl, room, maxMaps, over)
	}
	tally["ENOSPC"]++
	// Message data: a REGION_READ above max_data_xfer_size.
	p := make([]byte, 16)
	binary.LittleEndian.PutUint32(p[8:], abi.WindowBAR)
	binary.LittleEndian.PutUint32(p[12:], 2<<20)
	_, err = c.RawCall(vfiouser.Header{ID: c.NextID(), Command: vfiouser.CmdRegionRead, Size: vfiouser.HeaderSize + 16}, p, nil)
	if err := expect("REGION_READ of 2 MiB", err, unix.E2BIG); err != nil {
		return err
	}
	// Fds: 17 eventfds in one SET_IRQS (16 is the most).
	var evs []int
	for range 17 {
		e, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return err
		}
		evs = append(evs, e)
	}
	p = make([]byte, 20)
	binary.LittleEndian.PutUint32(p[0:], 20)
	binary.LittleEndian.PutUint32(p[4:], vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger)
	binary.LittleEndian.PutUint32(p[8:], 2)
	binary.LittleEndian.PutUint32(p[16:], 17)
	_, err = c.RawCall(vfiouser.Header{ID: c.NextID(), Command: vfiouser.CmdDeviceSetIRQs, Size: vfiouser.HeaderSize + 20}, p, evs)
	if err := expect("SET_IRQS with 17 fds", err, unix.EINVAL); err != nil {
		return err
	}
	// IRQ fds: more vectors than the device has.
	err = c.SetIRQs(2, vfiouser.IRQDataEventfd|vfiouser.IRQActionTrigger, 0, 16, evs[:16], nil)
	for _, e := range evs {
		unix.Close(e)
	}
	if err := expect("SET_IRQS past the MSI-X vectors", err, unix.EINVAL); err != nil {
		return err
	}
	// Seals: the window memfd refuses a client's seal.
	ri, err := c.RegionInfo(abi.WindowBAR)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(uintptr(ri.Fd), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE)
	ri.Close()
	if !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("F_ADD_SEALS on the window: %v, want EPERM", err)
	}
	tally["EPERM (seal)"]++
	// Message size: a header larger than any message drops the client
	// (the stream cannot be trusted past it), after an error reply.
	_, err = c.RawCall(vfiouser.Header{ID: c.NextID(), Command: vfiouser.CmdRegionWrite, Size: 1 << 30}, nil, nil)
	if err := expect("1 GiB message", err, unix.EINVAL); err != nil {
		return err
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		return errors.New("the server kept a client that sent a 1 GiB header")
	}
	c.Close()
	// The next client of the same device works, with everything freed.
	if c, err = dial(); err != nil {
		return fmt.Errorf("reconnect: %w", err)
	}
	fd, err = mkfd(4096)
	if err != nil {
		return err
	}
	err = c.MapFD(1<<20, 4096, 0, fd, rw)
	unix.Close(fd)
	return err
}
