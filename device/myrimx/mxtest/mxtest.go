// Package mxtest is a fake guest driver for the myrimx device, usable from
// tests without QEMU: it opens endpoints, registers buffers, sends,
// receives and invalidates as the guest module of zero-copy-design.md §6.8
// will, and misbehaves on purpose when asked (stale generations, DMA after
// DEREG, registration of unmapped or read-only memory, event queue
// overflow, garbage in the command ring, a page list changed after REG).
//
// A NIC is a myrimx.Device in a pci.Function attached to memfd guest RAM
// through a real dma.Map, so every access goes through the same doors as
// under QEMU. The driver polls its event queues (with bounded waits); the
// MSI-X vectors are counted by the function and checked separately.
package mxtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge/myritest"
	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/pci"
	"github.com/sirupsen/logrus"
)

// ErrTimeout: an event the driver waits for did not come in time.
var ErrTimeout = errors.New("mxtest: timed out waiting for the device")

// WaitTimeout bounds every wait of the driver: generous, CI is loaded.
const WaitTimeout = 20 * time.Second

var le = binary.LittleEndian

// NIC is one myrimx function with its guest RAM, as a guest driver sees it.
type NIC struct {
	tb   testing.TB
	Dev  *myrimx.Device
	Func *pci.Function
	Map  *dma.Map
	RAM  *dmatest.RAM
	Mem  *myritest.Memory // allocator over RAM, at IOVA Base
	Base uint64
}

// Options for NewNIC.
type Options struct {
	Name      string
	Endpoints int
	Audit     dma.AuditMode
	RAMSize   int    // bytes of guest RAM; default 64 MiB
	Base      uint64 // IOVA of the RAM; default 1 GiB
	Log       *logrus.Entry
}

// NewNIC creates a NIC on hub, attaches it to fresh guest RAM and turns
// bus mastering on. tb.Cleanup detaches and closes it.
func NewNIC(tb testing.TB, hub *myrimx.Hub, o Options) *NIC {
	tb.Helper()
	if o.RAMSize == 0 {
		o.RAMSize = 64 << 20
	}
	if o.Base == 0 {
		o.Base = 1 << 30
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.ErrorLevel)
		o.Log = logrus.NewEntry(l)
	}
	dev, err := myrimx.New(myrimx.Config{Name: o.Name, Hub: hub, Endpoints: o.Endpoints, Audit: o.Audit, Log: o.Log})
	if err != nil {
		tb.Fatalf("mxtest: %v", err)
	}
	f, err := pci.NewFunction(dev, o.Log)
	if err != nil {
		tb.Fatalf("mxtest: %v", err)
	}
	ram := dmatest.NewRAM(tb, o.RAMSize)
	m := dma.NewMap(o.Log)
	if err := m.Add(dma.Mapping{IOVA: o.Base, Size: uint64(o.RAMSize), Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		tb.Fatalf("mxtest: map RAM: %v", err)
	}
	if err := f.Attach(m); err != nil {
		tb.Fatalf("mxtest: attach: %v", err)
	}
	n := &NIC{tb: tb, Dev: dev, Func: f, Map: m, RAM: ram, Mem: myritest.NewMemory(ram.Bytes(), o.Base), Base: o.Base}
	tb.Cleanup(n.Close)
	n.SetBusMaster(true)
	return n
}

// Close detaches the function, closes the map and removes the NIC from
// its hub. Idempotent.
func (n *NIC) Close() {
	n.Func.Detach()
	n.Map.Close()
	n.Dev.Close()
}

// SetBusMaster sets COMMAND.MASTER (and memory space) in config space.
func (n *NIC) SetBusMaster(on bool) {
	v := uint16(0x2) // memory space
	if on {
		v |= 0x4
	}
	var b [2]byte
	le.PutUint16(b[:], v)
	if err := n.Func.WriteRegion(pci.RegionConfig, 4, b[:]); err != nil {
		n.tb.Fatalf("mxtest: config write: %v", err)
	}
}

