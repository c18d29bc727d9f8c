package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// echoSeries is one run of echo requests: when each went out and how long
// its first reply took (negative: none yet).
type echoSeries struct {
	sent []time.Time
	rtt  []time.Duration
	got  []time.Time // when the first reply arrived
	dups int
}

func newEchoSeries(n int) *echoSeries {
	s := &echoSeries{sent: make([]time.Time, n), rtt: make([]time.Duration, n), got: make([]time.Time, n)}
	for i := range s.rtt {
		s.rtt[i] = -1
	}
	return s
}

// reply records a reply to seq at t; it reports whether it was the first.
func (s *echoSeries) reply(seq int, t time.Time) bool {
	if seq < 0 || seq >= len(s.sent) || s.sent[seq].IsZero() {
		return false
	}
	if s.rtt[seq] >= 0 {
		s.dups++
		return false
	}
	s.rtt[seq], s.got[seq] = t.Sub(s.sent[seq]), t
	return true
}

// pingSummary is what a series says once it is over.
type pingSummary struct {
	Transmitted, Received, Duplicates int
	LossPercent                       int
	Min, Avg, Max                     time.Duration
	Median                            time.Duration // of the replies received
	Slowest                           []slowReply   // the slowest replies, slowest first (at most 3)
	Missing                           []int         // sequence numbers never answered
	// Tail is how long after the last request the last reply came.
	Tail time.Duration
	// BusyboxLost counts the replies busybox ping -c would have counted as
	// lost: once every request is out and one reply came, it waits only
	// max(1 s, about 2 x the largest RTT so far) and ignores -W.
	BusyboxLost int
}

func (s *echoSeries) summary() pingSummary {
	var p pingSummary
	var last time.Time
	var sum time.Duration
	var byRTT []slowReply // the answered requests
	for i, t := range s.sent {
		if t.IsZero() {
			continue
		}
		p.Transmitted++
		if t.After(last) {
			last = t
		}
		if s.rtt[i] < 0 {
			p.Missing = append(p.Missing, i)
			continue
		}
		r := s.rtt[i]
		byRTT = append(byRTT, slowReply{i, r})
		if p.Received == 0 || r < p.Min {
			p.Min = r
		}
		p.Max = max(p.Max, r)
		sum += r
		p.Received++
	}
	p.Duplicates = s.dups
	if p.Received > 0 {
		p.Avg = sum / time.Duration(p.Received)
		// Slowest first; the stable sort keeps equal round trips in
		// sequence order.
		sort.SliceStable(byRTT, func(i, j int) bool { return byRTT[i].RTT > byRTT[j].RTT })
		p.Median = medianRTT(byRTT)
		p.Slowest = byRTT[:min(3, len(byRTT))]
	}
	if p.Transmitted > 0 {
		p.LossPercent = (p.Transmitted - p.Received) * 100 / p.Transmitted
	}
	// busybox: expire = tmax_us / (512*1024) seconds, at least 1, with
	// tmax over the replies received before the last request went out.
	var tmax time.Duration
	received := false
	for i, g := range s.got {
		if s.rtt[i] >= 0 && !g.After(last) {
			tmax, received = max(tmax, s.rtt[i]), true
		}
	}
	expire := time.Duration(tmax.Microseconds()/(512*1024)) * time.Second
	if expire == 0 {
		expire = time.Second
	}
	for i, g := range s.got {
		if s.rtt[i] < 0 {
			continue
		}
		p.Tail = max(p.Tail, g.Sub(last))
		if received && g.Sub(last) > expire {
			p.BusyboxLost++
		}
	}
	return p
}

// slowReply is one answered request of a series: its sequence number and
// round trip.
type slowReply struct {
	Seq int
	RTT time.Duration
}

