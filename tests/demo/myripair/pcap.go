package myripair

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// Pcap is what tshark sees in a capture of the emulated wire.
type Pcap struct {
	Frames int
	// ICMP echo requests and replies by direction "src>dst".
	EchoRequests, EchoReplies map[string]int
	// TCP segments and payload bytes by direction.
	TCPSegments, TCPBytes map[string]int
	ARP                   int
	// Checksums tshark verified as bad (IPv4 header, TCP); 0 on a good
	// wire: the device computes what the driver offloads.
	BadIPChecksums, BadTCPChecksums int
	// Checksums tshark verified as good.
	GoodTCPChecksums int
}

// tsharkFields are the columns ReadPcap asks tshark for.
var tsharkFields = []string{"ip.src", "ip.dst", "icmp.type", "tcp.len", "ip.checksum.status", "tcp.checksum.status", "arp.opcode"}

// ReadPcap runs tshark on path, with IP and TCP checksum validation on.
func ReadPcap(ctx context.Context, path string) (Pcap, error) {
	args := []string{"-r", path, "-n", "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=,", "-E", "occurrence=f"}
	for _, f := range tsharkFields {
		args = append(args, "-e", f)
	}
	cmd := exec.CommandContext(ctx, "tshark", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Pcap{}, fmt.Errorf("tshark -r %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return parseTshark(string(out))
}

// parseTshark reads tshark's field lines (tsharkFields, comma-separated).
func parseTshark(out string) (Pcap, error) {
	p := Pcap{EchoRequests: map[string]int{}, EchoReplies: map[string]int{}, TCPSegments: map[string]int{}, TCPBytes: map[string]int{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) != len(tsharkFields) {
			return p, fmt.Errorf("tshark line %q: %d fields, want %d", sc.Text(), len(f), len(tsharkFields))
		}
		p.Frames++
		dir := f[0] + ">" + f[1]
		switch f[2] {
		case "8":
			p.EchoRequests[dir]++
		case "0":
			p.EchoReplies[dir]++
		}
		if f[3] != "" {
			n, err := strconv.Atoi(f[3])
			if err != nil {
				return p, fmt.Errorf("tshark line %q: tcp.len: %v", sc.Text(), err)
			}
			p.TCPSegments[dir]++
			p.TCPBytes[dir] += n
		}
		// Wireshark's checksum status: 0 bad, 1 good, 2 unverified.
		if f[4] == "0" {
			p.BadIPChecksums++
		}
		switch f[5] {
		case "0":
			p.BadTCPChecksums++
		case "1":
			p.GoodTCPChecksums++
		}
		if f[6] != "" {
			p.ARP++
		}
	}
	return p, sc.Err()
}
