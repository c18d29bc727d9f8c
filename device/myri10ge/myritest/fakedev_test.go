package myritest

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
)

// fakeDev is a tiny scripted Myri-10G for the fake driver's own tests: a
// BAR0 byte store with the trigger writes of §2.4, a command table, rings,
// and the token protocol, running synchronously inside the driver's
// stores. Its knobs make it misbehave in one way at a time, so the tests
// can prove the driver catches each way. It also records every BAR0
// access and command, so the tests can compare sequences.
//
// It implements Bus and Interrupts.
type fakeDev struct {
	t   testing.TB
	mem *Memory

	mu   sync.Mutex
	bar0 []byte
	cfg  [256]byte

	// Geometry.
	rxEntries, txEntries int
	slices               int

	// Command behaviour: answer overrides a command (ok false: no
	// response at all); cmds is the log.
	answer map[Cmd]func(c fakeCmd) (uint32, Status, bool)
	cmds   []fakeCmd
	access []fakeAccess

	// Firmware state.
	running    bool
	smallBytes int
	bigBytes   int
	mtu        int
	intrqSlots int
	sl         []*fakeSlice
	linkEvent  int // 0 none, 1 up, 2 down
	handoffs   int
	dummyRDMAs int

	// IRQ delivery (an eventfd per vector: a count and a wake-up).
	mode   IRQMode
	counts []int
	wake   []chan struct{}

	// Knobs.
	blockHook    func(s int, b []byte) // edits each interrupt block before it is written
	noLinkUp     bool
	noLinkDown   bool
	spurious     bool // signal again at each claim word 1 that brings no new block
	ignoreRx     bool // pass the RX token again before claim word 0
	wrongRing    bool // put small frames in the big ring
	skipSlot     bool // leave one rx_done slot empty
	overrun      int  // write this many bytes past each frame
	badCsum      bool
	noDeassert   bool // INTx: never clear valid after the deassert write
	onSendStop   func(s int)
	stagingFault bool // corrupt the firmware staging area
	noConfirm    bool // never confirm dummy RDMA
	noTx         bool // ignore send doorbells
}

type fakeCmd struct {
	Cmd        Cmd
	D0, D1, D2 uint32
	Pad        uint32 // one of the uninitialised pad words
}

type fakeAccess struct {
	Write bool
	Off   uint64
	Size  int
	Data  []byte // what a write stored
}

type fakeSlice struct {
	rxDone   uint64
	stats    uint64
	rxIdx    int
	posted   [2]int
	consumed [2]int
	txIdx    int
	sendDone uint32
	reported uint32
	irqToken bool
	rxToken  bool
	pending  bool
	sent     [][]byte // frames taken from the send ring
	descs    [][16]byte
}

const (
	fkSend  = 0x200000
	fkSmall = 0x300000
	fkBig   = 0x340000
	fkAck   = 0x3E0000
	fkDeass = 0x3E0400
	fkCoal  = 0x3E0408
	fkRSS   = 0x3E0800
	fkHdr   = 0x100
	fkStr   = 0x1DFE00
)

// fakeOpts selects the fake's PCI face.
type fakeOpts struct {
	msix      int // MSI-X table size; 0: no capability
	noMSI     bool
	linkWidth int
	strings   string // EEPROM strings; default has MAC 00:60:dd:47:00:01
	version   string
}