// Write64 and Read64 are 8-byte BAR0 accesses; Write32 a 4-byte store.
func (n *NIC) Write64(off uint64, v uint64) {
	var b [8]byte
	le.PutUint64(b[:], v)
	if err := n.Func.WriteRegion(pci.RegionBAR0, off, b[:]); err != nil {
		n.tb.Fatalf("mxtest: BAR0 write %#x: %v", off, err)
	}
}

func (n *NIC) Write32(off uint64, v uint32) {
	var b [4]byte
	le.PutUint32(b[:], v)
	if err := n.Func.WriteRegion(pci.RegionBAR0, off, b[:]); err != nil {
		n.tb.Fatalf("mxtest: BAR0 write %#x: %v", off, err)
	}
}

func (n *NIC) Read64(off uint64) uint64 {
	var b [8]byte
	if err := n.Func.ReadRegion(pci.RegionBAR0, off, b[:]); err != nil {
		n.tb.Fatalf("mxtest: BAR0 read %#x: %v", off, err)
	}
	return le.Uint64(b[:])
}

// Bytes is the guest's view of [gpa, gpa+size).
func (n *NIC) Bytes(gpa uint64, size int) []byte {
	off := gpa - n.Base
	return n.RAM.Bytes()[off : off+uint64(size)]
}

// Alloc allocates zeroed guest memory, failing the test if it cannot.
func (n *NIC) Alloc(size, align int) uint64 {
	a, err := n.Mem.Alloc(size, align)
	if err != nil {
		n.tb.Fatalf("mxtest: %v", err)
	}
	return a
}

// Buffer is a user buffer as the driver pins it: its pages (guest
// physical, not necessarily contiguous) and a user VA.
type Buffer struct {
	Pages    []uint64
	FirstOff uint64
	Length   uint64
	UserVA   uint64
}

// AllocBuffer allocates a buffer of length bytes in 4 KiB pages. With
// scatter the pages are taken in shuffled order, as pinned user pages are.
func (n *NIC) AllocBuffer(length int, scatter bool) Buffer {
	np := (length + 4095) / 4096
	base := n.Alloc(np*4096, 4096)
	b := Buffer{Length: uint64(length), UserVA: 0x7f00_0000_0000 + base}
	for i := range np {
		b.Pages = append(b.Pages, base+uint64(i)*4096)
	}
	if scatter {
		rand.Shuffle(len(b.Pages), func(i, j int) { b.Pages[i], b.Pages[j] = b.Pages[j], b.Pages[i] })
	}
	return b
}

// Addr is the guest address of byte off of b.
func (b Buffer) Addr(off uint64) uint64 {
	x := b.FirstOff + off
	return b.Pages[x/4096] + x%4096
}

// Fill writes p into b at off through the guest's view (a user write).
func (n *NIC) Fill(b Buffer, off uint64, p []byte) {
	for len(p) > 0 {
		a := b.Addr(off)
		k := min(len(p), int(4096-a%4096))
		copy(n.Bytes(a, k), p[:k])
		p, off = p[k:], off+uint64(k)
	}
}

// Read returns size bytes of b from off.
func (n *NIC) Read(b Buffer, off uint64, size int) []byte {
	out := make([]byte, 0, size)
	for size > 0 {
		a := b.Addr(off)
		k := min(size, int(4096-a%4096))
		out = append(out, n.Bytes(a, k)...)
		size, off = size-k, off+uint64(k)
	}
	return out
}

// Event is a decoded event queue entry.
type Event struct {
	Type    myrimx.EventType
	Status  myrimx.Status
	Seq     uint32
	Cookie  uint64
	Match   uint64
	SrcNIC  uint64
	SrcEP   uint16
	MsgLen  uint32
	XferLen uint32
	Region  uint32
	Gen     uint32
	Reason  uint8
}

func (e Event) String() string {
	return fmt.Sprintf("{type %d status %d seq %d cookie %#x match %#x src %#x/%d msg %d xfer %d region %d gen %d reason %d}",
		e.Type, e.Status, e.Seq, e.Cookie, e.Match, e.SrcNIC, e.SrcEP, e.MsgLen, e.XferLen, e.Region, e.Gen, e.Reason)
}

