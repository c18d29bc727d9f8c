// Command demo is `make demo`: myriemu serves two emulated Myri-10G NICs on
// one emulated switch, capturing the wire, and two QEMU guests under TCG,
// one NIC each, run the unmodified Linux myri10ge driver: they ping each
// other and move a file over TCP. It tells in plain words what the guests
// saw and what tshark sees in the capture, and ends with "DEMO OK" (exit
// 0) or "DEMO FAILED" (exit 1, with the guest consoles and the server log).
//
// Run it from the repository as root after provisioning (make demo does
// both). -keep keeps consoles, logs and the pcap in tests/artifacts/demo.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

func main() {
	keep := flag.Bool("keep", false, "keep consoles, logs and the pcap in tests/artifacts/demo even on success")
	firmware := flag.Bool("firmware", false, "install the firmware file in the guests (the driver loads it instead of adopting)")
	size := flag.Int64("bytes", 16<<20, "size of the file moved")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *keep, *firmware, *size); err != nil {
		fmt.Printf("\nDEMO FAILED: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func run(ctx context.Context, keep, firmware bool, size int64) error {
	env, err := harness.NewEnv()
	if err != nil {
		return err
	}
	defer env.Close()
	dir := filepath.Join(env.Repo, "tests", "artifacts", "demo")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	ok := false
	defer func() {
		if ok && !keep {
			os.RemoveAll(dir)
		}
	}()

	say("myriemu demo: two QEMU guests, each with one emulated Myri-10G NIC served by myriemu over vfio-user,")
	say("on one emulated Ethernet switch, running the unmodified Linux myri10ge driver.")
	say("  QEMU:   %s, the %s", env.QEMUVersion, env.QEMU.Desc)
	say("  guests: Linux %s under TCG (no KVM), busybox initramfs, the distribution's myri10ge.ko", env.Rootfs.KernelABI)
	say("")
	say("Starting myriemu: NICs myri0 (00:60:dd:00:00:01) and myri1 (00:60:dd:00:00:02) on one switch,")
	say("capturing every frame to wire.pcap. Booting both guests at once:")
	say("  left  (%s, myri0) pings right, then receives a file over TCP", myripair.LeftIP)
	say("  right (%s, myri1) pings left, then makes a %s file and sends it", myripair.RightIP, mib(size))
	if firmware {
		say("  (-firmware: the guests' driver loads a firmware file and hands it off to the NIC)")
	}
	d, err := myripair.RunDemo(ctx, env, myripair.DemoOptions{Dir: dir, FileBytes: size, Firmware: firmware})
	if err != nil {
		return err
	}
	s, perr := d.Summarize(ctx)
	problems := d.Check(s)
	if perr != nil {
		problems = append(problems, perr.Error())
	}
	if d.Left.Err != nil || d.Right.Err != nil {
		fmt.Print("\n" + d.Left.Report(d.Server) + d.Right.Report())
	}
	say("  both guests powered off after %.0f s (left reached /init after %.1f s, right after %.1f s).",
		d.Elapsed.Seconds(), d.Left.BootTime.Seconds(), d.Right.BootTime.Seconds())
	say("")

	say("What the guests saw:")
	for _, r := range []*harness.Run{d.Left, d.Right} {
		driver(r, firmware)
	}
	pingLine("left", "right", s.PingLeft)
	pingLine("right", "left", s.PingRight)
	say("  right made a %s file, sha256 %s,", mib(size), short(s.Made))
	say("    and sent it over TCP in %s s (%.2f MB/s at the receiver);", myripair.Field(s.Received.Detail, "seconds"), mbps(s.Received))
	say("  left received %s bytes, sha256 %s, and read %s back from disk.",
		myripair.Field(s.Received.Detail, "bytes"), short(s.Received), short(s.ReadBack))
	say("")

	w := s.Wire
	l2r, r2l := myripair.LeftIP+">"+myripair.RightIP, myripair.RightIP+">"+myripair.LeftIP
	say("What the wire saw (tshark -r wire.pcap, %d frames):", w.Frames)
	say("  ICMP: left sent %d echo requests and right answered %d; right sent %d and left answered %d.",
		w.EchoRequests[l2r], w.EchoReplies[r2l], w.EchoRequests[r2l], w.EchoReplies[l2r])
	what := "the file and a 16-byte header"
	if extra := w.TCPBytes[r2l] - int(size) - 16; extra > 0 {
		what += fmt.Sprintf(", %d bytes of them sent again", extra)
	}
	say("  TCP:  %d segments carried %d bytes from right to left (%s),", w.TCPSegments[r2l], w.TCPBytes[r2l], what)
	say("        %d segments went back (ACKs); %d ARP frames.", w.TCPSegments[l2r], w.ARP)
	say("  checksums: tshark checked every IPv4 header and %d TCP checksums: %d bad IPv4, %d bad TCP.",
		w.GoodTCPChecksums+w.BadTCPChecksums, w.BadIPChecksums, w.BadTCPChecksums)
	say("")
	say("What the NICs counted (myriemu):")
	for _, nic := range []string{"myri0", "myri1"} {
		if c, found := s.Counters[nic]; found {
			say("  %s: %d commands, %d frames (%d bytes) sent, %d frames (%d bytes) received, %d interrupts, %d guest errors, %d DMA errors.",
				nic, c["commands"], c["tx_frames"], c["tx_bytes"], c["rx_frames"], c["rx_bytes"], c["interrupts"], c["guest_errors"], c["dma_errors"])
		}
	}
	if keep || len(problems) > 0 {
		say("Consoles, server log and pcap: %s", dir)
	}
	say("")
	if len(problems) > 0 {
		for _, p := range problems {
			say("  problem: %s", p)
		}
		return fmt.Errorf("%d problems (above); files kept in %s", len(problems), dir)
	}
	ok = true
	say("DEMO OK: two guests with the unmodified myri10ge driver pinged each other %d times each with 0%% loss and moved a %s file over TCP with matching SHA-256 on both ends; tshark shows the ICMP and TCP exchange.",
		d.Opts.Pings, mib(size))
	return nil
}

// driver says what a guest's kernel log and ethtool showed of the driver.
func driver(r *harness.Run, firmware bool) {
	probe, _ := myripair.Find(r, "dmesg:probe")
	link, _ := myripair.Find(r, "dmesg:link")
	dma, _ := myripair.Find(r, "ethtool.dma")
	clean, _ := myripair.Find(r, "dmesg.clean")
	how := "adopted the firmware running on the NIC"
	if firmware {
		how = "loaded the firmware file and handed it off to the NIC"
	}
	say("  %s: the driver %s and brought eth0 up:", r.Guest, how)
	say("    %s", dmesgText(probe))
	say("    %s", dmesgText(link))
	say("    DMA test: read %s MB/s, write %s MB/s, read+write %s MB/s (ethtool -S)",
		myripair.Field(dma.Detail, "read_dma_bw_MBs"), myripair.Field(dma.Detail, "write_dma_bw_MBs"),
		myripair.Field(dma.Detail, "read_write_dma_bw_MBs"))
	verdict := "no timeout, failure or warning line"
	if clean.Status != result.Pass {
		verdict = "PROBLEMS: " + clean.Detail
	} else if !firmware {
		verdict += " beyond the driver's own adopt-path notices"
	}
	say("    kernel log from the driver's load on: %s lines, %s", myripair.Field(clean.Detail, "lines"), verdict)
}

// dmesgText is a dmesg result's kernel line without its level.
func dmesgText(r result.Result) string {
	if r.Detail == "" {
		return "(missing)"
	}
	if i := strings.Index(r.Detail, "] "); i >= 0 {
		return "[" + strings.TrimSpace(r.Detail[strings.Index(r.Detail, "[")+1:i]) + "] " + r.Detail[i+2:]
	}
	return r.Detail
}

func pingLine(from, to string, r result.Result) {
	say("  %s pinged %s %s times: %s replies, %s loss, round trip min/avg/max %s/%s/%s ms.", from, to,
		myripair.Field(r.Detail, "transmitted"), myripair.Field(r.Detail, "received"), myripair.Field(r.Detail, "loss"),
		myripair.Field(r.Detail, "rtt_min_ms"), myripair.Field(r.Detail, "rtt_avg_ms"), myripair.Field(r.Detail, "rtt_max_ms"))
}

func short(r result.Result) string {
	s := myripair.Field(r.Detail, "sha256")
	if len(s) < 16 {
		return "(missing)"
	}
	return s[:16] + "..."
}

// mbps is a stream result's bytes per second, in MB (10^6 bytes).
func mbps(r result.Result) float64 {
	sec := myripair.FieldFloat(r.Detail, "seconds")
	if sec == 0 {
		return 0
	}
	return myripair.FieldFloat(r.Detail, "bytes") / sec / 1e6
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}