func newFakeDev(t testing.TB, mem *Memory, o fakeOpts) *fakeDev {
	f := &fakeDev{
		t: t, mem: mem, bar0: make([]byte, BAR0Size),
		rxEntries: 64, txEntries: 64, slices: 1,
		answer: make(map[Cmd]func(fakeCmd) (uint32, Status, bool)),
	}
	if o.msix > 0 {
		f.slices = o.msix
	}
	if o.strings == "" {
		o.strings = "SN=4242\x00MAC=00:60:dd:47:00:01\x00PC=10G-PCIE-8B-S\x00\x00"
	}
	if o.version == "" {
		o.version = "1.4.57 -- fake"
	}
	be := binary.BigEndian
	be.PutUint32(f.bar0[OffHeaderPtr:], fkHdr)
	putFakeHeader(f.bar0[fkHdr:], o.version)
	copy(f.bar0[fkStr:], o.strings)

	c := f.cfg[:]
	binary.LittleEndian.PutUint16(c[0:], 0x14c1)
	binary.LittleEndian.PutUint16(c[2:], 0x0008)
	binary.LittleEndian.PutUint16(c[6:], 0x0010)
	c[0x34] = 0x60
	// 0x60 vendor -> 0x70 MSI -> 0x80 PCIe -> 0xA0 MSI-X
	c[0x60], c[0x61], c[0x62] = capIDVendor, 0x70, 0x20
	next := func(at int, v byte) { c[at+1] = v }
	c[0x70] = capIDMSI
	binary.LittleEndian.PutUint16(c[0x72:], 0x0080)
	c[0x80] = capIDPCIe
	binary.LittleEndian.PutUint16(c[0x80+pcieLnkSta:], uint16(o.linkWidth<<4))
	binary.LittleEndian.PutUint16(c[0x80+pcieDevCtl:], 2<<12) // MRRS 512 until the driver sets it
	next(0x70, 0x80)
	if o.noMSI {
		next(0x60, 0x80)
	}
	if o.msix > 0 {
		next(0x80, 0xA0)
		c[0xA0] = capIDMSIX
		binary.LittleEndian.PutUint16(c[0xA0+msixFlags:], uint16(o.msix-1))
	}
	f.resetFW()
	return f
}

func putFakeHeader(b []byte, version string) {
	be := binary.BigEndian
	be.PutUint32(b[hdrOffLength:], hdrSize)
	be.PutUint32(b[hdrOffType:], mcpTypeETH)
	copy(b[hdrOffVersion:hdrOffVersion+hdrVersionLen-1], version)
	be.PutUint32(b[hdrOffStringSpecs:], fkStr)
}

// fakeFirmware is a firmware file the driver accepts: the header pointer
// at 0x3C, a header at 0x40, size bytes in all.
func fakeFirmware(size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b[OffHeaderPtr:], 0x40)
	putFakeHeader(b[0x40:], "1.4.57 -- file")
	for i := 0x40 + hdrSize; i < size; i++ {
		b[i] = byte(i*7 + 1)
	}
	return b
}

func (f *fakeDev) resetFW() {
	f.running = false
	f.smallBytes, f.bigBytes, f.mtu = 126, 4096, 1518
	f.intrqSlots = 2 * f.rxEntries
	f.sl = make([]*fakeSlice, f.slices)
	for i := range f.sl {
		f.sl[i] = &fakeSlice{irqToken: true, rxToken: true}
		clear(f.bar0[fkSend+i*0x4000 : fkSend+i*0x4000+f.txEntries*16])
	}
	f.linkEvent = 0
}

// Config space.

func (f *fakeDev) ReadConfig(off uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off+uint64(len(p)) > 256 {
		return fmt.Errorf("fake: config read %d@%#x", len(p), off)
	}
	copy(p, f.cfg[off:])
	return nil
}

func (f *fakeDev) WriteConfig(off uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off+uint64(len(p)) > 256 || off < 4 {
		return fmt.Errorf("fake: config write %d@%#x", len(p), off)
	}
	copy(f.cfg[off:], p)
	return nil
}

// BAR0.

func (f *fakeDev) ReadBAR0(off uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off+uint64(len(p)) > BAR0Size {
		return fmt.Errorf("fake: BAR0 read %d@%#x", len(p), off)
	}
	f.access = append(f.access, fakeAccess{Off: off, Size: len(p)})
	copy(p, f.bar0[off:])
	return nil
}

func covers(off uint64, n int, b uint64) bool { return off <= b && b < off+uint64(n) }