// Endpoint is an open endpoint: its rings in guest memory and the
// driver's indexes.
type Endpoint struct {
	NIC   *NIC
	Index int
	reg   uint64 // BAR0 offset of its page

	CmdQ, EQ, Status uint64 // GPAs
	CmdOrder         uint
	EQOrder          uint

	// Spin makes waits yield instead of sleeping between polls
	// (benchmarks: a sleep costs more than a 64 KiB message).
	Spin bool

	mu      sync.Mutex
	tail    uint32 // producer index of the command ring
	eqHead  uint32 // consumer index of the event queue
	seq     uint32
	pending []Event // polled, not yet claimed by a Wait
}

// Open allocates rings of 2^cmdOrder commands and 2^eqOrder events and
// opens endpoint idx.
func (n *NIC) Open(idx int, cmdOrder, eqOrder uint) *Endpoint {
	e := &Endpoint{NIC: n, Index: idx, reg: myrimx.PageSize * uint64(1+idx), CmdOrder: cmdOrder, EQOrder: eqOrder}
	e.CmdQ = n.Alloc(myrimx.CmdSize<<cmdOrder, 4096)
	e.EQ = n.Alloc(myrimx.EventSize<<eqOrder, 4096)
	e.Status = n.Alloc(myrimx.SBSize, 64)
	n.Write64(e.reg+myrimx.EPCmdqBase, e.CmdQ)
	n.Write32(e.reg+myrimx.EPCmdqOrder, uint32(cmdOrder))
	n.Write64(e.reg+myrimx.EPEqBase, e.EQ)
	n.Write32(e.reg+myrimx.EPEqOrder, uint32(eqOrder))
	n.Write64(e.reg+myrimx.EPStatusGPA, e.Status)
	n.Write32(e.reg+myrimx.EPCtrl, myrimx.EPCtrlOpen)
	if st := e.State(); st != myrimx.EPStateOpen {
		n.tb.Fatalf("mxtest: endpoint %d did not open: EP_STATUS %#x", idx, e.NIC.Read64(e.reg+myrimx.EPStatus))
	}
	return e
}

// Reg returns the BAR0 offset of the endpoint's register at off.
func (e *Endpoint) Reg(off uint64) uint64 { return e.reg + off }

// State returns EP_STATUS's state; Cause its cause.
func (e *Endpoint) State() uint8 { return uint8(e.NIC.Read64(e.reg + myrimx.EPStatus)) }
func (e *Endpoint) Cause() uint8 { return uint8(e.NIC.Read64(e.reg+myrimx.EPStatus) >> 8) }

// Addr is the endpoint's (nic id, endpoint) address.
func (e *Endpoint) Addr() (nic uint64, ep uint16) { return e.NIC.Dev.NICID(), uint16(e.Index) }

// Cmd is a command being built. Seq is assigned by Post.
type Cmd [myrimx.CmdSize]byte

func header(op myrimx.Opcode, cookie uint64) Cmd {
	var c Cmd
	c[myrimx.CmdOpcode] = byte(op)
	le.PutUint64(c[myrimx.CmdCookie:], cookie)
	return c
}

// regionCmd is a header naming region (id, gen), as REG, DEREG, SEND and
// RECV all do.
func regionCmd(op myrimx.Opcode, cookie uint64, id, gen uint32) Cmd {
	c := header(op, cookie)
	le.PutUint32(c[myrimx.CmdRegionID:], id)
	le.PutUint32(c[myrimx.CmdGeneration:], gen)
	return c
}

// windowCmd is a regionCmd naming the window [off, off+length) of the
// region, as SEND and RECV do.
func windowCmd(op myrimx.Opcode, cookie uint64, id, gen uint32, off uint64, length uint32) Cmd {
	c := regionCmd(op, cookie, id, gen)
	le.PutUint64(c[myrimx.CmdOffset:], off)
	le.PutUint32(c[myrimx.CmdLength:], length)
	return c
}

