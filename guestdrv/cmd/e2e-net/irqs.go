package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/myriemu/myriemu/guestdrv/result"
)

// irqLine is one numbered line of /proc/interrupts.
type irqLine struct {
	IRQ    int
	Counts []uint64 // per CPU
	Chip   string   // e.g. PCI-MSIX-0000:01:00.0
	HWIRQ  string   // e.g. 0-edge
	Names  []string // the handlers' names, e.g. eth0:slice-0
}

func (l irqLine) Total() uint64 {
	var t uint64
	for _, c := range l.Counts {
		t += c
	}
	return t
}

// parseInterrupts parses /proc/interrupts: a header naming the CPUs, then
// "N: count... chip hwirq-type name[, name...]" lines. Lines of named
// counters (NMI, LOC, ...) are skipped.
func parseInterrupts(text string) ([]irqLine, error) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "CPU") {
		return nil, fmt.Errorf("/proc/interrupts: no CPU header")
	}
	ncpu := len(strings.Fields(lines[0]))
	var out []irqLine
	for _, line := range lines[1:] {
		label, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		irq, err := strconv.Atoi(strings.TrimSpace(label))
		if err != nil {
			continue // NMI, LOC, ERR, ...
		}
		f := strings.Fields(rest)
		if len(f) < ncpu {
			return nil, fmt.Errorf("/proc/interrupts: IRQ %d has %d fields for %d CPUs", irq, len(f), ncpu)
		}
		l := irqLine{IRQ: irq}
		for _, c := range f[:ncpu] {
			n, err := strconv.ParseUint(c, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/interrupts: IRQ %d: count %q", irq, c)
			}
			l.Counts = append(l.Counts, n)
		}
		f = f[ncpu:]
		if len(f) > 0 {
			l.Chip, f = f[0], f[1:]
		}
		if len(f) > 0 {
			l.HWIRQ, f = f[0], f[1:]
		}
		if len(f) > 0 {
			for _, n := range strings.Split(strings.Join(f, " "), ",") {
				if n = strings.TrimSpace(n); n != "" {
					l.Names = append(l.Names, n)
				}
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// ifaceIRQs returns the lines whose handler is ifname's: "IF" (MSI, INTx)
// or "IF:slice-N" (MSI-X, one per slice), by handler name.
func ifaceIRQs(lines []irqLine, ifname string) map[string]irqLine {
	out := map[string]irqLine{}
	for _, l := range lines {
		for _, n := range l.Names {
			if n == ifname || strings.HasPrefix(n, ifname+":slice-") {
				out[n] = l
			}
		}
	}
	return out
}

// sliceCheck checks that slices 0..n-1 of ifname each have their own
// MSI-X vector and that each took interrupts since base (handler name to
// count; nil means since boot). It returns the per-slice counts.
func sliceCheck(irqs map[string]irqLine, base map[string]uint64, ifname string, n int) (string, error) {
	var parts, problems []string
	seen := map[int]string{}
	for s := range n {
		name := fmt.Sprintf("%s:slice-%d", ifname, s)
		l, ok := irqs[name]
		if !ok {
			problems = append(problems, name+" has no IRQ")
			continue
		}
		if other, dup := seen[l.IRQ]; dup {
			problems = append(problems, fmt.Sprintf("%s shares IRQ %d with %s", name, l.IRQ, other))
		}
		seen[l.IRQ] = name
		if !strings.Contains(l.Chip, "MSIX") && !strings.Contains(l.Chip, "MSI-X") {
			problems = append(problems, fmt.Sprintf("%s: IRQ %d is %s, not MSI-X", name, l.IRQ, l.Chip))
		}
		d := l.Total() - base[name]
		if d == 0 {
			problems = append(problems, fmt.Sprintf("%s (IRQ %d) took no interrupt", name, l.IRQ))
		}
		parts = append(parts, fmt.Sprintf("slice%d=irq%d:%d", s, l.IRQ, d))
	}
	for name := range irqs {
		if i, err := strconv.Atoi(strings.TrimPrefix(name, ifname+":slice-")); err == nil && i >= n {
			problems = append(problems, fmt.Sprintf("unexpected %s: %d slices wanted", name, n))
		}
	}
	detail := strings.Join(parts, " ")
	if len(problems) > 0 {
		return detail, fmt.Errorf("%s; %s", strings.Join(problems, "; "), detail)
	}
	return detail, nil
}

// cmdIRQs reports IF's interrupt counts. -save FILE keeps them; -since
// FILE counts from a saved point; -want-slices N checks one MSI-X vector
// per slice, each with interrupts. Result irqs:LABEL.
func cmdIRQs(p *result.Printer, args []string) error {
	fs := flag.NewFlagSet("irqs", flag.ContinueOnError)
	save := fs.String("save", "", "write the counts to FILE")
	since := fs.String("since", "", "count from the point saved in FILE")
	slices := fs.Int("want-slices", 0, "check this many per-slice MSI-X vectors, each taking interrupts")
	label := fs.String("label", "", "result name suffix (default: the interface)")
	if len(args) < 1 {
		return usageErr("irqs IF [flags]")
	}
	ifname := args[0]
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return usageErr("irqs: bad arguments %q", args)
	}
	if *label == "" {
		*label = ifname
	}
	name := "irqs:" + *label
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	lines, err := parseInterrupts(string(b))
	if err != nil {
		p.Failf(name, "%v", err)
		return nil
	}
	irqs := ifaceIRQs(lines, ifname)
	counts := map[string]uint64{}
	for n, l := range irqs {
		counts[n] = l.Total()
	}
	if *save != "" {
		js, _ := json.Marshal(counts)
		if err := os.WriteFile(*save, js, 0o644); err != nil {
			p.Failf(name, "%v", err)
			return nil
		}
	}
	base := map[string]uint64{}
	if *since != "" {
		js, err := os.ReadFile(*since)
		if err == nil {
			err = json.Unmarshal(js, &base)
		}
		if err != nil {
			p.Failf(name, "reading %s: %v", *since, err)
			return nil
		}
	}
	if *slices > 0 {
		detail, err := sliceCheck(irqs, base, ifname, *slices)
		if err != nil {
			p.Failf(name, "%v", err)
		} else {
			p.Passf(name, "%s", detail)
		}
		return nil
	}
	var parts []string
	for _, n := range sortedKeys(irqs) {
		l := irqs[n]
		parts = append(parts, fmt.Sprintf("%s=irq%d:%s:%d", n, l.IRQ, l.Chip, l.Total()-base[n]))
	}
	p.Infof(name, "%s", strings.Join(parts, " "))
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	// Slice names sort by number, not text: slice-10 after slice-9.
	sort.Slice(out, func(i, j int) bool {
		pi, ni := splitNum(out[i])
		pj, nj := splitNum(out[j])
		if pi != pj {
			return pi < pj
		}
		return ni < nj
	})
	return out
}

func splitNum(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(s[i:])
	return s[:i], n
}