func (f *fakeDev) WriteBAR0(off uint64, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off+uint64(len(p)) > BAR0Size {
		return fmt.Errorf("fake: BAR0 write %d@%#x", len(p), off)
	}
	f.access = append(f.access, fakeAccess{Write: true, Off: off, Size: len(p), Data: append([]byte(nil), p...)})
	copy(f.bar0[off:], p)
	if f.stagingFault && off >= OffFWStaging && off < OffFWStaging+0x1000 {
		f.bar0[off] ^= 0xff
	}
	n := len(p)
	switch {
	case covers(off, n, OffCmd+cmdBlockSize-1):
		f.command()
	case covers(off, n, OffDummyRDMA+cmdBlockSize-1):
		f.dummyRDMAs++
		if !f.noConfirm {
			f.confirm(OffDummyRDMA)
		}
	case covers(off, n, OffBootHandoff+cmdBlockSize-1):
		f.handoffs++
		f.resetFW()
		f.confirm(OffBootHandoff)
	case off >= fkAck && off < fkAck+uint64(8*f.slices):
		s := int(off-fkAck) / 8
		claim1 := (off-fkAck)%8 >= 4
		if claim1 {
			f.sl[s].irqToken = true
		} else {
			f.sl[s].rxToken = true
		}
		f.maybeInterrupt(s)
		if claim1 && f.spurious && f.sl[s].irqToken {
			f.raise(s)
		}
	case off == fkDeass:
		if !f.noDeassert {
			f.mem.mustBytes(f.sl[0].stats+irqOffValid, 1)[0] = 0
		}
	case off >= fkSmall && off < fkBig+uint64(f.slices)*0x1000:
		base, ring := uint64(fkSmall), 0
		if off >= fkBig {
			base, ring = fkBig, 1
		}
		rel := (off - base) % 0x1000
		s := int((off - base) / 0x1000)
		if n == 4 && rel%64 == 4 && binary.BigEndian.Uint32(p) != recvInvalidLow {
			f.sl[s].posted[ring] += recvGroup
		}
	case off >= fkSend && off < fkSend+uint64(f.slices)*0x4000:
		s := int((off - fkSend) / 0x4000)
		if n == 4 && (off-fkSend)%16 == 0xC && p[3] != 0 && !f.noTx {
			f.transmit(s)
		}
	case off >= OffSendStop && off < OffSendStop+64*uint64(f.slices):
		if f.onSendStop != nil {
			f.onSendStop(int(off-OffSendStop) / 64)
		}
	}
	return nil
}

func (f *fakeDev) be32(off uint64) uint32 { return binary.BigEndian.Uint32(f.bar0[off:]) }

func (f *fakeDev) confirm(blk uint64) {
	addr := uint64(f.be32(blk))<<32 | uint64(f.be32(blk+4))
	f.mem.storeBE32(addr, f.be32(blk+8))
}

func (f *fakeDev) command() {
	c := fakeCmd{Cmd(f.be32(OffCmd)), f.be32(OffCmd + 4), f.be32(OffCmd + 8), f.be32(OffCmd + 12), f.be32(OffCmd + 0x3C)}
	resp := uint64(f.be32(OffCmd+cmdOffRespHi))<<32 | uint64(f.be32(OffCmd+cmdOffRespLo))
	f.cmds = append(f.cmds, c)
	var data uint32
	var st Status
	ok := true
	if h, found := f.answer[c.Cmd]; found {
		data, st, ok = h(c)
	} else {
		data, st = f.execute(c)
	}
	if ok {
		f.mem.storeBE32(resp+respOffData, data)
		f.mem.storeBE32(resp+respOffResult, uint32(st))
	}
	if c.Cmd == CmdEthernetUp || c.Cmd == CmdEthernetDown {
		f.maybeInterrupt(0)
	}
}