// medianRTT is the median round trip of byRTT (sorted, any direction; not
// empty); the mean of the middle two for an even count. A few late replies
// move the average by milliseconds; the median says what a typical one
// took.
func medianRTT(byRTT []slowReply) time.Duration {
	n := len(byRTT)
	if n%2 == 1 {
		return byRTT[n/2].RTT
	}
	return (byRTT[n/2-1].RTT + byRTT[n/2].RTT) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (p pingSummary) String() string {
	return fmt.Sprintf("transmitted=%d received=%d duplicates=%d loss=%d%% rtt_min_ms=%.3f rtt_avg_ms=%.3f rtt_median_ms=%.3f rtt_max_ms=%.3f slowest=%s missing=%s tail_ms=%.0f busybox_would_lose=%d",
		p.Transmitted, p.Received, p.Duplicates, p.LossPercent, ms(p.Min), ms(p.Avg), ms(p.Median), ms(p.Max),
		p.slowestString(), seqRanges(p.Missing), ms(p.Tail), p.BusyboxLost)
}

// slowestString writes the slowest replies as seq:ms pairs; "-" for none.
func (p pingSummary) slowestString() string {
	if len(p.Slowest) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, r := range p.Slowest {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%.1f", r.Seq, ms(r.RTT))
	}
	return b.String()
}

// seqRanges writes sorted sequence numbers compactly: "3,7-9"; "-" for none.
func seqRanges(seqs []int) string {
	if len(seqs) == 0 {
		return "-"
	}
	seqs = append([]int(nil), seqs...)
	sort.Ints(seqs)
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		} else {
			fmt.Fprintf(&b, "%d", seqs[i])
		}
		i = j + 1
	}
	return b.String()
}

// ICMP echo (RFC 792).
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	echoPayload     = 56 // busybox ping's default data size
)

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8+echoPayload)
	b[0] = icmpEchoRequest
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(i)
	}
	binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
	return b
}

// parseEchoReply returns the sequence number of an echo reply with our id.
func parseEchoReply(b []byte, id uint16) (int, bool) {
	if len(b) < 8 || b[0] != icmpEchoReply || b[1] != 0 || binary.BigEndian.Uint16(b[4:]) != id {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(b[6:])), true
}

// parseEchoRequest returns the sequence number of an echo request.
func parseEchoRequest(b []byte) (int, bool) {
	if len(b) < 8 || b[0] != icmpEchoRequest || b[1] != 0 {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(b[6:])), true
}

// pinger is a raw ICMP socket talking to one peer: it sends a series of
// echo requests and hears the replies, and it also sees the peer's own
// echo requests (the kernel answers those), so that a guest can stay up
// until the peer's last one was answered.
type pinger struct {
	conn     net.PacketConn
	peer     net.IP
	id       uint16
	peerLast int // the peer's last request, seq; -1: not watched

	mu       sync.Mutex
	s        *echoSeries
	answered int
	allIn    chan struct{} // every request of s answered
	peerDone chan struct{} // the peer's request peerLast arrived

	wg sync.WaitGroup
}

// newPinger opens the socket and starts hearing; peerCount > 0 watches
// for the peer's request number peerCount-1.
func newPinger(peer net.IP, peerCount int) (*pinger, error) {
	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("ping: raw ICMP socket: %w", err)
	}
	p := &pinger{conn: conn, peer: peer, id: uint16(os.Getpid()), peerLast: peerCount - 1,
		allIn: make(chan struct{}), peerDone: make(chan struct{})}
	p.wg.Go(p.hear)
	return p, nil
}

// close stops hearing; the series is final once it returns.
func (p *pinger) close() {
	p.conn.Close()
	p.wg.Wait()
}

