package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/myriemu/myriemu/tests/demo/myripair"
	"github.com/myriemu/myriemu/tests/harness"
)

// compare is issue 15's acceptance 2: pairs of guests of each kind, the
// kinds alternating round after round (A B C A B C ...), one TCP stream
// right to left and pings right to left in each boot; it prints every
// boot's figures and the medians per kind.
func compare(ctx context.Context, env *harness.Env, dir string, args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	rounds := fs.Int("rounds", 2, "rounds; each boots one pair of every kind, in order")
	kindList := fs.String("kinds", "mmap,trap,e1000e", "kinds to compare, in the order they alternate: "+kindNames())
	size := fs.Int64("bytes", 16<<20, "bytes of the TCP stream (the same for every kind)")
	pings := fs.Int("pings", 50, "pings before the stream")
	interval := fs.String("interval", "0.05", "seconds between pings (busybox ping -i)")
	raw := fs.Int64("raw-bytes", 256<<20, "bytes of a second, unchecked TCP stream of zeros (busybox dd through nc; 0: none): long enough to leave slow start behind")
	parse(fs, args)

	var order []string
	for _, k := range strings.Split(*kindList, ",") {
		if _, ok := kinds[k]; !ok {
			return fmt.Errorf("compare: unknown kind %q (%s)", k, kindNames())
		}
		order = append(order, k)
	}
	type sample struct {
		mbps, rttAvg, rttMin float64
		rttMedian            float64
		rawMBps              float64
		irqPerFrame          float64 // Myri-10G only: interrupts per frame received, both NICs
		ok                   bool
	}
	got := map[string][]sample{}
	row := "%-5s  %-36s  %8s  %8s  %11s  %11s  %11s  %12s  %6s  %s\n"
	fmt.Printf(row, "round", "kind", "MB/s", "raw MB/s", "ping avg ms", "ping med ms", "ping min ms", "irq/rx frame", "wall s", "problems")
	for r := range *rounds {
		for _, name := range order {
			k := kinds[name]
			left := guestScript(leftIP, k).
				Step(fmt.Sprintf("e2e-net tcp-serve -port 5001 -conns 1 -bytes %d -label xfer -timeout 10m", *size))
			right := guestScript(rightIP, k).
				Step(fmt.Sprintf("e2e-net ping -to %s -count %d -interval %s -wait 2m -label rtt", leftIP, *pings, *interval)).
				Step(fmt.Sprintf("e2e-net tcp-send -to %s -port 5001 -conns 1 -bytes %d -seed %d -label xfer -timeout 10m", leftIP, *size, r+1))
			if *raw > 0 {
				rawStream(left, right, *raw)
			}
			start := time.Now()
			pr, err := bootPair(ctx, env, filepath.Join(dir, fmt.Sprintf("%d-%s", r+1, name)), k, left, right, 15*time.Minute)
			if err != nil {
				return err
			}
			var problems []string
			for _, g := range []*harness.Run{pr.left, pr.right} {
				if e := runErr(g); e != "" {
					problems = append(problems, e)
				}
			}
			s := sample{ok: true}
			tr, tp := myripair.Transfers(pr.right, pr.left, "xfer", 1, uint64(*size))
			problems = append(problems, tp...)
			s.mbps = tr.MBps
			if *raw > 0 {
				var p string
				s.rawMBps, p = rawResult(pr.left, *raw)
				if p != "" {
					problems = append(problems, p)
				}
			}
			if p, ok := myripair.Find(pr.right, "ping:rtt"); ok {
				s.rttAvg, s.rttMin = myripair.FieldFloat(p.Detail, "rtt_avg_ms"), myripair.FieldFloat(p.Detail, "rtt_min_ms")
				s.rttMedian = myripair.FieldFloat(p.Detail, "rtt_median_ms")
			} else {
				problems = append(problems, "no ping result")
			}
			if pr.server != nil {
				var irqs, frames uint64
				for _, dev := range []string{"myri0", "myri1"} {
					for _, c := range myripair.NICCounters(pr.server.Log(), dev) {
						irqs += c["interrupts"]
						frames += c["rx_frames"]
					}
				}
				if frames > 0 {
					s.irqPerFrame = float64(irqs) / float64(frames)
				}
				for _, l := range myripair.Problems(pr.server.Log()) {
					problems = append(problems, "server: "+l)
				}
			}
			if len(problems) > 0 || s.mbps == 0 {
				s.ok = false
			}
			got[name] = append(got[name], s)
			irq := "-"
			if pr.server != nil {
				irq = fmt.Sprintf("%.2f", s.irqPerFrame)
			}
			fmt.Printf(row, fmt.Sprint(r+1), k.name, fmt.Sprintf("%.2f", s.mbps), fmt.Sprintf("%.2f", s.rawMBps), fmt.Sprintf("%.3f", s.rttAvg), fmt.Sprintf("%.3f", s.rttMedian), fmt.Sprintf("%.3f", s.rttMin), irq,
				fmt.Sprintf("%.0f", time.Since(start).Seconds()), strings.Join(problems, "; "))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	fmt.Printf("\nmedians over %d rounds (%d bytes checked, %d raw, %d pings %ss apart; failed boots left out):\n", *rounds, *size, *raw, *pings, *interval)
	mrow := "%-36s  %5s  %8s  %8s  %11s  %11s  %11s  %s\n"
	last := kinds[order[len(order)-1]].name
	fmt.Printf(mrow, "kind", "boots", "MB/s", "raw MB/s", "ping avg ms", "ping med ms", "ping min ms", "MB/s, raw MB/s against "+last)
	med := map[string][5]float64{}
	for _, name := range order {
		var m, w, a, d, n []float64
		for _, s := range got[name] {
			if s.ok {
				m, w, a, d, n = append(m, s.mbps), append(w, s.rawMBps), append(a, s.rttAvg), append(d, s.rttMedian), append(n, s.rttMin)
			}
		}
		med[name] = [5]float64{median(m), median(w), median(a), median(d), median(n)}
	}
	base := med[order[len(order)-1]] // the last kind: e1000e by default
	for _, name := range order {
		v := med[name]
		ratio := "-"
		if base[0] > 0 {
			ratio = fmt.Sprintf("%.2fx", v[0]/base[0])
		}
		if base[1] > 0 {
			ratio += fmt.Sprintf(", %.2fx", v[1]/base[1])
		}
		ok := 0
		for _, s := range got[name] {
			if s.ok {
				ok++
			}
		}
		fmt.Printf(mrow, kinds[name].name, fmt.Sprintf("%d/%d", ok, len(got[name])), fmt.Sprintf("%.2f", v[0]), fmt.Sprintf("%.2f", v[1]),
			fmt.Sprintf("%.3f", v[2]), fmt.Sprintf("%.3f", v[3]), fmt.Sprintf("%.3f", v[4]), ratio)
	}
	return nil
}

// median of xs; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func kindNames() string {
	var ns []string
	for n := range kinds {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return strings.Join(ns, ", ")
}

// rawStream adds a second stream to a pair's scenarios: bytes zeros from
// dd on the right guest straight into a socket (nc -e), read by dd on the
// left guest straight from one, so neither end does per-byte work in user
// space (the checked stream hashes every byte at both ends, which under
// TCG bounds it at about 8 MB/s whatever the NIC). The left guest reports
// its uptime at accept and after the last byte, and dd's record counts;
// it reads exactly the bytes sent and closes, and the right guest waits
// for that close (cat) before going on, so it does not power off with
// data still in its socket.
func rawStream(left, right *myripair.Script, bytes int64) {
	blocks := bytes / (64 << 10)
	left.Raw(fmt.Sprintf(`nc -l -p 5002 -e sh -c 'cut -d" " -f1 /proc/uptime >/tmp/raw.t; `+
		`dd of=/dev/null bs=64k count=%d iflag=fullblock 2>/tmp/raw.err; cut -d" " -f1 /proc/uptime >>/tmp/raw.t'; `+
		`echo "E2E-RESULT name=raw:recv status=info detail=uptimes=$(tr '\n' ' ' </tmp/raw.t) $(tr '\n' ' ' </tmp/raw.err)"`, blocks))
	right.Raw(fmt.Sprintf(`i=0; until nc -w 10 %s 5002 -e sh -c 'dd if=/dev/zero bs=64k count=%d 2>/dev/null; cat >/dev/null'; do `+
		`i=$((i+1)); [ $i -ge 100 ] && { echo 'E2E-RESULT name=raw:send status=fail detail=no connection'; rc=1; break; }; sleep 0.3; done`,
		leftIP, blocks))
}

// rawResult is the raw stream's rate at the left guest, in MB/s: want
// bytes (dd's full records) over the uptimes at accept and after the last
// byte (10 ms resolution).
func rawResult(left *harness.Run, want int64) (float64, string) {
	r, ok := myripair.Find(left, "raw:recv")
	if !ok {
		return 0, "no raw stream result"
	}
	var t0, t1 float64
	var in string
	f := strings.Fields(r.Detail)
	if len(f) >= 3 {
		t0, _ = strconv.ParseFloat(strings.TrimPrefix(f[0], "uptimes="), 64)
		t1, _ = strconv.ParseFloat(f[1], 64)
		in = f[2]
	}
	if in != fmt.Sprintf("%d+0", want/(64<<10)) || t1 <= t0 {
		return 0, fmt.Sprintf("raw stream: %q", r.Detail)
	}
	return float64(want) / (t1 - t0) / 1e6, ""
}