func (f *fakeDev) execute(c fakeCmd) (uint32, Status) {
	slice := func() (*fakeSlice, bool) {
		if int(c.D0) >= f.slices {
			return nil, false
		}
		return f.sl[c.D0], true
	}
	switch c.Cmd {
	case CmdReset:
		f.resetFW()
		return uint32(2 * f.rxEntries * slotSize), StatusOK
	case CmdDMATest, CmdUnalignedTest:
		return 0x01000100, StatusOK
	case CmdGetRxRingSize:
		return uint32(f.rxEntries * recvDescSize), StatusOK
	case CmdGetSendRingSize:
		return uint32(f.txEntries * 16), StatusOK
	case CmdGetSendOffset:
		if _, ok := slice(); !ok {
			return 0, StatusErrorRange
		}
		return fkSend + c.D0*0x4000, StatusOK
	case CmdGetSmallRxOffset:
		if _, ok := slice(); !ok {
			return 0, StatusErrorRange
		}
		return fkSmall + c.D0*0x1000, StatusOK
	case CmdGetBigRxOffset:
		if _, ok := slice(); !ok {
			return 0, StatusErrorRange
		}
		return fkBig + c.D0*0x1000, StatusOK
	case CmdGetIRQAckOffset:
		return fkAck, StatusOK
	case CmdGetIRQDeassertOffset:
		return fkDeass, StatusOK
	case CmdGetIntrCoalDelayOffset:
		return fkCoal, StatusOK
	case CmdGetRSSTableOffset:
		return fkRSS, StatusOK
	case CmdGetMaxRSSQueues:
		return uint32(f.slices), StatusOK
	case CmdSetIntrqSize:
		f.intrqSlots = int(c.D0) / slotSize
	case CmdSetIntrqDMA:
		if int(c.D2) >= f.slices {
			return 0, StatusErrorRange
		}
		f.sl[c.D2].rxDone = uint64(c.D1)<<32 | uint64(c.D0)
	case CmdSetStatsDMAV2:
		s := int(c.D2 >> 16)
		if s >= f.slices {
			return 0, StatusErrorRange
		}
		f.sl[s].stats = uint64(c.D1)<<32 | uint64(c.D0)
	case CmdSetSmallBufferSize:
		f.smallBytes = int(c.D0)
	case CmdSetBigBufferSize:
		f.bigBytes = int(c.D0)
	case CmdSetMTU:
		f.mtu = int(c.D0)
	case CmdEthernetUp:
		f.running = true
		if !f.noLinkUp {
			f.linkEvent = 1
		}
	case CmdEthernetDown:
		f.running = false
		if !f.noLinkDown {
			f.linkEvent = 2
		}
	case CmdGetMaxTSO6HdrSize, CmdGetDCAOffset:
		return 0, StatusUnknown
	case CmdSetTSOMode, CmdSetRSSMCPSlotType, CmdSetMACAddress, CmdEnableFlowControl, CmdDisableFlowControl,
		CmdEnablePromisc, CmdDisablePromisc, CmdEnableAllMulti, CmdDisableAllMulti, CmdJoinMulticastGroup,
		CmdLeaveAllMulticast, CmdEnableRSSQueues, CmdSetRSSTableSize, CmdSetRSSEnable:
	default:
		return 0, StatusUnknown
	}
	return 0, StatusOK
}

// maybeInterrupt is the device side of the token protocol (§6.2).
func (f *fakeDev) maybeInterrupt(s int) {
	sl := f.sl[s]
	if sl.stats == 0 {
		// A receive-only slice (one TX queue): no block, just the vector,
		// under the RX token.
		if s != 0 && sl.pending && sl.rxToken {
			sl.rxToken, sl.pending = false, false
			f.raise(s)
		}
		return
	}
	if !sl.irqToken {
		return
	}
	passRx := (sl.rxToken || f.ignoreRx) && sl.pending
	link := s == 0 && f.linkEvent != 0
	if !passRx && sl.sendDone == sl.reported && !link {
		return
	}
	var b [irqDataSize]byte
	be := binary.BigEndian
	be.PutUint32(b[irqOffSendDoneCount:], sl.sendDone)
	if f.running {
		be.PutUint32(b[irqOffLinkUp:], LinkUp)
	}
	be.PutUint32(b[irqOffRDMATags:], rdmaTagsAvailable)
	b[irqOffStatsUpdated] = 1
	if s == 0 && f.linkEvent == 2 {
		b[irqOffLinkDown] = 1
	}
	b[irqOffValid] = 2
	if passRx {
		b[irqOffValid] = 1
	}
	if f.blockHook != nil {
		f.blockHook(s, b[:])
	}
	copy(f.mem.mustBytes(sl.stats, irqDataSize), b[:])
	sl.reported = sl.sendDone
	if s == 0 {
		f.linkEvent = 0
	}
	sl.irqToken = false
	if passRx {
		sl.rxToken, sl.pending = false, false
	}
	f.raise(s)
}

