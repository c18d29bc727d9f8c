package myri10ge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/device/myri10ge/abi"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/fabrictest"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/pci/pcitest"
	"github.com/sirupsen/logrus"
)

// Guest memory layout of the rig: RAM at IOVA 0; the driver's structures
// at fixed addresses in it.
const (
	ramSize     = 8 << 20
	respAddr    = 0x1000  // mcp_cmd_response
	statsAddr0  = 0x2000  // mcp_irq_data of slice s at +0x100*s
	rxDoneAddr0 = 0x10000 // rx_done ring of slice s at +0x10000*s
	bufBase     = 0x200000
	testMAC     = "00:60:dd:47:00:01"
)

type rig struct {
	t    testing.TB
	nic  *NIC
	ram  *dmatest.RAM
	mem  *dma.Map
	irq  *pcitest.Raiser
	port *fabrictest.Port
	logs *bytes.Buffer
}

func newRig(t testing.TB, slices int) *rig {
	t.Helper()
	port := fabrictest.NewPort(1024)
	r := newRigOn(t, slices, port, testMAC, PIOTrap)
	r.port = port
	return r
}

// newRigOn is newRig with the NIC on port, its EEPROM address mac, its
// BAR0 rings reached as pio says.
func newRigOn(t testing.TB, slices int, port fabric.Port, macStr string, pio PIOMode) *rig {
	t.Helper()
	leaktest.Check(t)
	logs := &bytes.Buffer{}
	l := logrus.New()
	l.SetOutput(logs)
	log := logrus.NewEntry(l)
	ram := dmatest.NewRAM(t, ramSize)
	mem := dma.NewMap(log)
	t.Cleanup(func() { mem.Close() })
	if err := mem.Add(dma.Mapping{IOVA: 0, Size: ramSize, Fd: ram.Fd(), Prot: dma.ProtRead | dma.ProtWrite}); err != nil {
		t.Fatal(err)
	}
	mem.SetBusMaster(true)
	mac, _ := net.ParseMAC(macStr)
	nic, err := New(Config{Name: "myri0", MAC: mac, Serial: 4242, Slices: slices, PIO: pio, Port: port, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	irq := pcitest.NewRaiser(msi.ModeMSI)
	if err := nic.Attach(pci.Host{Mem: mem, IRQ: irq, Log: log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nic.Detach()
		if err := nic.Close(); err != nil {
			t.Error(err)
		}
	})
	return &rig{t: t, nic: nic, ram: ram, mem: mem, irq: irq, logs: logs}
}

func (r *rig) write(off uint64, b []byte) {
	r.t.Helper()
	if err := r.nic.WriteBAR(0, off, b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) put32(off uint64, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	r.write(off, b[:])
}

func (r *rig) read32(off uint64) uint32 {
	r.t.Helper()
	var b [4]byte
	if err := r.nic.ReadBAR(0, off, b[:]); err != nil {
		r.t.Fatal(err)
	}
	return binary.BigEndian.Uint32(b[:])
}

func (r *rig) ramBE32(addr uint64) uint32 { return binary.BigEndian.Uint32(r.ram.Bytes()[addr:]) }

// cmd issues a mailbox command the way the driver does: preset result to
// NO_RESPONSE, copy the 64-byte block in 8-byte stores, read the response.
func (r *rig) cmd(c abi.Cmd, d0, d1, d2 uint32) (uint32, abi.Status) {
	r.t.Helper()
	binary.BigEndian.PutUint32(r.ram.Bytes()[respAddr+4:], uint32(abi.StatusNoResponse))
	var blk [abi.BlockSize]byte
	be := binary.BigEndian
	be.PutUint32(blk[abi.CmdOffCmd:], uint32(c))
	be.PutUint32(blk[abi.CmdOffData0:], d0)
	be.PutUint32(blk[abi.CmdOffData1:], d1)
	be.PutUint32(blk[abi.CmdOffData2:], d2)
	be.PutUint32(blk[abi.CmdOffRespLo:], respAddr)
	for i := 0; i < abi.BlockSize; i += 8 {
		r.write(abi.OffCmd+uint64(i), blk[i:i+8])
	}
	st := abi.Status(r.ramBE32(respAddr + 4))
	if st == abi.StatusNoResponse {
		r.t.Fatalf("command %v: no response", c)
	}
	return r.ramBE32(respAddr), st
}

func (r *rig) mustCmd(c abi.Cmd, d0, d1, d2 uint32) uint32 {
	r.t.Helper()
	data, st := r.cmd(c, d0, d1, d2)
	if st != abi.StatusOK {
		r.t.Fatalf("command %v(%#x, %#x, %#x) = %v, want OK", c, d0, d1, d2, st)
	}
	return data
}

// open runs the single-slice reset and open sequence of §4.4 with the
// given MTU, fills both receive rings, and returns after the link-up
// interrupt, with its tokens handed back.
func (r *rig) open(mtu int) {
	r.t.Helper()
	r.mustCmd(abi.CmdReset, 0, 0, 0)
	// The driver writes its coalescing delay right after reset; no delay
	// keeps these tests free of timing (TestCoalescingDelay sets its own).
	r.put32(intrCoalOff, 0)
	r.mustCmd(abi.CmdSetIntrqSize, 2*rxRingEntries*abi.SlotSize, 0, 0)
	r.mustCmd(abi.CmdSetIntrqDMA, rxDoneAddr0, 0, 0)
	r.mustCmd(abi.CmdSetStatsDMAV2, statsAddr0, 0, abi.IRQDataSize)
	r.mustCmd(abi.CmdSetMTU, uint32(mtu+18), 0, 0)
	small, big := 128-abi.RxPad, 2048
	if mtu > 1500 {
		small, big = 1518, 4096
	}
	r.mustCmd(abi.CmdSetSmallBufferSize, uint32(small), 0, 0)
	r.mustCmd(abi.CmdSetBigBufferSize, uint32(big), 0, 0)
	for g := 0; g < rxRingEntries/abi.RecvGroup; g++ {
		r.postGroup(0, false, g)
		r.postGroup(0, true, g)
	}
	r.mustCmd(abi.CmdEthernetUp, 0, 0, 0)
	if got, _ := r.irq.Take(); !cmp.Equal(got, []int{0}) {
		r.t.Fatalf("after ETHERNET_UP raised %v, want [0]", got)
	}
	if got := r.block(0).linkUp; got != abi.LinkUp {
		r.t.Fatalf("link-up block has link_up %d", got)
	}
	r.claim(0, true)
}

// bufAddr is the guest buffer for ring entry e, 4 KiB apart (page
// buffers): the small ring's at bufBase, the big ring's 2 MiB above.
// Buffer tests use slice 0 only.
func bufAddr(slice int, big bool, e int) uint64 {
	a := bufBase + uint64(e)*4096
	if big {
		a += rxRingEntries * 4096
	}
	return a
}

// postGroup posts 8 buffers the driver's way: entries 0-3 with the first
// addr_low invalid, entries 4-7, then the real addr_low as the doorbell.
func (r *rig) postGroup(slice int, big bool, g int) {
	r.postGroupOf(slice, big, g, func(e int) uint64 { return bufAddr(slice, big, e) })
}

// postGroupOf is postGroup with the buffer of entry e at addr(e).
func (r *rig) postGroupOf(slice int, big bool, g int, addr func(e int) uint64) {
	base := smallRingOff(slice)
	if big {
		base = bigRingOff(slice)
	}
	var grp [abi.RecvGroup * abi.RecvDescSize]byte
	for i := 0; i < abi.RecvGroup; i++ {
		a := addr(g*abi.RecvGroup + i)
		binary.BigEndian.PutUint32(grp[i*8:], uint32(a>>32))
		binary.BigEndian.PutUint32(grp[i*8+4:], uint32(a))
	}
	real := binary.BigEndian.Uint32(grp[4:])
	binary.BigEndian.PutUint32(grp[4:], abi.RecvInvalidLow)
	off := base + uint64(g)*uint64(len(grp))
	for i := 0; i < len(grp); i += 8 {
		r.write(off+uint64(i), grp[i:i+8])
	}
	r.put32(off+4, real)
}

// receiveSmall injects n small frames for slice 0, handing both tokens
// back after each as the driver would.
func (r *rig) receiveSmall(n int) {
	for range n {
		r.port.Inject(testFrame(testMAC, 60))
		r.claim(0, true)
		r.claim(0, false)
	}
}

func (r *rig) claim(slice int, irqWord bool) {
	off := irqAckBase + 8*uint64(slice)
	if irqWord {
		off += 4
	}
	r.put32(off, 3)
}

type irqBlock struct {
	sendDone, linkUp, rdmaTags, noSmall, noBig, unicastFiltered uint32
	linkDown, statsUpdated, valid                               byte
}

func (r *rig) block(slice int) irqBlock {
	a := uint64(statsAddr0 + 0x100*slice)
	b := r.ram.Bytes()[a : a+abi.IRQDataSize]
	be := binary.BigEndian
	return irqBlock{
		sendDone: be.Uint32(b[abi.IRQOffSendDoneCount:]), linkUp: be.Uint32(b[abi.IRQOffLinkUp:]),
		rdmaTags: be.Uint32(b[abi.IRQOffRDMATags:]), noSmall: be.Uint32(b[abi.IRQOffDroppedNoSmall:]),
		noBig: be.Uint32(b[abi.IRQOffDroppedNoBig:]), unicastFiltered: be.Uint32(b[abi.IRQOffDroppedUnicast:]),
		linkDown: b[0x3D], statsUpdated: b[0x3E], valid: b[0x3F],
	}
}

// slot reads rx_done slot i of a slice: checksum and length.
func (r *rig) slot(slice, i int) (uint16, uint16) {
	a := rxDoneAddr0 + 0x10000*slice + 4*i
	b := r.ram.Bytes()[a:]
	return binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
}

func testFrame(dst string, n int) []byte {
	d, _ := net.ParseMAC(dst)
	f := make([]byte, max(n, 14))
	copy(f, d)
	copy(f[6:], []byte{0x02, 0, 0, 0, 0, 0x99})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	for i := 14; i < n; i++ {
		f[i] = byte(i * 7)
	}
	return f[:n]
}

func TestSRAMImage(t *testing.T) {
	r := newRig(t, 1)
	hdr := uint64(r.read32(abi.OffHeaderPtr) & 0xFFFFC)
	if hdr != offHeader {
		t.Fatalf("header pointer %#x, want %#x", hdr, offHeader)
	}
	if got := r.read32(hdr + abi.HdrOffType); got != abi.MCPTypeETH {
		t.Errorf("mcp_type %#x, want ETH", got)
	}
	specs := uint64(r.read32(hdr + abi.HdrOffStringSpecs))
	if specs <= 0x100000 || specs+abi.EEPROMStringsSize > abi.BAR0Size || hdr+abi.HdrSize > specs {
		t.Errorf("string_specs %#x breaks the driver's sram_size checks", specs)
	}
	ver := make([]byte, abi.HdrVersionLen)
	r.nic.ReadBAR(0, hdr+abi.HdrOffVersion, ver)
	if !strings.HasPrefix(string(ver), "1.4.") {
		t.Errorf("version %q: the driver needs 1.4.x", ver)
	}
	strs := make([]byte, abi.EEPROMStringsSize)
	r.nic.ReadBAR(0, specs, strs)
	var got []string
	for _, s := range bytes.Split(bytes.TrimRight(strs, "\x00"), []byte{0}) {
		got = append(got, string(s))
	}
	want := []string{"SN=4242", "MAC=" + testMAC, "PC=10G-PCIE-8B-S"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("EEPROM strings (-want +got):\n%s", diff)
	}
}

func TestCommands(t *testing.T) {
	r := newRig(t, 4)
	tests := []struct {
		cmd        abi.Cmd
		d0, d1, d2 uint32
		wantStatus abi.Status
		wantData   uint32
		anyData    bool
	}{
		{cmd: abi.CmdReset, wantData: 2 * rxRingEntries * abi.SlotSize},
		{cmd: abi.CmdGetSendOffset, d0: 1, wantData: sendRingBase + sendRingStride},
		{cmd: abi.CmdGetSendOffset, d0: 4, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdGetSmallRxOffset, d0: 3, wantData: smallRingBase + 3*rxRingStride},
		{cmd: abi.CmdGetBigRxOffset, d0: 0, wantData: bigRingBase},
		{cmd: abi.CmdGetIRQAckOffset, d0: 0xdeadbeef /* stale */, wantData: irqAckBase},
		{cmd: abi.CmdGetIRQDeassertOffset, wantData: irqDeassertOff},
		{cmd: abi.CmdGetIntrCoalDelayOffset, wantData: intrCoalOff},
		{cmd: abi.CmdGetSendRingSize, wantData: sendRingBytes},
		{cmd: abi.CmdGetRxRingSize, d0: 0x12345 /* garbage from old kernels */, wantData: rxRingBytes},
		{cmd: abi.CmdGetMaxRSSQueues, wantData: 4},
		{cmd: abi.CmdEnableRSSQueues, d0: 4, d1: 3},
		{cmd: abi.CmdEnableRSSQueues, d0: 5, d1: 3, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdGetRSSTableOffset, wantData: rssTableOff},
		{cmd: abi.CmdSetRSSTableSize, d0: 4},
		{cmd: abi.CmdSetRSSEnable, d0: 1, d1: 5},
		{cmd: abi.CmdSetIntrqSize, d0: 4096},
		{cmd: abi.CmdSetIntrqSize, d0: 4100, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdSetIntrqDMA, d0: rxDoneAddr0, d2: 3},
		{cmd: abi.CmdSetIntrqDMA, d0: rxDoneAddr0, d2: 4, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdSetStatsDMAV2, d0: statsAddr0, d2: 64 | 2<<16},
		{cmd: abi.CmdSetStatsDMAV2, d0: statsAddr0, d2: 40, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdSetMTU, d0: 9018},
		{cmd: abi.CmdSetMTU, d0: 9019, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdSetSmallBufferSize, d0: 126},
		{cmd: abi.CmdSetBigBufferSize, d0: 4096},
		{cmd: abi.CmdSetBigBufferSize, d0: 3000, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdSetMACAddress, d0: 0x0060dd47, d1: 0x0002},
		{cmd: abi.CmdEnableFlowControl},
		{cmd: abi.CmdDisablePromisc},
		{cmd: abi.CmdEnablePromisc},
		{cmd: abi.CmdEnableAllMulti},
		{cmd: abi.CmdLeaveAllMulticast},
		{cmd: abi.CmdJoinMulticastGroup, d0: 0x01005e00, d1: 0x00010000},
		{cmd: abi.CmdJoinMulticastGroup, d0: 0x02005e00, d1: 0x00010000, wantStatus: abi.StatusErrorMulticast},
		{cmd: abi.CmdDisableAllMulti},
		{cmd: abi.CmdSetTSOMode, d0: 0},
		{cmd: abi.CmdSetRSSMCPSlotType, d0: 0},
		{cmd: abi.CmdSetRSSMCPSlotType, d0: 1, wantStatus: abi.StatusErrorRange},
		{cmd: abi.CmdDMATest, d0: 0x8000, d2: 2048 << 16, anyData: true},
		{cmd: abi.CmdDMATest, d0: 0x8000, d2: 2048, anyData: true},
		{cmd: abi.CmdDMATest, d0: 0x8000, d2: 2048 * 0x10001, anyData: true},
		{cmd: abi.CmdDMATest, d0: 0, d1: 0x10, d2: 2048, wantStatus: abi.StatusErrorRange}, // unmapped page
		{cmd: abi.CmdEthernetUp, wantStatus: abi.StatusErrorBusy},                          // slices 0-2 have no rx_done ring
		{cmd: abi.CmdEthernetDown},
		// Commands the firmware does not implement answer UNKNOWN, the one
		// quiet failure the driver tolerates.
		{cmd: abi.CmdGetMCPVersion, wantStatus: abi.StatusUnknown},
		{cmd: abi.CmdGetMaxTSO6HdrSize, wantStatus: abi.StatusUnknown},
		{cmd: abi.CmdGetDCAOffset, wantStatus: abi.StatusUnknown},
		{cmd: abi.CmdSetStatsInterval, wantStatus: abi.StatusUnknown},
		{cmd: 64, wantStatus: abi.StatusUnknown},
		{cmd: 0xFFFFFFFF, wantStatus: abi.StatusUnknown},
	}
	for _, tc := range tests {
		data, st := r.cmd(tc.cmd, tc.d0, tc.d1, tc.d2)
		if st != tc.wantStatus {
			t.Errorf("%v(%#x, %#x, %#x): status %v, want %v", tc.cmd, tc.d0, tc.d1, tc.d2, st, tc.wantStatus)
			continue
		}
		if st != abi.StatusOK {
			continue
		}
		if tc.anyData {
			if data>>16 == 0 || data&0xFFFF == 0 {
				t.Errorf("%v: reply %#x: need transfers and non-zero ticks (the driver divides by them)", tc.cmd, data)
			}
		} else if data != tc.wantData {
			t.Errorf("%v(%#x): data %#x, want %#x", tc.cmd, tc.d0, data, tc.wantData)
		}
	}
	if s := r.nic.Stats(); s.Commands != uint64(len(tests)) {
		t.Errorf("Commands = %d, want %d", s.Commands, len(tests))
	}
}

func TestResetZeroesSendRingAndState(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.write(sendRingOff(0)+5*abi.SendDescSize, bytes.Repeat([]byte{0xAB}, abi.SendDescSize))
	r.mustCmd(abi.CmdReset, 0, 0, 0)
	ring := make([]byte, sendRingBytes)
	r.nic.ReadBAR(0, sendRingOff(0), ring)
	if !bytes.Equal(ring, make([]byte, sendRingBytes)) {
		t.Error("send ring not zero after CMD_RESET: stale flags would look like posted packets")
	}
	// The data path is stopped and the tokens are home: a frame now is a
	// drop, and nothing is reported.
	r.port.Inject(testFrame(testMAC, 60))
	if got, _ := r.irq.Take(); len(got) != 0 {
		t.Errorf("interrupt %v after reset", got)
	}
}

func TestReceiveSmallAndTokens(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	f := testFrame(testMAC, 100)
	r.port.Inject(f)
	if got, _ := r.irq.Take(); !cmp.Equal(got, []int{0}) {
		t.Fatalf("raised %v, want [0]", got)
	}
	if b := r.block(0); b.valid != 1 || b.statsUpdated != 1 || b.rdmaTags != abi.RDMATagsAvailable || b.linkUp != abi.LinkUp {
		t.Fatalf("block %+v: want valid 1 (RX token), stats_updated, 15 tags, link up", b)
	}
	cs, n := r.slot(0, 0)
	if int(n) != len(f) || cs != rxChecksum(f) {
		t.Errorf("rx_done slot = csum %#x len %d, want %#x %d", cs, n, rxChecksum(f), len(f))
	}
	buf := bufAddr(0, false, 0)
	if got := r.ram.Bytes()[buf+abi.RxPad : buf+abi.RxPad+uint64(len(f))]; !bytes.Equal(got, f) {
		t.Error("small buffer does not hold the frame behind the 2-byte pad")
	}

	// Both tokens are with the driver: more frames are written but not
	// announced until the tokens come back.
	r.port.Inject(testFrame(testMAC, 60), testFrame(testMAC, 61))
	if got, _ := r.irq.Take(); len(got) != 0 {
		t.Fatalf("interrupt %v while the IRQ token is out", got)
	}
	r.claim(0, true) // ISR done; RX token still out (NAPI polling)
	if got, _ := r.irq.Take(); len(got) != 0 {
		t.Fatalf("interrupt %v: nothing to report without the RX token", got)
	}
	r.claim(0, false) // NAPI done: entries it may have missed are announced
	if got, _ := r.irq.Take(); !cmp.Equal(got, []int{0}) {
		t.Fatalf("after claims raised %v, want [0]", got)
	}
	if b := r.block(0); b.valid != 1 {
		t.Errorf("valid = %d, want 1", b.valid)
	}
	for i, want := range []int{60, 61} {
		if _, n := r.slot(0, 1+i); int(n) != want {
			t.Errorf("slot %d length %d, want %d", 1+i, n, want)
		}
	}
}

func TestReceiveRingChoiceAndBigChunks(t *testing.T) {
	r := newRig(t, 1)
	r.open(9000) // small_bytes 1518, big buffers are 4096-byte pages
	sizes := []int{1518, 1519, 9018}
	for _, n := range sizes {
		r.port.Inject(testFrame(testMAC, n))
	}
	// 1518 fits the small ring; 1519 takes one big buffer (1521 bytes with
	// the pad); 9018 takes three pages.
	mem := r.ram.Bytes()
	if got := mem[bufAddr(0, false, 0)+abi.RxPad:][:1518]; !bytes.Equal(got, testFrame(testMAC, 1518)) {
		t.Error("1518-byte frame not in the small ring")
	}
	if got := mem[bufAddr(0, true, 0)+abi.RxPad:][:1519]; !bytes.Equal(got, testFrame(testMAC, 1519)) {
		t.Error("1519-byte frame not in big buffer 0")
	}
	big := testFrame(testMAC, 9018)
	var gathered []byte
	stream := -abi.RxPad
	for j := 1; j <= 3; j++ {
		b := mem[bufAddr(0, true, j):][:4096]
		lo, hi := max(stream, 0), min(stream+4096, len(big))
		gathered = append(gathered, b[lo-stream:hi-stream]...)
		stream += 4096
	}
	if !bytes.Equal(gathered, big) {
		t.Error("jumbo frame not chunked across big buffers 1..3 as pad+frame")
	}
	if got := r.nic.slices[0].rx[ringBig].consumed; got != 4 {
		t.Errorf("big ring consumed %d buffers, want 4", got)
	}
	for i, want := range sizes {
		if _, n := r.slot(0, i); int(n) != want {
			t.Errorf("slot %d length %d, want %d (one slot per frame)", i, n, want)
		}
	}
}

func TestReceiveDropsAndFilter(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.port.Inject(testFrame("02:00:00:00:00:77", 60)) // another host's unicast
	r.port.Inject(testFrame(testMAC, 1519))           // longer than SET_MTU
	r.port.Inject(testFrame(testMAC, 10))             // runt
	if got, _ := r.irq.Take(); len(got) != 0 {
		t.Fatalf("interrupt %v for dropped frames", got)
	}
	if s := r.nic.Stats(); s.RxDropped != 3 || s.RxFrames != 0 {
		t.Errorf("RxDropped %d RxFrames %d, want 3 and 0", s.RxDropped, s.RxFrames)
	}
	r.mustCmd(abi.CmdEnablePromisc, 0, 0, 0)
	r.port.Inject(testFrame("02:00:00:00:00:77", 60))
	if got, _ := r.irq.Take(); !cmp.Equal(got, []int{0}) {
		t.Errorf("promiscuous receive raised %v, want [0]", got)
	}
	if b := r.block(0); b.unicastFiltered != 1 {
		t.Errorf("dropped_unicast_filtered = %d, want 1", b.unicastFiltered)
	}
}

func TestReceiveWithoutBuffers(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.receiveSmall(rxRingEntries) // the small ring used up
	r.irq.Take()
	// Small frames with nowhere to go wait in the slice's FIFO, the big
	// ring never used instead, and so does a big frame behind them (one
	// FIFO, as the board's packet buffer); once it is full the next frame
	// is dropped for lack of a small buffer.
	var waiting [][]byte
	for i := 0; i < rxHoldFrames-1; i++ {
		f := testFrame(testMAC, 60)
		f[20] = byte(i)
		waiting = append(waiting, f)
		r.port.Inject(f)
	}
	big := testFrame(testMAC, 200)
	waiting = append(waiting, big)
	r.port.Inject(big)
	r.port.Inject(testFrame(testMAC, 60))
	s := r.nic.slices[0]
	if s.rx[ringSmall].avail() != 0 || s.rx[ringBig].consumed != 0 || s.hold.n != rxHoldFrames {
		t.Fatalf("small avail %d, big consumed %d, %d held; want 0, 0, %d", s.rx[ringSmall].avail(), s.rx[ringBig].consumed, s.hold.n, rxHoldFrames)
	}
	if got, _ := r.irq.Take(); len(got) != 0 {
		t.Errorf("frames that only wait raised %v", got)
	}
	if st := r.nic.Stats(); st.RxHeld != rxHoldFrames || st.RxDropped != 1 {
		t.Errorf("RxHeld %d, RxDropped %d; want %d and 1", st.RxHeld, st.RxDropped, rxHoldFrames)
	}
	// Buffers posted: the waiting frames land in order, as far as they
	// go, and the interrupt's block counts the drop.
	for g := 0; g < rxHoldFrames/abi.RecvGroup; g++ {
		r.postGroup(0, false, g)
	}
	if got, _ := r.irq.Take(); !cmp.Equal(got, []int{0}) {
		t.Fatalf("posting raised %v, want [0]", got)
	}
	if b := r.block(0); b.noSmall != 1 {
		t.Errorf("dropped_no_small_buffer = %d, want 1", b.noSmall)
	}
	for i, f := range waiting {
		slot := rxRingEntries + i
		if _, n := r.slot(0, slot); int(n) != len(f) {
			t.Errorf("rx_done slot %d has length %d, want %d", slot, n, len(f))
		}
		addr := bufAddr(0, false, i)
		if i == len(waiting)-1 {
			addr = bufAddr(0, true, 0)
		}
		if got := r.ram.Bytes()[addr+abi.RxPad : addr+abi.RxPad+uint64(len(f))]; !bytes.Equal(got, f) {
			t.Errorf("frame %d is not in its buffer", i)
		}
	}
	if s.hold.n != 0 || s.rx[ringSmall].avail() != 1 {
		t.Errorf("%d still held, %d small buffers left; want 0 and 1", s.hold.n, s.rx[ringSmall].avail())
	}
}

func TestHeldFramesDiscarded(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.receiveSmall(rxRingEntries + 3) // 3 held
	if n := r.nic.slices[0].hold.n; n != 3 {
		t.Fatalf("%d held, want 3", n)
	}
	// Stopping the data path forgets them: they count as drops, and
	// buffers posted after a restart see only new frames.
	r.mustCmd(abi.CmdEthernetDown, 0, 0, 0)
	if st := r.nic.Stats(); r.nic.slices[0].hold.n != 0 || st.RxDropped != 3 || st.RxFrames != rxRingEntries {
		t.Errorf("after ETHERNET_DOWN: %d held, RxDropped %d, RxFrames %d", r.nic.slices[0].hold.n, st.RxDropped, st.RxFrames)
	}
}

func TestHeldFramesDroppedByHalt(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.receiveSmall(rxRingEntries + 3) // 3 held
	// The buffers posted for them are outside guest RAM: the first held
	// frame's DMA aborts, the slice halts, and every held frame is
	// dropped once.
	r.postGroupOf(0, false, 0, func(e int) uint64 { return 1<<40 + uint64(e)*4096 })
	s := r.nic.slices[0]
	st := r.nic.Stats()
	if !s.halted || s.hold.n != 0 || st.RxDropped != 3 || st.DMAErrors != 1 {
		t.Errorf("halted %v, %d held, RxDropped %d, DMAErrors %d; want true, 0, 3, 1", s.halted, s.hold.n, st.RxDropped, st.DMAErrors)
	}
	// The FIFO is whole again after the driver's reset.
	r.irq.Take()
	r.open(1500)
	r.port.Inject(testFrame(testMAC, 60))
	if st := r.nic.Stats(); st.RxFrames != rxRingEntries+1 || s.hold.n != 0 {
		t.Errorf("after reset: RxFrames %d, %d held", st.RxFrames, s.hold.n)
	}
}

func TestReceivePostingRules(t *testing.T) {
	r := newRig(t, 1)
	r.mustCmd(abi.CmdReset, 0, 0, 0)
	r.postGroup(0, false, 1) // group 0 must come first
	if got := r.nic.slices[0].rx[ringSmall].posted; got != 0 {
		t.Errorf("out-of-order group posted %d buffers", got)
	}
	r.postGroup(0, false, 0)
	r.postGroup(0, false, 1)
	if got := r.nic.slices[0].rx[ringSmall].posted; got != 16 {
		t.Errorf("posted %d, want 16", got)
	}
	if s := r.nic.Stats(); s.GuestErrors != 1 {
		t.Errorf("GuestErrors = %d, want 1", s.GuestErrors)
	}
}

func TestLinkEvents(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.port.SetLink(false)
	if got, _ := r.irq.Take(); !cmp.Equal(got, []int{0}) {
		t.Fatalf("carrier loss raised %v", got)
	}
	if b := r.block(0); b.linkUp != abi.LinkDown || b.linkDown != 0 || b.valid != 2 {
		t.Errorf("carrier loss block %+v: want link_up 0, link_down 0, valid 2", b)
	}
	r.claim(0, true)
	r.port.SetLink(true)
	if b := r.block(0); b.linkUp != abi.LinkUp {
		t.Errorf("carrier back: link_up %d", b.linkUp)
	}
	r.claim(0, true)
	r.mustCmd(abi.CmdEthernetDown, 0, 0, 0)
	if got, _ := r.irq.Take(); len(got) != 2 {
		t.Fatalf("raised %v, want the carrier-up and the down interrupts", got)
	}
	if b := r.block(0); b.linkDown != 1 || b.linkUp != abi.LinkDown || b.valid != 2 {
		t.Errorf("ETHERNET_DOWN block %+v: want link_down 1, link_up 0, valid 2", b)
	}
}

func TestCoalescingDelay(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.put32(intrCoalOff, 200_000) // 200 ms between interrupts
	r.claim(0, false)
	r.port.Inject(testFrame(testMAC, 60))
	first, _ := r.irq.Take()
	r.claim(0, true)
	r.claim(0, false)
	r.port.Inject(testFrame(testMAC, 60))
	if got, _ := r.irq.Take(); len(first)+len(got) > 1 {
		t.Fatalf("two interrupts within the coalescing delay: %v then %v", first, got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := r.irq.Take(); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deferred interrupt never came")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := r.nic.Stats(); s.Interrupts < 2 {
		t.Errorf("Interrupts = %d", s.Interrupts)
	}
}

func TestDMAAbortHaltsSlice(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	// Point the next small buffer outside guest RAM.
	r.nic.mu.Lock()
	next := r.nic.slices[0].rx[ringSmall].consumed % rxRingEntries
	r.nic.mu.Unlock()
	e := smallRingOff(0) + uint64(next)*abi.RecvDescSize
	r.put32(e, 0x7F)
	r.port.Inject(testFrame(testMAC, 60))
	s := r.nic.Stats()
	if s.DMAErrors != 1 || s.RxDropped != 1 {
		t.Errorf("DMAErrors %d RxDropped %d, want 1 and 1", s.DMAErrors, s.RxDropped)
	}
	if !r.nic.slices[0].halted {
		t.Fatal("slice not halted after a DMA abort")
	}
	if !strings.Contains(r.logs.String(), "DMA abort") {
		t.Error("no log line for the DMA abort")
	}
	r.mustCmd(abi.CmdReset, 0, 0, 0)
	if r.nic.slices[0].halted {
		t.Error("CMD_RESET did not clear the halt")
	}
}

func TestVendorCapReadWindow(t *testing.T) {
	r := newRig(t, 1)
	v := &r.nic.vendor
	v.rebootStatus = 0xCAFE
	v.WriteConfig(vendorOffMode, []byte{vendorModeRead})
	v.WriteConfig(vendorOffAddr, []byte{0xF0, 0xFF, 0xFF, 0xFF})
	p := make([]byte, 4)
	v.ReadConfig(vendorOffData, p)
	if got := binary.LittleEndian.Uint32(p); got != 0xCAFE {
		t.Errorf("REBOOT_STATUS read %#x, want 0xcafe", got)
	}
}

func TestSteeringSpreadsFlows(t *testing.T) {
	r := newRig(t, 4)
	r.nic.mu.Lock()
	r.nic.fw.numSlices = 4
	r.nic.mu.Unlock()
	seen := map[int]bool{}
	for port := 0; port < 64; port++ {
		f := testFrame(testMAC, 60)
		clear(f[14:34]) // an IPv4 header: no options, not a fragment
		f[14] = 0x45
		f[14+9] = 6
		binary.BigEndian.PutUint16(f[34:], uint16(40000+port))
		s1, s2 := r.nic.steerLocked(f), r.nic.steerLocked(f)
		if s1 != s2 {
			t.Fatal("one flow steered to two slices")
		}
		seen[s1.idx] = true
	}
	if len(seen) != 4 {
		t.Errorf("64 flows used slices %v, want all 4", seen)
	}
}

// RSS hashes ports only where a valid IPv4 header says they are: an IHL
// below 5 words (20 bytes) or past the frame makes the frame opaque (hash
// 0, the slice of non-IP frames) instead of hashing bytes of the IP
// header as if they were ports.
func TestFlowHashIPv4HeaderLength(t *testing.T) {
	ipv4TCP := func(ihl byte, srcPort uint16) []byte {
		f := testFrame(testMAC, 74)
		clear(f[14:74])
		f[14] = 0x40 | ihl
		f[14+9] = 6
		copy(f[14+12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		l4 := 14 + 4*int(ihl)
		if l4+2 <= len(f) {
			binary.BigEndian.PutUint16(f[l4:], srcPort)
		}
		return f
	}
	if h1, h2 := flowHash(ipv4TCP(5, 40000)), flowHash(ipv4TCP(5, 40001)); h1 == 0 || h1 == h2 {
		t.Errorf("valid IPv4/TCP: hashes %#x and %#x for two source ports, want distinct and nonzero", h1, h2)
	}
	for _, ihl := range []byte{0, 1, 4, 15} {
		if ihl == 15 {
			// 60 bytes of header in a 60-byte IP packet fits; cut the
			// frame so it does not.
			if h := flowHash(ipv4TCP(ihl, 1)[:14+59]); h != 0 {
				t.Errorf("IHL 15 in a 59-byte packet: hash %#x, want 0", h)
			}
			continue
		}
		if h := flowHash(ipv4TCP(ihl, 40000)); h != 0 {
			t.Errorf("IHL %d: hash %#x, want 0 (not a valid IPv4 header)", ihl, h)
		}
	}
}

func TestNewValidates(t *testing.T) {
	mac, _ := net.ParseMAC(testMAC)
	bcast, _ := net.ParseMAC("ff:ff:ff:ff:ff:ff")
	port := fabrictest.NewPort(1)
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetOutput(io.Discard)
	for _, c := range []Config{
		{MAC: bcast, Slices: 1, Port: port},
		{MAC: mac[:5], Slices: 1, Port: port},
		{MAC: mac, Slices: 0, Port: port},
		{MAC: mac, Slices: 33, Port: port},
		{MAC: mac, Slices: 1},
	} {
		c.Log = log
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}

// The detach log line carries every counter: it is how a supervisor of
// myriemu serve (the e2e tests) reads them.
func TestDetachLogsCounters(t *testing.T) {
	r := newRig(t, 1)
	r.open(1500)
	r.nic.Deliver([][]byte{testFrame(testMAC, 100)})
	r.claim(0, false) // NAPI done and the end of the ISR: tokens home
	r.claim(0, true)
	r.mustCmd(abi.CmdEthernetDown, 0, 0, 0)
	want := r.nic.Stats()
	r.nic.Detach()
	var line string
	for _, l := range strings.Split(r.logs.String(), "\n") {
		if strings.Contains(l, `msg="NIC detached"`) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no detach line in:\n%s", r.logs)
	}
	for _, kv := range []string{
		fmt.Sprintf("commands=%d ", want.Commands),
		fmt.Sprintf("rx_frames=%d ", want.RxFrames),
		fmt.Sprintf("rx_bytes=%d ", want.RxBytes),
		fmt.Sprintf("interrupts=%d ", want.Interrupts),
		"guest_errors=0 ", "dma_errors=0 ", "link_up_events=1 ", "link_down_events=1 ",
	} {
		if !strings.Contains(line+" ", kv) {
			t.Errorf("detach line lacks %q: %s", kv, line)
		}
	}
	if want.RxFrames != 1 || want.Commands == 0 {
		t.Errorf("stats %+v: want one frame received and some commands", want)
	}
}

// A detached NIC holds pci.DetachedHost: a command still runs, but its
// response DMA aborts (counted) and nothing reaches the old host.
func TestDetachedNICTouchesNothing(t *testing.T) {
	r := newRig(t, 1)
	r.nic.Detach()
	before := r.nic.Stats()
	binary.BigEndian.PutUint32(r.ram.Bytes()[respAddr+4:], uint32(abi.StatusNoResponse))
	var blk [abi.BlockSize]byte
	binary.BigEndian.PutUint32(blk[abi.CmdOffCmd:], uint32(abi.CmdGetRxRingSize))
	binary.BigEndian.PutUint32(blk[abi.CmdOffRespLo:], respAddr)
	r.write(abi.OffCmd, blk[:])
	after := r.nic.Stats()
	if after.Commands != before.Commands+1 || after.DMAErrors != before.DMAErrors+1 {
		t.Errorf("commands %d -> %d, DMA errors %d -> %d; want one more of each",
			before.Commands, after.Commands, before.DMAErrors, after.DMAErrors)
	}
	if st := abi.Status(r.ramBE32(respAddr + 4)); st != abi.StatusNoResponse {
		t.Errorf("response written to the old host's memory: %v", st)
	}
	if got, _ := r.irq.Take(); got != nil {
		t.Errorf("raised %v on the old host", got)
	}
}
