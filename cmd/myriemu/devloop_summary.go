package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// summary is what run reports when every guest has ended.
type summary struct {
	guests         []*guestRun
	cards          []guestPlan
	counters       map[string]map[string]uint64 // by device
	serverProblems []string
	serverErr      error
	control        string
	faults         string
	faultErr       error
	elapsed        time.Duration
	keep           string
	interrupted    bool
}

// guestOutcome is one guest's verdict, read from its console.
type guestOutcome struct {
	cmdRC    int    // -1: CMD did not finish
	setup    string // why the scenario never ran CMD
	insmod   []string
	warnings []string
}

func outcome(r *guestRun) guestOutcome {
	o := guestOutcome{cmdRC: -1}
	lines := r.con.Lines()
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, markCmdExit):
			if rc, err := strconv.Atoi(strings.TrimPrefix(l, markCmdExit)); err == nil {
				o.cmdRC = rc
			}
		case strings.HasPrefix(l, markSetup):
			o.setup = strings.TrimPrefix(l, markSetup)
		}
	}
	c := result.ParseString(strings.Join(lines, "\n"))
	for _, res := range c.Results {
		if res.Status == result.Fail && strings.HasPrefix(res.Name, "insmod:") {
			o.insmod = append(o.insmod, strings.TrimPrefix(res.Name, "insmod:")+": "+res.Detail)
		}
	}
	o.warnings = kernelWarnings(lines)
	return o
}

// exitCode is CMD's worst exit status; 1 if CMD succeeded everywhere but
// anything else went wrong; 130 after an interrupt.
func (s summary) exitCode() int {
	if s.interrupted {
		return exitInterrupted
	}
	worst, problem := 0, s.serverErr != nil || s.faultErr != nil
	for _, g := range s.guests {
		o := outcome(g)
		if o.cmdRC < 0 {
			problem = true
		} else {
			worst = max(worst, o.cmdRC)
		}
		if len(o.warnings) > 0 || len(o.insmod) > 0 || g.err != nil || g.timedOut != "" {
			problem = true
		}
	}
	if worst == 0 && problem {
		return exitProblem
	}
	return worst
}

// counterOrder is the order the summary shows a NIC's counters in.
var counterOrder = []string{"commands", "tx_frames", "tx_bytes", "rx_frames", "rx_bytes", "tx_dropped", "rx_dropped",
	"interrupts", "failed_cmds", "unknown_cmds", "guest_errors", "dma_errors", "link_up_events", "link_down_events", "handoffs"}

func (s summary) write(w io.Writer, code int) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("myriemu run: summary after %.1f s", s.elapsed.Seconds())
	if s.interrupted {
		p("  interrupted: every guest and the server were stopped")
	}
	for _, g := range s.guests {
		o := outcome(g)
		var st string
		switch {
		case o.cmdRC >= 0:
			st = fmt.Sprintf("CMD exit %d", o.cmdRC)
		case o.setup != "":
			st = "CMD not run: guest setup failed: " + o.setup
		case g.timedOut != "":
			st = "CMD did not finish: the guest " + g.timedOut
		case g.err != nil:
			st = "CMD did not finish: " + g.err.Error()
		case s.interrupted:
			st = "CMD did not finish (interrupted)"
		default:
			st = "CMD did not finish (the guest powered off or crashed first; see its console)"
		}
		boot := "never reached /init"
		if g.bootTime > 0 {
			boot = fmt.Sprintf("/init after %.1f s", g.bootTime.Seconds())
		}
		p("  %s: %s (%s, powered off after %.1f s)", g.plan.Name, st, boot, g.elapsed.Seconds())
		for _, m := range o.insmod {
			p("    module did not load: %s", m)
		}
		for _, l := range o.warnings {
			p("    kernel: %s", l)
		}
		if g.bootTime == 0 && !s.interrupted {
			if t := strings.TrimSpace(g.stderr.String()); t != "" {
				p("    QEMU stderr:\n%s", indentText(tailLines(t, 20)))
			}
			if t := strings.Join(g.con.Lines(), "\n"); strings.TrimSpace(t) != "" {
				p("    console:\n%s", indentText(tailLines(t, 30)))
			}
		}
	}
	warned := 0
	for _, g := range s.guests {
		if len(outcome(g).warnings) > 0 {
			warned++
		}
	}
	if warned == 0 {
		p("  kernel warnings (WARN, BUG, oops, lockdep, timed out): none")
	} else {
		p("  kernel warnings (WARN, BUG, oops, lockdep, timed out): in %d guest(s), above", warned)
	}
	for _, g := range s.cards {
		for _, c := range g.Cards {
			cs, ok := s.counters[c.Device]
			if !ok {
				if !s.interrupted {
					p("  %s (%s): no counters logged", c.Device, c.Kind)
				}
				continue
			}
			var parts []string
			for _, k := range counterOrder {
				if v, ok := cs[k]; ok {
					parts = append(parts, fmt.Sprintf("%s=%d", k, v))
				}
			}
			p("  %s (%s): %s", c.Device, c.Kind, strings.Join(parts, " "))
		}
	}
	if s.serverErr != nil {
		p("  server: did not stop cleanly: %v", s.serverErr)
	}
	if n := len(s.serverProblems); n > 0 {
		p("  server warnings and errors (%d):", n)
		for _, l := range s.serverProblems[:min(n, 20)] {
			p("    %s", l)
		}
		if n > 20 {
			p("    ... %d more in server.log", n-20)
		}
	}
	switch {
	case s.control == "":
		p("  faults fired: not asked (give --control PATH)")
	case s.faultErr != nil:
		p("  faults fired: cannot ask the control socket: %v", s.faultErr)
	default:
		p("  faults fired (query-fault-log): %s", s.faults)
	}
	if s.keep != "" {
		p("  files kept in %s: server.log, wire.pcap, <guest>/console.log, qemu-stderr.log, qemu-cmdline.txt", s.keep)
	}
	p("myriemu run: exit %d%s", code, s.why(code))
}

// why explains an exit status that is not plainly CMD's.
func (s summary) why(code int) string {
	if s.interrupted {
		return " (interrupted)"
	}
	var rcs []int
	for _, g := range s.guests {
		if o := outcome(g); o.cmdRC >= 0 {
			rcs = append(rcs, o.cmdRC)
		}
	}
	if code == exitProblem && len(rcs) == len(s.guests) && slices.Max(rcs) == 0 {
		return " (CMD exited 0, but see above)"
	}
	if code == exitProblem && len(rcs) < len(s.guests) {
		return " (CMD did not finish in every guest)"
	}
	return " (CMD's worst exit status)"
}

func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("(%d lines cut)\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "\n")
}
