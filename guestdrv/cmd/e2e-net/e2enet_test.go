package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/myriemu/myriemu/guestdrv/result"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseInterrupts(t *testing.T) {
	lines, err := parseInterrupts(readTestdata(t, "interrupts-4slices.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 10 {
		t.Fatalf("%d numbered lines, want 10: %+v", len(lines), lines)
	}
	want := irqLine{IRQ: 24, Counts: []uint64{0}, Chip: "PCI-MSI-0000:00:02.0", HWIRQ: "0-edge", Names: []string{"PCIe PME", "pciehp"}}
	if diff := cmp.Diff(want, lines[5]); diff != "" {
		t.Errorf("shared IRQ line (-want +got):\n%s", diff)
	}
	irqs := ifaceIRQs(lines, "eth0")
	if len(irqs) != 4 || irqs["eth0:slice-2"].IRQ != 27 || irqs["eth0:slice-2"].Total() != 89 {
		t.Errorf("eth0's IRQs: %+v", irqs)
	}

	two, err := parseInterrupts(readTestdata(t, "interrupts-msi-2cpu.txt"))
	if err != nil {
		t.Fatal(err)
	}
	irqs = ifaceIRQs(two, "eth0")
	if len(irqs) != 1 || irqs["eth0"].Total() != 123 {
		t.Errorf("MSI eth0 on 2 CPUs: %+v (eth10 must not match)", irqs)
	}
}

func TestParseInterruptsRejectsGarbage(t *testing.T) {
	for _, text := range []string{
		"",
		" 25: 12 PCI-MSIX 0-edge eth0\n", // no header
		"  CPU0 CPU1\n 25: 12 PCI-MSIX 0-edge eth0\n", // a count missing
		"  CPU0\n 25: x PCI-MSIX 0-edge eth0\n",
	} {
		if _, err := parseInterrupts(text); err == nil {
			t.Errorf("parseInterrupts(%q) accepted", text)
		}
	}
}