// RegCmd is REG of buffer b as (id, gen) with access, its page list at
// listGPA (written by Register).
func RegCmd(id, gen, access uint32, b Buffer, listGPA uint64) Cmd {
	c := regionCmd(myrimx.OpReg, uint64(id)<<32|uint64(gen), id, gen)
	le.PutUint32(c[myrimx.CmdRegAccess:], access)
	c[myrimx.CmdRegPageShift] = 12
	le.PutUint32(c[myrimx.CmdRegFirstOff:], uint32(b.FirstOff))
	le.PutUint32(c[myrimx.CmdRegNrPages:], uint32(len(b.Pages)))
	le.PutUint64(c[myrimx.CmdRegLength:], b.Length)
	le.PutUint64(c[myrimx.CmdRegUserVA:], b.UserVA)
	le.PutUint64(c[myrimx.CmdRegPageList:], listGPA)
	return c
}

// DeregCmd is DEREG(id, gen) for reason.
func DeregCmd(id, gen uint32, reason myrimx.Reason) Cmd {
	c := regionCmd(myrimx.OpDereg, uint64(id)<<32|uint64(gen), id, gen)
	c[myrimx.CmdReason] = byte(reason)
	return c
}

// SendCmd is SEND of [off, off+length) of (id, gen) to (nic, ep) with match.
func SendCmd(id, gen uint32, off uint64, length uint32, nic uint64, ep uint16, match, cookie uint64) Cmd {
	c := windowCmd(myrimx.OpSend, cookie, id, gen, off, length)
	le.PutUint16(c[myrimx.CmdSendDestEP:], ep)
	le.PutUint64(c[myrimx.CmdSendDestNIC:], nic)
	le.PutUint64(c[myrimx.CmdSendMatch:], match)
	return c
}

// RecvCmd is RECV into [off, off+length) of (id, gen) for match/mask.
func RecvCmd(id, gen uint32, off uint64, length uint32, match, mask, cookie uint64) Cmd {
	c := windowCmd(myrimx.OpRecv, cookie, id, gen, off, length)
	le.PutUint64(c[myrimx.CmdRecvMatch:], match)
	le.PutUint64(c[myrimx.CmdRecvMask:], mask)
	return c
}

// CancelCmd cancels the command with cmd_seq seq.
func CancelCmd(seq uint32) Cmd {
	c := header(myrimx.OpCancel, 0)
	le.PutUint32(c[myrimx.CmdCancelSeq:], seq)
	return c
}

// CancelCookieCmd cancels the command with cookie.
func CancelCookieCmd(cookie uint64) Cmd {
	c := header(myrimx.OpCancel, 0)
	c[myrimx.CmdFlags] = myrimx.CancelByCookie
	le.PutUint64(c[myrimx.CmdCancelCookie:], cookie)
	return c
}

// FenceCmd is FENCE(seq), with an event if event.
func FenceCmd(seq uint64, event bool) Cmd {
	c := header(myrimx.OpFence, seq)
	if event {
		c[myrimx.CmdFlags] = myrimx.FlagEvent
	}
	le.PutUint64(c[myrimx.CmdFenceSeq:], seq)
	return c
}

// NopCmd is NOP, with an event if event.
func NopCmd(event bool) Cmd {
	c := header(myrimx.OpNop, 0)
	if event {
		c[myrimx.CmdFlags] = myrimx.FlagEvent
	}
	return c
}

// Post writes cmds into the ring (assigning cmd_seq) and rings the
// doorbell once. It returns their sequence numbers. It fails the test if
// the ring has no room (the device has not consumed enough).
func (e *Endpoint) Post(cmds ...Cmd) []uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	size := uint32(1) << e.CmdOrder
	if err := e.waitRoom(uint32(len(cmds)), size); err != nil {
		e.NIC.tb.Fatalf("mxtest: endpoint %d: %v", e.Index, err)
	}
	seqs := make([]uint32, len(cmds))
	for i, c := range cmds {
		e.seq++
		le.PutUint32(c[myrimx.CmdSeq:], e.seq)
		seqs[i] = e.seq
		copy(e.NIC.Bytes(e.CmdQ+uint64(e.tail&(size-1))*myrimx.CmdSize, myrimx.CmdSize), c[:])
		e.tail++
	}
	e.NIC.Write32(e.reg+myrimx.EPCmdqTail, e.tail)
	return seqs
}

