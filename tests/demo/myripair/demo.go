package myripair

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/harness"
)

// The demo's two guests.
const (
	LeftIP  = "10.0.0.1" // receives the file
	RightIP = "10.0.0.2" // makes and sends it
)

// DemoOptions shape a demo run.
type DemoOptions struct {
	// Dir keeps the consoles (Dir/left, Dir/right), the server log and
	// the pcap (Dir/wire.pcap).
	Dir string
	// Pings each guest sends the other (default 100).
	Pings int
	// FileBytes is the size of the file moved (default 16 MiB).
	FileBytes int64
	// Firmware installs the firmware file: the driver loads and hands it
	// off instead of adopting the firmware running on the NIC.
	Firmware bool
	// LogLevel of the server (default info).
	LogLevel string
	// Timeout bounds each guest's scenario (default 5 min).
	Timeout time.Duration
}

func (o *DemoOptions) defaults() {
	if o.Pings == 0 {
		o.Pings = 100
	}
	if o.FileBytes == 0 {
		o.FileBytes = 16 << 20
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
}

// Demo is one run of the demo.
type Demo struct {
	Opts        DemoOptions
	Left, Right *harness.Run
	Server      *harness.Server
	ServerStop  error // the server's exit: nil for a clean stop
	Pcap        string
	Elapsed     time.Duration
}

// demoDMesg are the kernel log lines each guest must show.
func demoDMesg(firmware bool) string {
	if firmware {
		return "e2e-net dmesg-check -show -want probe='fw myri10ge_eth_z8e.dat' -want link='link up'"
	}
	return "e2e-net dmesg-check -show -adopt -want adopted='Successfully adopted running firmware' " +
		"-want probe='fw adopted' -want link='link up'"
}

// RunDemo starts myriemu with two Myri-10G NICs on its switch, capturing
// the wire, and boots two guests at once with the unmodified driver: each
// pings the other, then right makes a file and sends it to left over TCP,
// and left writes it to disk and hashes it back. The server is stopped
// (the pcap complete) when it returns. Check says whether it all worked.
func RunDemo(ctx context.Context, env *harness.Env, o DemoOptions) (*Demo, error) {
	o.defaults()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	d := &Demo{Opts: o, Pcap: filepath.Join(o.Dir, "wire.pcap")}
	logFile, err := os.Create(filepath.Join(o.Dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	nics := NICs(2, func(name string) string { return filepath.Join(env.Work, "demo-"+name+".sock") })
	srv, err := env.StartServer(ctx, "myriemu", ServerArgs(nics, 1, d.Pcap, o.LogLevel), 30*time.Second, logFile)
	if err != nil {
		return nil, err
	}
	d.Server = srv
	defer srv.Stop()

	pings := strconv.Itoa(o.Pings)
	left := NewScript(LeftIP).
		Step("e2e-net ping -to " + RightIP + " -count " + pings + " -interval 0.05 -wait 2m -label right").
		Step(fmt.Sprintf("e2e-net tcp-serve -port 5001 -conns 1 -bytes %d -label file -timeout 4m -out /tmp/received.bin", o.FileBytes)).
		Step("e2e-net sha256 /tmp/received.bin").
		Step("e2e-net ethtool stats eth0 -dma").
		Step(demoDMesg(o.Firmware))
	right := NewScript(RightIP).
		Step("e2e-net ping -to " + LeftIP + " -count " + pings + " -interval 0.05 -wait 2m -label left").
		Step(fmt.Sprintf("e2e-net make-file /tmp/file.bin -bytes %d -seed 2026", o.FileBytes)).
		Step("e2e-net tcp-send -to " + LeftIP + " -port 5001 -conns 1 -file /tmp/file.bin -label file -timeout 4m").
		Step("e2e-net ethtool stats eth0 -dma").
		Step(demoDMesg(o.Firmware))
	common := []string{"link:eth0", "ethtool.drvinfo", "ethtool.dma", "dmesg.clean", "dmesg:link", "dmesg:probe"}
	if !o.Firmware {
		common = append(common, "dmesg:adopted")
	}
	start := time.Now()
	runs := env.RunGuests(ctx,
		GuestSpec{Name: "left", NIC: nics[0], Script: left, Firmware: o.Firmware, Timeout: o.Timeout, Dir: filepath.Join(o.Dir, "left"),
			Require: append([]string{"ping:right", "tcp.recv:file", "file:received.bin"}, common...)}.Guest(),
		GuestSpec{Name: "right", NIC: nics[1], Script: right, Firmware: o.Firmware, Timeout: o.Timeout, Dir: filepath.Join(o.Dir, "right"),
			Require: append([]string{"ping:left", "file:file.bin", "tcp.send:file"}, common...)}.Guest(),
	)
	d.Elapsed = time.Since(start)
	d.Left, d.Right = runs[0], runs[1]
	// Both QEMUs are gone: wait for the server to log both detaches (the
	// counters), then stop it, which completes the pcap.
	waitDetached(srv, len(nics), 10*time.Second)
	d.ServerStop = srv.Stop()
	return d, nil
}

// waitDetached waits until the server logged n NIC detaches.
func waitDetached(srv *harness.Server, n int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		got := len(NICCounters(srv.Log(), "myri0")) + len(NICCounters(srv.Log(), "myri1"))
		if got >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitDetached is waitDetached for other scenarios.
func WaitDetached(srv *harness.Server, n int, limit time.Duration) { waitDetached(srv, n, limit) }

// DemoSummary is what the demo found, for printing and for checks.
type DemoSummary struct {
	PingLeft, PingRight result.Result // left's pings of right, right's of left
	Made, Sent          result.Result // right's file and its send
	Received, ReadBack  result.Result // left's receive and its hash of the file on disk
	DMALeft, DMARight   result.Result
	Counters            map[string]Counters // by NIC, the last detach
	Wire                Pcap
}

// Summarize collects the results and reads the pcap.
func (d *Demo) Summarize(ctx context.Context) (DemoSummary, error) {
	var s DemoSummary
	s.PingLeft, _ = Find(d.Left, "ping:right")
	s.PingRight, _ = Find(d.Right, "ping:left")
	s.Made, _ = Find(d.Right, "file:file.bin")
	s.Sent, _ = Find(d.Right, "tcp.send:file/0")
	s.Received, _ = Find(d.Left, "tcp.recv:file/0")
	s.ReadBack, _ = Find(d.Left, "file:received.bin")
	s.DMALeft, _ = Find(d.Left, "ethtool.dma")
	s.DMARight, _ = Find(d.Right, "ethtool.dma")
	s.Counters = map[string]Counters{}
	for _, nic := range []string{"myri0", "myri1"} {
		if c := NICCounters(d.Server.Log(), nic); len(c) > 0 {
			s.Counters[nic] = c[len(c)-1]
		}
	}
	var err error
	s.Wire, err = ReadPcap(ctx, d.Pcap)
	return s, err
}

// Check lists everything that went wrong: a guest's verdict, a ping lost,
// a hash that differs anywhere between the file made and the file read
// back, a server warning or error or unclean stop, a guest or DMA error
// the NICs counted, and a wire without the ICMP and TCP exchange (or with
// a bad checksum).
func (d *Demo) Check(s DemoSummary) []string {
	var p []string
	for _, r := range []*harness.Run{d.Left, d.Right} {
		if r.Err != nil {
			p = append(p, fmt.Sprintf("guest %s: %v", r.Guest, r.Err))
		}
	}
	n := d.Opts.Pings
	for _, pr := range []result.Result{s.PingLeft, s.PingRight} {
		if pr.Status != result.Pass || Field(pr.Detail, "received") != strconv.Itoa(n) || Field(pr.Detail, "loss") != "0%" {
			p = append(p, fmt.Sprintf("ping %s: %s %s", pr.Name, pr.Status, pr.Detail))
		}
	}
	want := Field(s.Made.Detail, "sha256")
	size := strconv.FormatInt(d.Opts.FileBytes, 10)
	for _, r := range []result.Result{s.Made, s.Sent, s.Received, s.ReadBack} {
		if r.Status != result.Pass || Field(r.Detail, "sha256") != want || Field(r.Detail, "bytes") != size || want == "" {
			p = append(p, fmt.Sprintf("file: %s %s %s, want %s bytes with sha256 %s", r.Name, r.Status, r.Detail, size, want))
		}
	}
	if d.ServerStop != nil {
		p = append(p, fmt.Sprintf("myriemu did not stop cleanly: %v", d.ServerStop))
	}
	for _, l := range Problems(d.Server.Log()) {
		p = append(p, "server: "+l)
	}
	for _, nic := range []string{"myri0", "myri1"} {
		c, ok := s.Counters[nic]
		switch {
		case !ok:
			p = append(p, "server: no counters logged for "+nic)
		case c["guest_errors"] != 0 || c["dma_errors"] != 0:
			p = append(p, fmt.Sprintf("server: %s counted %d guest errors and %d DMA errors", nic, c["guest_errors"], c["dma_errors"]))
		case d.Opts.Firmware && c["handoffs"] == 0:
			p = append(p, nic+": the driver never handed off a firmware file")
		case !d.Opts.Firmware && c["handoffs"] != 0:
			p = append(p, nic+": a firmware handoff on the adopt path")
		}
	}
	w := s.Wire
	l2r, r2l := LeftIP+">"+RightIP, RightIP+">"+LeftIP
	for _, c := range []struct {
		what string
		got  int
		min  int
	}{
		{"ICMP echo requests left to right", w.EchoRequests[l2r], n},
		{"ICMP echo replies right to left", w.EchoReplies[r2l], n},
		{"ICMP echo requests right to left", w.EchoRequests[r2l], n},
		{"ICMP echo replies left to right", w.EchoReplies[l2r], n},
		{"TCP payload bytes right to left", w.TCPBytes[r2l], int(d.Opts.FileBytes) + headerBytes},
		{"TCP segments left to right (ACKs)", w.TCPSegments[l2r], 1},
	} {
		if c.got < c.min {
			p = append(p, fmt.Sprintf("pcap: %d %s, want at least %d", c.got, c.what, c.min))
		}
	}
	if w.BadIPChecksums != 0 || w.BadTCPChecksums != 0 {
		p = append(p, fmt.Sprintf("pcap: %d bad IPv4 and %d bad TCP checksums", w.BadIPChecksums, w.BadTCPChecksums))
	}
	return p
}

// headerBytes is the stream header e2e-net sends ahead of a payload.
const headerBytes = 16