func (p *pinger) hear() {
	buf := make([]byte, 1500)
	peerSeen := false
	for {
		n, from, err := p.conn.ReadFrom(buf) // the IPv4 header is stripped
		now := time.Now()
		if err != nil {
			return
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(p.peer) {
			continue
		}
		if seq, ok := parseEchoRequest(buf[:n]); ok {
			if seq == p.peerLast && !peerSeen {
				peerSeen = true
				close(p.peerDone)
			}
			continue
		}
		seq, ok := parseEchoReply(buf[:n], p.id)
		if !ok {
			continue
		}
		p.mu.Lock()
		if p.s != nil && p.s.reply(seq, now) {
			p.answered++
			if p.answered == len(p.s.sent) {
				close(p.allIn)
			}
		}
		p.mu.Unlock()
	}
}

// series sends count echo requests, interval apart, and waits up to
// replyWait after the last for the replies still missing.
func (p *pinger) series(count int, interval, replyWait time.Duration) error {
	s := newEchoSeries(count)
	p.mu.Lock()
	p.s = s
	p.mu.Unlock()
	dst := &net.IPAddr{IP: p.peer}
	next := time.Now()
	for seq := range count {
		time.Sleep(time.Until(next))
		next = next.Add(interval)
		p.mu.Lock()
		s.sent[seq] = time.Now()
		p.mu.Unlock()
		if _, err := p.conn.WriteTo(echoRequest(p.id, uint16(seq)), dst); err != nil {
			return fmt.Errorf("ping: send seq %d: %w", seq, err)
		}
	}
	select {
	case <-p.allIn:
	case <-time.After(replyWait):
	}
	return nil
}

// cmdPing waits (up to -wait) until -to answers one ping (busybox ping),
// then sends -count echo requests -interval apart and waits up to
// -reply-wait after the last one for every reply. Result ping:LABEL, pass
// if every request was answered once. The detail lists the sequence
// numbers never answered, how long the last reply took after the last
// request (tail_ms), and how many replies busybox ping would have counted
// lost by giving up too early at the end (it waits max(1 s, 2 x max RTT)
// once any reply came, whatever -W says).
//
// With -peer-count N (the peer runs e2e-net ping -count N at us too) it
// then stays until the peer's last request (seq N-1) has arrived and been
// answered, at most -peer-wait: a guest whose script ends powers off, and
// the peer's last pings would go unanswered. peer_last=seen|missed|- says
// how that went; the peer's own result is the assertion.
func cmdPing(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	to := fs.String("to", "", "peer IP address")
	count := fs.Int("count", 100, "pings to send")
	interval := fs.String("interval", "0.1", "seconds between pings")
	wait := fs.Duration("wait", 2*time.Minute, "how long the peer may take to answer a first ping")
	replyWait := fs.Duration("reply-wait", 10*time.Second, "how long to wait for replies after the last request")
	peerCount := fs.Int("peer-count", 0, "the -count of the peer's own e2e-net ping at us: stay until its last request arrived (0: do not wait)")
	peerWait := fs.Duration("peer-wait", time.Minute, "bound on the wait for the peer's last request, after our own series")
	label := fs.String("label", "", "result name suffix (default: the address)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *to == "" || *count < 1 || *count > 1<<16 || *peerCount < 0 {
		return usageErr("ping: bad arguments %q", args)
	}
	peer := net.ParseIP(*to).To4()
	secs, err := strconv.ParseFloat(*interval, 64)
	if peer == nil || err != nil || secs <= 0 {
		return usageErr("ping: bad arguments %q", args)
	}
	if *label == "" {
		*label = *to
	}
	name := "ping:" + *label
	// Hear the peer's requests from the start: its series may begin
	// while this side still waits for a first answer.
	pg, err := newPinger(peer, *peerCount)
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	defer pg.close()
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
	if err := pg.series(*count, time.Duration(secs*float64(time.Second)), *replyWait); err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	peerLast := "-"
	if *peerCount > 0 {
		select {
		case <-pg.peerDone:
			peerLast = "seen"
			// The kernel answered it before this socket heard of it; a
			// moment more lets the NIC take the reply off the ring.
			time.Sleep(time.Second)
		case <-time.After(*peerWait):
			peerLast = "missed"
		}
	}
	pg.close()
	s := pg.s
	sum := s.summary()
	// start_unix places the series on the wall clock, to line lost
	// sequence numbers up with what the host did meanwhile.
	detail := fmt.Sprintf("%s waited=%.2fs start_unix=%.3f peer_last=%s", sum, waited.Seconds(),
		float64(s.sent[0].UnixMilli())/1000, peerLast)
	if sum.Transmitted != *count || sum.Received != *count || sum.Duplicates != 0 {
		p.Failf(name, "%s", detail)
		return nil
	}
	p.Passf(name, "%s", detail)
	return nil
}