// deliver receives a frame on slice s as the device would (§5.3).
func (f *fakeDev) deliver(s int, frame []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sl := f.sl[s]
	ring, bufBytes := 0, f.smallBytes+rxPad
	if len(frame) > f.smallBytes || f.wrongRing {
		ring, bufBytes = 1, f.bigBytes
	}
	stream := append(make([]byte, rxPad), frame...)
	stream = append(stream, make([]byte, f.overrun)...)
	need := (len(frame) + rxPad + bufBytes - 1) / bufBytes
	if sl.posted[ring]-sl.consumed[ring] < need {
		return fmt.Errorf("fake: ring %d has %d buffers, need %d", ring, sl.posted[ring]-sl.consumed[ring], need)
	}
	lanai := uint64(fkSmall + s*0x1000)
	if ring == 1 {
		lanai = uint64(fkBig + s*0x1000)
	}
	for j := 0; len(stream) > 0; j++ {
		e := lanai + uint64((sl.consumed[ring]%f.rxEntries)*recvDescSize)
		addr := uint64(f.be32(e))<<32 | uint64(f.be32(e+4))
		n := min(len(stream), bufBytes)
		if j == need-1 {
			n = len(stream) // the overrun goes past the last buffer
		}
		copy(f.mem.mustBytes(addr, n), stream[:n])
		stream = stream[n:]
		sl.consumed[ring]++
	}
	if f.skipSlot {
		sl.rxIdx++
	}
	csum := Checksum(frame[ethHLen:])
	if f.badCsum {
		csum ^= 0x0101
	}
	f.mem.storeBE32(sl.rxDone+uint64(slotSize*(sl.rxIdx%f.intrqSlots)), uint32(csum)<<16|uint32(len(frame)))
	sl.rxIdx++
	sl.pending = true
	f.maybeInterrupt(s)
	return nil
}

// transmit takes packets off slice s's send ring (§5.4).
func (f *fakeDev) transmit(s int) {
	sl := f.sl[s]
	ring := uint64(fkSend + s*0x4000)
	desc := func(i int) []byte {
		o := ring + uint64((i%f.txEntries)*16)
		return f.bar0[o : o+16]
	}
	for {
		d := desc(sl.txIdx)
		if d[txOffFlags] == 0 {
			break
		}
		n := 1
		tso := d[txOffFlags]&txFlagNoTSO == 0
		if !tso {
			n = max(int(d[txOffRDMACount]), 1)
		} else {
			for n < f.txEntries {
				fl := desc(sl.txIdx + n)[txOffFlags]
				if fl == 0 || (fl&txFlagFirst != 0 && fl&txFlagTSOPld == 0) {
					break
				}
				n++
			}
		}
		var pkt []byte
		for i := range n {
			d := desc(sl.txIdx + i)
			var cp [16]byte
			copy(cp[:], d)
			sl.descs = append(sl.descs, cp)
			addr := uint64(binary.BigEndian.Uint32(d[0:]))<<32 | uint64(binary.BigEndian.Uint32(d[4:]))
			l := int(binary.BigEndian.Uint16(d[txOffLength:]))
			pkt = append(pkt, f.mem.mustBytes(addr, l)...)
			clear(d)
		}
		sl.sent = append(sl.sent, pkt)
		sl.txIdx += n
		sl.sendDone++
	}
	f.maybeInterrupt(s)
}

// Interrupts.

func (f *fakeDev) Enable(mode IRQMode, vectors int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = mode
	f.counts = make([]int, vectors)
	f.wake = make([]chan struct{}, vectors)
	for i := range f.wake {
		f.wake[i] = make(chan struct{}, 1)
	}
	return nil
}

func (f *fakeDev) Disable() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode, f.counts, f.wake = 0, nil, nil
	return nil
}

func (f *fakeDev) raise(s int) {
	v := s
	if f.mode != ModeMSIX {
		v = 0
	}
	if v >= len(f.counts) {
		return // interrupts off: the signal is lost, as with no eventfd
	}
	f.counts[v]++
	select {
	case f.wake[v] <- struct{}{}:
	default:
	}
}

func (f *fakeDev) Wait(ctx context.Context, v int) error {
	for {
		f.mu.Lock()
		if v >= len(f.counts) {
			f.mu.Unlock()
			return fmt.Errorf("fake: vector %d not enabled", v)
		}
		if f.counts[v] > 0 {
			f.counts[v] = 0
			f.mu.Unlock()
			return nil
		}
		w := f.wake[v]
		f.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Inspection helpers.

func (f *fakeDev) commands() []Cmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Cmd, len(f.cmds))
	for i, c := range f.cmds {
		out[i] = c.Cmd
	}
	return out
}

func (f *fakeDev) clearLogs() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds, f.access = nil, nil
}

func (f *fakeDev) sent(s int) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.sl[s].sent...)
}