// PostRaw writes raw 64-byte entries into the ring without touching them
// and rings the doorbell with tail (garbage tests).
func (e *Endpoint) PostRaw(entries [][myrimx.CmdSize]byte, tail uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	size := uint32(1) << e.CmdOrder
	for _, c := range entries {
		copy(e.NIC.Bytes(e.CmdQ+uint64(e.tail&(size-1))*myrimx.CmdSize, myrimx.CmdSize), c[:])
		e.tail++
	}
	e.NIC.Write32(e.reg+myrimx.EPCmdqTail, tail)
}

func (e *Endpoint) waitRoom(k, size uint32) error {
	if k > size {
		return fmt.Errorf("%d commands do not fit a ring of %d", k, size)
	}
	var head uint32
	room := func() bool {
		head = uint32(e.NIC.Read64(e.reg + myrimx.EPCmdqHead))
		return e.tail-head+k <= size
	}
	if !poll(50*time.Microsecond, room) {
		return fmt.Errorf("command ring full: head %d tail %d: %w", head, e.tail, ErrTimeout)
	}
	return nil
}

// poll calls done, sleeping every between calls, until it reports true;
// it reports false if WaitTimeout passes first.
func poll(every time.Duration, done func() bool) bool {
	deadline := time.Now().Add(WaitTimeout)
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// Poll reads the events the device wrote since the last poll (by phase),
// hands the consumed index back through EQ_HEAD (re-arming the vector)
// and returns them.
func (e *Endpoint) Poll() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pollLocked()
}

func (e *Endpoint) pollLocked() []Event {
	size := uint32(1) << e.EQOrder
	var out []Event
	for {
		slot := e.NIC.Bytes(e.EQ+uint64(e.eqHead&(size-1))*myrimx.EventSize, myrimx.EventSize)
		want := byte(1 ^ (e.eqHead>>e.EQOrder)&1)
		// The device stores the first word last, in one 4-byte store.
		w := loadWord(slot)
		if byte(w>>16) != want {
			break
		}
		ev := Event{
			Type: myrimx.EventType(w), Status: myrimx.Status(w >> 8),
			Seq: le.Uint32(slot[myrimx.EvSeq:]), Cookie: le.Uint64(slot[myrimx.EvCookie:]),
			Match: le.Uint64(slot[myrimx.EvMatch:]), SrcNIC: le.Uint64(slot[myrimx.EvSrcNIC:]),
			SrcEP: le.Uint16(slot[myrimx.EvSrcEP:]), MsgLen: le.Uint32(slot[myrimx.EvMsgLength:]),
			XferLen: le.Uint32(slot[myrimx.EvXferLength:]), Region: le.Uint32(slot[myrimx.EvRegionID:]),
			Gen: le.Uint32(slot[myrimx.EvGeneration:]), Reason: slot[myrimx.EvReason],
		}
		out = append(out, ev)
		e.eqHead++
	}
	if len(out) > 0 {
		e.NIC.Write32(e.reg+myrimx.EPEqHead, e.eqHead)
	}
	return out
}

// Wait returns the first event (already polled or new) that pred
// accepts, removing it from the pending list. Other events stay pending.
func (e *Endpoint) Wait(pred func(Event) bool) (Event, error) {
	deadline := time.Now().Add(WaitTimeout)
	for {
		e.mu.Lock()
		e.pending = append(e.pending, e.pollLocked()...)
		for i, ev := range e.pending {
			if pred(ev) {
				e.pending = append(e.pending[:i], e.pending[i+1:]...)
				e.mu.Unlock()
				return ev, nil
			}
		}
		e.mu.Unlock()
		if time.Now().After(deadline) {
			return Event{}, fmt.Errorf("endpoint %d: %w (EP_STATUS %#x, pending %v)", e.Index, ErrTimeout,
				e.NIC.Read64(e.reg+myrimx.EPStatus), e.Pending())
		}
		e.pause()
	}
}

