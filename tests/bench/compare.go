package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
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
		irqPerFrame          float64 // Myri-10G only: interrupts per frame received, both NICs
		ok                   bool
	}
	got := map[string][]sample{}
	row := "%-5s  %-36s  %8s  %11s  %11s  %12s  %6s  %s\n"
	fmt.Printf(row, "round", "kind", "MB/s", "ping avg ms", "ping min ms", "irq/rx frame", "wall s", "problems")
	for r := range *rounds {
		for _, name := range order {
			k := kinds[name]
			left := guestScript(leftIP, k).
				Step(fmt.Sprintf("e2e-net tcp-serve -port 5001 -conns 1 -bytes %d -label xfer -timeout 10m", *size))
			right := guestScript(rightIP, k).
				Step(fmt.Sprintf("e2e-net ping -to %s -count %d -interval %s -wait 2m -label rtt", leftIP, *pings, *interval)).
				Step(fmt.Sprintf("e2e-net tcp-send -to %s -port 5001 -conns 1 -bytes %d -seed %d -label xfer -timeout 10m", leftIP, *size, r+1))
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
			if p, ok := myripair.Find(pr.right, "ping:rtt"); ok {
				s.rttAvg, s.rttMin = myripair.FieldFloat(p.Detail, "rtt_avg_ms"), myripair.FieldFloat(p.Detail, "rtt_min_ms")
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
			fmt.Printf(row, fmt.Sprint(r+1), k.name, fmt.Sprintf("%.2f", s.mbps), fmt.Sprintf("%.3f", s.rttAvg), fmt.Sprintf("%.3f", s.rttMin), irq,
				fmt.Sprintf("%.0f", time.Since(start).Seconds()), strings.Join(problems, "; "))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	fmt.Printf("\nmedians over %d rounds (%d bytes a stream, %d pings %ss apart; failed boots left out):\n", *rounds, *size, *pings, *interval)
	mrow := "%-36s  %5s  %8s  %11s  %11s  %s\n"
	fmt.Printf(mrow, "kind", "boots", "MB/s", "ping avg ms", "ping min ms", "MB/s against "+kinds[order[len(order)-1]].name)
	med := map[string][3]float64{}
	for _, name := range order {
		var m, a, n []float64
		for _, s := range got[name] {
			if s.ok {
				m, a, n = append(m, s.mbps), append(a, s.rttAvg), append(n, s.rttMin)
			}
		}
		med[name] = [3]float64{median(m), median(a), median(n)}
	}
	base := med[order[len(order)-1]][0] // the last kind: e1000e by default
	for _, name := range order {
		v := med[name]
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2fx", v[0]/base)
		}
		ok := 0
		for _, s := range got[name] {
			if s.ok {
				ok++
			}
		}
		fmt.Printf(mrow, kinds[name].name, fmt.Sprintf("%d/%d", ok, len(got[name])), fmt.Sprintf("%.2f", v[0]),
			fmt.Sprintf("%.3f", v[1]), fmt.Sprintf("%.3f", v[2]), ratio)
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
