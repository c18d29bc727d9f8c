package main

import (
	"flag"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// pingStats is busybox ping's summary.
type pingStats struct {
	Transmitted, Received, Duplicates int
	LossPercent                       int
	MinMS, AvgMS, MaxMS               float64
	HaveRTT                           bool
}

var (
	pingCountsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received, (?:\+(\d+) duplicates, )?(\d+)% packet loss`)
	pingRTTRE    = regexp.MustCompile(`round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms`)
)

// parsePing reads the summary lines busybox ping prints at its end.
func parsePing(out string) (pingStats, error) {
	var s pingStats
	m := pingCountsRE.FindStringSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("no ping summary in %q", out)
	}
	s.Transmitted, _ = strconv.Atoi(m[1])
	s.Received, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		s.Duplicates, _ = strconv.Atoi(m[3])
	}
	s.LossPercent, _ = strconv.Atoi(m[4])
	if r := pingRTTRE.FindStringSubmatch(out); r != nil {
		s.MinMS, _ = strconv.ParseFloat(r[1], 64)
		s.AvgMS, _ = strconv.ParseFloat(r[2], 64)
		s.MaxMS, _ = strconv.ParseFloat(r[3], 64)
		s.HaveRTT = true
	}
	return s, nil
}

func (s pingStats) String() string {
	return fmt.Sprintf("transmitted=%d received=%d duplicates=%d loss=%d%% rtt_min_ms=%.3f rtt_avg_ms=%.3f rtt_max_ms=%.3f",
		s.Transmitted, s.Received, s.Duplicates, s.LossPercent, s.MinMS, s.AvgMS, s.MaxMS)
}

// cmdPing waits (up to -wait) until -to answers one ping, then sends
// -count pings -interval apart with busybox ping. Result ping:LABEL, pass
// if every one was answered once.
func cmdPing(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	to := fs.String("to", "", "peer IP address")
	count := fs.Int("count", 100, "pings to send")
	interval := fs.String("interval", "0.1", "seconds between pings (busybox ping -i)")
	wait := fs.Duration("wait", 2*time.Minute, "how long the peer may take to answer a first ping")
	label := fs.String("label", "", "result name suffix (default: the address)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *to == "" || *count < 1 {
		return usageErr("ping: bad arguments %q", args)
	}
	if *label == "" {
		*label = *to
	}
	name := "ping:" + *label
	start := time.Now()
	for {
		if exec.Command("ping", "-c", "1", "-W", "1", *to).Run() == nil {
			break
		}
		if time.Since(start) > *wait {
			p.Failf(name, "%s did not answer a ping within %v", *to, *wait)
			return nil
		}
	}
	waited := time.Since(start)
	out, err := exec.Command("ping", "-c", strconv.Itoa(*count), "-i", *interval, "-W", "5", *to).CombinedOutput()
	s, perr := parsePing(string(out))
	if perr != nil {
		p.Failf(name, "ping: %v (%v)", perr, err)
		return nil
	}
	detail := fmt.Sprintf("%s waited=%.2fs", s, waited.Seconds())
	if s.Transmitted != *count || s.Received != *count || s.Duplicates != 0 || s.LossPercent != 0 {
		p.Failf(name, "%s", detail)
		return nil
	}
	p.Passf(name, "%s", detail)
	return nil
}