func (e *Endpoint) pause() {
	if e.Spin {
		runtime.Gosched()
		return
	}
	time.Sleep(20 * time.Microsecond)
}

// WaitSeq waits for the completion of the command with cmd_seq seq.
func (e *Endpoint) WaitSeq(seq uint32) (Event, error) {
	return e.Wait(func(ev Event) bool { return ev.Seq == seq && ev.Type != myrimx.EvtRegionRevoked })
}

// Pending returns the polled events no Wait took yet.
func (e *Endpoint) Pending() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.pending...)
}

// Drain polls and returns every pending event, emptying the list.
func (e *Endpoint) Drain() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append(e.pending, e.pollLocked()...)
	e.pending = nil
	return out
}

// Do posts one command and waits for its completion.
func (e *Endpoint) Do(c Cmd) (Event, error) {
	return e.WaitSeq(e.Post(c)[0])
}

// Register writes b's page list into guest memory, posts REG and waits
// for REG_DONE, then frees the list: the device copied it (§6.1). It
// returns the list's address (a test may scribble on it afterwards, until
// its next allocation) and the completion.
func (e *Endpoint) Register(id, gen, access uint32, b Buffer) (uint64, Event, error) {
	list := e.NIC.Alloc(8*len(b.Pages), 8)
	lb := e.NIC.Bytes(list, 8*len(b.Pages))
	for i, p := range b.Pages {
		le.PutUint64(lb[8*i:], p)
	}
	ev, err := e.Do(RegCmd(id, gen, access, b, list))
	if err == nil {
		if ferr := e.NIC.Mem.Free(list); ferr != nil {
			e.NIC.tb.Errorf("mxtest: %v", ferr)
		}
	}
	return list, ev, err
}

// Fence posts FENCE(seq) without an event and waits until the
// FENCE_DONE register shows it (the driver's notifier path, §6.7).
func (e *Endpoint) Fence(seq uint64) error {
	e.Post(FenceCmd(seq, false))
	if !poll(20*time.Microsecond, func() bool { return e.NIC.Read64(e.reg+myrimx.EPFenceDone) >= seq }) {
		return fmt.Errorf("endpoint %d: FENCE %d: %w", e.Index, seq, ErrTimeout)
	}
	return nil
}

// WaitState waits until EP_STATUS shows state and cause: the device's
// worker moves an endpoint to ERROR on its own time.
func (e *Endpoint) WaitState(state, cause uint8) error {
	if !poll(100*time.Microsecond, func() bool { return e.State() == state && e.Cause() == cause }) {
		return fmt.Errorf("endpoint %d: state %d cause %d, want %d %d: %w",
			e.Index, e.State(), e.Cause(), state, cause, ErrTimeout)
	}
	return nil
}

// InvSync invalidates (id, gen) through the INV_SYNC register and reads
// INV_SYNC_DONE back (the read orders).
func (e *Endpoint) InvSync(id, gen uint32) uint32 {
	e.NIC.Write64(e.reg+myrimx.EPInvSync, uint64(id)<<32|uint64(gen))
	return uint32(e.NIC.Read64(e.reg + myrimx.EPInvSyncDone))
}

// StatusBlock returns the status block's fields.
func (e *Endpoint) StatusBlock() (fence uint64, cmdqHead, eqTail, badCmds, eqOverflows uint32) {
	b := e.NIC.Bytes(e.Status, myrimx.SBSize)
	return le.Uint64(b[myrimx.SBFenceDone:]), le.Uint32(b[myrimx.SBCmdqHead:]), le.Uint32(b[myrimx.SBEqTail:]),
		le.Uint32(b[myrimx.SBBadCmds:]), le.Uint32(b[myrimx.SBEqOverflows:])
}