func TestSliceCheck(t *testing.T) {
	lines, err := parseInterrupts(readTestdata(t, "interrupts-4slices.txt"))
	if err != nil {
		t.Fatal(err)
	}
	irqs := ifaceIRQs(lines, "eth0")
	detail, err := sliceCheck(irqs, map[string]uint64{"eth0:slice-0": 1000}, "eth0", 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := "slice0=irq25:234 slice1=irq26:567 slice2=irq27:89 slice3=irq28:1011"; detail != want {
		t.Errorf("detail %q, want %q", detail, want)
	}
	// A slice that took nothing since the base fails, naming it.
	if _, err := sliceCheck(irqs, map[string]uint64{"eth0:slice-2": 89}, "eth0", 4); err == nil ||
		!strings.Contains(err.Error(), "eth0:slice-2 (IRQ 27) took no interrupt") {
		t.Errorf("idle slice: %v", err)
	}
	// Fewer or more vectors than slices fail.
	if _, err := sliceCheck(irqs, nil, "eth0", 8); err == nil || !strings.Contains(err.Error(), "eth0:slice-7 has no IRQ") {
		t.Errorf("8 slices wanted: %v", err)
	}
	if _, err := sliceCheck(irqs, nil, "eth0", 2); err == nil || !strings.Contains(err.Error(), "unexpected eth0:slice-3") {
		t.Errorf("2 slices wanted: %v", err)
	}
	// MSI is not one vector per slice.
	two, _ := parseInterrupts(readTestdata(t, "interrupts-msi-2cpu.txt"))
	if _, err := sliceCheck(ifaceIRQs(two, "eth0"), nil, "eth0", 1); err == nil {
		t.Error("an MSI interface passed as one MSI-X slice")
	}
}

func TestParseStrings(t *testing.T) {
	data := make([]byte, 3*gstringLen)
	copy(data, "rx_packets")
	copy(data[gstringLen:], "read_dma_bw_MBs")
	copy(data[2*gstringLen:], strings.Repeat("x", gstringLen)) // no NUL: all 32 bytes
	got, err := parseStrings(data, 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"rx_packets", "read_dma_bw_MBs", strings.Repeat("x", 32)}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := parseStrings(data, 4); err == nil {
		t.Error("4 strings from a block of 3 accepted")
	}
}

func TestStatsAndDMA(t *testing.T) {
	names := []string{"rx_packets", "read_dma_bw_MBs", "write_dma_bw_MBs", "read_write_dma_bw_MBs",
		"----------- slice ---------", "rx_packets"}
	data := make([]byte, len(names)*8)
	for i, v := range []uint64{7, 1024, 2048, 3072, 0, 99} {
		ne.PutUint64(data[i*8:], v)
	}
	stats, err := pairStats(names, data, len(names))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := lookupStat(stats, "rx_packets"); v != 7 {
		t.Errorf("rx_packets = %d, want the device's 7, not the slice's", v)
	}
	if got := formatStats(stats); got != "rx_packets=7 read_dma_bw_MBs=1024 write_dma_bw_MBs=2048 read_write_dma_bw_MBs=3072" {
		t.Errorf("formatStats = %q", got)
	}
	if _, err := pairStats(names, data, 5); err == nil {
		t.Error("5 values for 6 names accepted")
	}
}

func TestFeatures(t *testing.T) {
	names := make([]string, 40)
	names[0] = "tx-scatter-gather"
	names[16] = "tx-tcp-segmentation"
	names[33] = "tx-tcp6-segmentation"
	blocks := make([]byte, 2*16)
	ne.PutUint32(blocks[0:], 1<<0|1<<16)     // available
	ne.PutUint32(blocks[8:], 1<<16)          // active
	ne.PutUint32(blocks[16+12:], 1<<(33-32)) // never changed
	f, err := parseFeatures(names, blocks)
	if err != nil {
		t.Fatal(err)
	}
	if got := f["tx-tcp-segmentation"]; !got.Available || !got.Active || got.Requested {
		t.Errorf("tx-tcp-segmentation %+v", got)
	}
	if got := f["tx-tcp6-segmentation"]; got.Available || !got.NeverChanged {
		t.Errorf("tx-tcp6-segmentation %+v", got)
	}
	b, err := sfeaturesRequest(names, map[string]bool{"tx-tcp-segmentation": false, "tx-tcp6-segmentation": true})
	if err != nil {
		t.Fatal(err)
	}
	if ne.Uint32(b) != 0x3b || ne.Uint32(b[4:]) != 2 {
		t.Errorf("header: cmd %#x size %d", ne.Uint32(b), ne.Uint32(b[4:]))
	}
	// Block 0: valid bit 16, requested 0; block 1: valid and requested bit 1.
	if ne.Uint32(b[8:]) != 1<<16 || ne.Uint32(b[12:]) != 0 || ne.Uint32(b[16:]) != 2 || ne.Uint32(b[20:]) != 2 {
		t.Errorf("blocks % x", b[8:])
	}
	if _, err := sfeaturesRequest(names, map[string]bool{"no-such": true}); err == nil {
		t.Error("unknown feature accepted")
	}
}

// TestEchoSeries: the summary of a series, and the replies busybox ping
// would have counted lost for arriving more than max(1 s, 2 x tmax) after
// the last request.
func TestEchoSeries(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newEchoSeries(6)
	for i := range 6 {
		s.sent[i] = t0.Add(time.Duration(i) * 50 * time.Millisecond)
	}
	last := s.sent[5]
	s.reply(0, s.sent[0].Add(2*time.Millisecond))
	s.reply(0, s.sent[0].Add(3*time.Millisecond)) // duplicate
	s.reply(1, s.sent[1].Add(400*time.Millisecond))
	s.reply(3, last.Add(1500*time.Millisecond)) // after busybox's 1 s
	s.reply(4, last.Add(900*time.Millisecond))
	s.reply(9, last) // never sent: ignored
	got := s.summary()
	want := pingSummary{Transmitted: 6, Received: 4, Duplicates: 1, LossPercent: 33,
		Min: 2 * time.Millisecond, Max: 1500*time.Millisecond + 100*time.Millisecond,
		Avg:     (2 + 400 + 1600 + 950) * time.Millisecond / 4,
		Median:  (400 + 950) * time.Millisecond / 2, // of 2, 400, 950, 1600
		Slowest: []slowReply{{3, 1600 * time.Millisecond}, {4, 950 * time.Millisecond}, {1, 400 * time.Millisecond}},
		Missing: []int{2, 5}, Tail: 1500 * time.Millisecond, BusyboxLost: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if s := got.String(); !strings.Contains(s, "loss=33% ") || !strings.Contains(s, "missing=2,5 ") || !strings.Contains(s, "rtt_median_ms=675.000 ") ||
		!strings.Contains(s, "slowest=3:1600.0,4:950.0,1:400.0 ") {
		t.Errorf("detail %q", s)
	}
}

func TestSeqRanges(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{{nil, "-"}, {[]int{4}, "4"}, {[]int{9, 3, 4, 5, 7}, "3-5,7,9"}} {
		if got := seqRanges(c.in); got != c.want {
			t.Errorf("seqRanges(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestEchoPacket(t *testing.T) {
	req := echoRequest(0x1234, 299)
	if icmpChecksum(req) != 0 {
		t.Errorf("request checksum does not verify: % x", req[:8])
	}
	if _, ok := parseEchoReply(req, 0x1234); ok {
		t.Error("an echo request parsed as a reply")
	}
	if seq, ok := parseEchoRequest(req); !ok || seq != 299 {
		t.Errorf("request: seq %d, %v", seq, ok)
	}
	rep := append([]byte(nil), req...)
	rep[0] = icmpEchoReply
	if seq, ok := parseEchoReply(rep, 0x1234); !ok || seq != 299 {
		t.Errorf("reply: seq %d, %v", seq, ok)
	}
	if _, ok := parseEchoReply(rep, 0x4321); ok {
		t.Error("another id's reply accepted")
	}
	if _, ok := parseEchoRequest(rep); ok {
		t.Error("an echo reply parsed as a request")
	}
}

func TestParseKmsg(t *testing.T) {
	m, err := parseKmsg("4,339,5140900,-;myri10ge 0000:01:00.0: via hotplug\n SUBSYSTEM=pci\n DEVICE=+pci:0000:01:00.0\n")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(kmsg{Level: 4, Seq: 339, Usec: 5140900, Text: "myri10ge 0000:01:00.0: via hotplug"}, m); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if m, _ := parseKmsg("30,1,2,-;x"); m.Level != 6 {
		t.Errorf("facility 3 level 6: got level %d", m.Level)
	}
	for _, bad := range []string{"no semicolon", "4,x,1,-;t", "4,1;t"} {
		if _, err := parseKmsg(bad); err == nil {
			t.Errorf("parseKmsg(%q) accepted", bad)
		}
	}
}

func rec(level int, text string) kmsg { return kmsg{Level: level, Text: text} }

func TestClassifyDmesg(t *testing.T) {
	const dev = "myri10ge 0000:01:00.0: "
	log := []kmsg{
		rec(4, "tsc: Unable to calibrate against PIT"), // boot: before the driver, not judged
		rec(6, "myri10ge: Version 1.5.3-1.534"),
		rec(6, dev+"firmware: failed to load myri10ge_eth_z8e.dat (-2)"),
		rec(4, dev+"Direct firmware load for myri10ge_eth_z8e.dat failed with error -2"),
		rec(3, dev+"Unable to load myri10ge_eth_z8e.dat firmware image via hotplug"),
		rec(4, dev+"hotplug firmware loading failed"),
		rec(6, dev+"Successfully adopted running firmware"),
		rec(4, dev+"Using firmware currently running on NIC.  For optimal"),
		rec(4, dev+"performance consider loading optimized firmware"),
		rec(4, dev+"via hotplug"),
		rec(6, dev+"MSI IRQ 25, tx bndry 2048, fw adopted, MTRR Disabled, WC Enabled"),
		rec(6, "myri10ge 0000:01:00.0 eth0: link up"),
	}
	v := classify(log, true)
	if len(v.Bad) != 0 || len(v.Scope) != 11 || len(v.Before) != 1 {
		t.Errorf("adopt path: bad %v, scope %d lines, before %v", v.Bad, len(v.Scope), v.Before)
	}
	if v.Allowed["via hotplug"] != 1 || v.Allowed["firmware: failed to load myri10ge_eth_z8e.dat (-2)"] != 1 {
		t.Errorf("allowed %v", v.Allowed)
	}
	// Without -adopt every one of those lines is bad.
	if v := classify(log, false); len(v.Bad) != 7 {
		t.Errorf("firmware-file check: %d bad lines, want the 7 adopt-path lines: %v", len(v.Bad), v.Bad)
	}
	// Anything else is bad even with -adopt: other text, other levels, a
	// near miss of an allowlisted line, an allowlisted text from another
	// source.
	for _, m := range []kmsg{
		rec(3, dev+"command 21 timed out, result = -1"),
		rec(6, "myri10ge 0000:01:00.0 eth0: Failed to set promisc mode"),
		rec(4, "myri10ge 0000:01:00.0: slice 0: TX stuck 1 2 3 4 5 6"),
		rec(6, dev+"never got down irq"),
		rec(4, "WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 foo"),
		rec(2, "BUG: kernel NULL pointer dereference"),
		rec(3, "eth0: hw csum failure"),
		rec(4, dev+"via hotplug "),
		rec(4, "via hotplug"),
		rec(5, "some driver: rejected: invalid argument"),
	} {
		v := classify(append(log[:2:2], m), true)
		if len(v.Bad) != 1 {
			t.Errorf("%q (level %d) not judged bad", m.Text, m.Level)
		}
	}
	if v := classify([]kmsg{rec(4, "boot warning")}, true); len(v.Scope) != 0 || len(v.Before) != 1 {
		t.Errorf("no driver line: scope %v", v.Scope)
	}
}

func TestStreamHeaderAndPayload(t *testing.T) {
	h := streamHeader(7)
	if idx, err := parseHeader(h); err != nil || idx != 7 {
		t.Errorf("parseHeader(streamHeader(7)) = %d, %v", idx, err)
	}
	if _, err := parseHeader([]byte("E2ENET00\x00\x00\x00\x07\x00\x00\x00\x00")); err == nil {
		t.Error("wrong magic accepted")
	}
	// The payload is a pure function of seed and index, whatever the
	// read sizes: that is what makes the two ends' hashes comparable.
	read := func(seed uint64, idx int, chunks ...int) []byte {
		g := payload(seed, idx)
		var out []byte
		for _, n := range chunks {
			b := make([]byte, n)
			if _, err := io.ReadFull(g, b); err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
		}
		return out
	}
	a := read(1, 0, 100000)
	if b := read(1, 0, 1, 4095, 65536, 30368); !bytes.Equal(a, b) {
		t.Error("payload depends on read sizes")
	}
	if b := read(1, 1, 100000); bytes.Equal(a, b) {
		t.Error("streams 0 and 1 are equal")
	}
	if b := read(2, 0, 100000); bytes.Equal(a, b) {
		t.Error("seeds 1 and 2 give the same stream")
	}
	// Pin the stream: a changed generator must be a deliberate change.
	if got := fmt.Sprintf("%x", sha256.Sum256(a[:64])); got != pinnedPayloadHash {
		t.Errorf("sha256 of stream (1, 0)'s first 64 bytes = %s, want %s", got, pinnedPayloadHash)
	}
}

const pinnedPayloadHash = "28a77a775bbe97d0a91119fd86e252f1370b4ec253313e94b7c83abeb3184a50"

// resultsOf parses what a Printer wrote.
func resultsOf(t *testing.T, out string) map[string]result.Result {
	t.Helper()
	c := result.ParseString(out)
	if len(c.Malformed) > 0 {
		t.Fatalf("malformed: %q", c.Malformed)
	}
	m := map[string]result.Result{}
	for _, r := range c.Results {
		m[r.Name] = r
	}
	return m
}

func field(detail, key string) string {
	for _, f := range strings.Fields(detail) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// Streams of a fixed size over loopback: each end prints the same bytes and
// hash per stream index, and the receiver pairs streams by their header
// whatever the accept order.
func TestTCPStreamsLoopback(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var rx, tx bytes.Buffer
	deadline := time.Now().Add(30 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveStreams(&result.Printer{W: &rx}, ln, serveOpts{conns: 3, want: 300000, label: "lo", deadline: deadline})
	}()
	sendStreams(&result.Printer{W: &tx}, ln.Addr().String(), sendOpts{conns: 3, size: 300000, seed: 9, label: "lo", deadline: deadline})
	<-done
	r, s := resultsOf(t, rx.String()), resultsOf(t, tx.String())
	for i := range 3 {
		n := fmt.Sprintf("/%d", i)
		got, sent := r["tcp.recv:lo"+n], s["tcp.send:lo"+n]
		if got.Status != result.Pass || sent.Status != result.Pass {
			t.Fatalf("stream %d: recv %+v send %+v", i, got, sent)
		}
		if field(got.Detail, "sha256") != field(sent.Detail, "sha256") || field(got.Detail, "bytes") != "300000" {
			t.Errorf("stream %d: recv %q, send %q", i, got.Detail, sent.Detail)
		}
	}
	if field(r["tcp.recv:lo"].Detail, "bytes") != "900000" || r["tcp.recv:lo"].Status != result.Pass {
		t.Errorf("receiver total %+v", r["tcp.recv:lo"])
	}
	// The hash is the payload's: stream 1 of seed 9.
	b := make([]byte, 300000)
	_, _ = payload(9, 1).Read(b)
	if want := fmt.Sprintf("%x", sha256.Sum256(b)); field(r["tcp.recv:lo/1"].Detail, "sha256") != want {
		t.Errorf("stream 1 hash %s, want %s", field(r["tcp.recv:lo/1"].Detail, "sha256"), want)
	}
}

// Open-ended streams stop when the receiver's stop file appears: the
// receiver sends a byte back, the sender finishes what it wrote and both
// ends agree on every byte.
func TestTCPStreamsStopFile(t *testing.T) {
	dir := t.TempDir()
	stopFile, progressFile := dir+"/stop", dir+"/rx"
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var rx, tx, grows bytes.Buffer
	deadline := time.Now().Add(30 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveStreams(&result.Printer{W: &rx}, ln, serveOpts{conns: 2, label: "open", deadline: deadline,
			stopFile: stopFile, progressFile: progressFile})
	}()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		sendStreams(&result.Printer{W: &tx}, ln.Addr().String(), sendOpts{conns: 2, seed: 3, label: "open", deadline: deadline})
	}()
	// On every way out (t.Fatal included) both ends are stopped and joined
	// before t.TempDir's cleanup removes the directory they write in.
	defer func() {
		_ = os.WriteFile(stopFile, nil, 0o644)
		<-sent
		<-done
	}()
	time.Sleep(300 * time.Millisecond)
	if err := cmdGrows(&result.Printer{W: &grows}, []string{progressFile, "10s", "-label", "rx"}); err != nil {
		t.Fatal(err)
	}
	if r := resultsOf(t, grows.String())["grows:rx"]; r.Status != result.Pass {
		t.Errorf("grows: %+v", r)
	}
	if err := os.WriteFile(stopFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	<-sent
	<-done
	r, s := resultsOf(t, rx.String()), resultsOf(t, tx.String())
	for i := range 2 {
		n := fmt.Sprintf("/%d", i)
		got, snt := r["tcp.recv:open"+n], s["tcp.send:open"+n]
		if got.Status != result.Pass || snt.Status != result.Pass || field(got.Detail, "bytes") == "0" ||
			field(got.Detail, "sha256") != field(snt.Detail, "sha256") || field(got.Detail, "bytes") != field(snt.Detail, "bytes") {
			t.Errorf("stream %d: recv %+v send %+v", i, got, snt)
		}
	}
}

// A file made with make-file, sent with -file and written with -out hashes
// the same at every step: what the demo's "move a file" shows.
func TestFileTransferLoopback(t *testing.T) {
	dir := t.TempDir()
	src, dst := dir+"/file.bin", dir+"/received.bin"
	var out bytes.Buffer
	p := &result.Printer{W: &out}
	if err := cmdMakeFile(p, []string{src, "-bytes", "200001", "-seed", "5"}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(30 * time.Second)
	var rx, tx bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveStreams(&result.Printer{W: &rx}, ln, serveOpts{conns: 1, label: "f", deadline: deadline, out: dst})
	}()
	sendStreams(&result.Printer{W: &tx}, ln.Addr().String(), sendOpts{conns: 1, label: "f", deadline: deadline, file: src})
	<-done
	if err := cmdSHA256(p, []string{dst}); err != nil {
		t.Fatal(err)
	}
	made, got := resultsOf(t, out.String())["file:file.bin"], resultsOf(t, out.String())["file:received.bin"]
	sent, recv := resultsOf(t, tx.String())["tcp.send:f/0"], resultsOf(t, rx.String())["tcp.recv:f/0"]
	want := field(made.Detail, "sha256")
	for what, r := range map[string]result.Result{"made": made, "read back": got, "sent": sent, "received": recv} {
		if r.Status != result.Pass || field(r.Detail, "sha256") != want || field(r.Detail, "bytes") != "200001" {
			t.Errorf("%s: %+v, want 200001 bytes with sha256 %s", what, r, want)
		}
	}
	if err := cmdSHA256(p, []string{dir + "/missing"}); err != nil || p.Failures != 1 {
		t.Errorf("a missing file: err %v, failures %d", err, p.Failures)
	}
}

// The helpers of a run are joined by finish: the last progress write is
// done when it returns (the writer used to outlive tcp-serve, and
// t.TempDir's cleanup then failed with "directory not empty" on a loaded
// machine), and nothing writes afterwards.
func TestWatchFinishJoins(t *testing.T) {
	dir := t.TempDir()
	progressFile := dir + "/progress"
	for i := range 20 {
		var n atomic.Uint64
		stop, finish := watch(dir+"/stop", progressFile, &n)
		n.Store(uint64(1000 + i))
		finish()
		b, err := os.ReadFile(progressFile)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(string(b)), fmt.Sprint(1000+i); got != want {
			t.Fatalf("run %d: progress file %q right after finish, want %q", i, got, want)
		}
		if closed(stop) {
			t.Fatal("stop closed without a stop file")
		}
	}
}

// grows waits for a progress file that does not exist yet, then for its
// number to grow; a number that stays put fails at the timeout.
func TestGrows(t *testing.T) {
	file := t.TempDir() + "/progress"
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cmdGrows(&result.Printer{W: &out}, []string{file, "10s", "-label", "late"})
	}()
	time.Sleep(200 * time.Millisecond)
	writeProgress(file, 5)
	time.Sleep(200 * time.Millisecond)
	writeProgress(file, 6)
	<-done
	if r := resultsOf(t, out.String())["grows:late"]; r.Status != result.Pass || field(r.Detail, "from") != "5" || field(r.Detail, "to") != "6" {
		t.Errorf("late file: %+v", r)
	}
	out.Reset()
	_ = cmdGrows(&result.Printer{W: &out}, []string{file, "200ms", "-label", "still"})
	if r := resultsOf(t, out.String())["grows:still"]; r.Status != result.Fail {
		t.Errorf("a number that stays put: %+v", r)
	}
}
