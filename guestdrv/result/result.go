// Package result defines the structured lines e2e guests print on the serial
// console and parses a console log back into them.
//
// The grammar, one line each, is fixed:
//
//	E2E-BOOT kernel=<release> uptime=<seconds>
//	E2E-RESULT name=<name> status=pass|fail|info detail=<free text to end of line>
//	E2E-DONE rc=<exit status of the scenario>
//
// Names use [A-Za-z0-9._:/-]. The /init the image builder generates prints
// E2E-BOOT first and E2E-DONE last, then powers the guest off; guest
// programs print E2E-RESULT lines (status info is a fact, not an assertion).
package result

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Line prefixes.
const (
	PrefixBoot   = "E2E-BOOT"
	PrefixResult = "E2E-RESULT"
	PrefixDone   = "E2E-DONE"
)

// Status of a result line.
type Status string

const (
	Pass Status = "pass"
	Fail Status = "fail"
	Info Status = "info"
)

// Result is one E2E-RESULT line.
type Result struct {
	Name   string
	Status Status
	Detail string
}

// SanitizeName maps a name onto the allowed characters.
func SanitizeName(name string) string {
	if name == "" {
		return "_"
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == ':', c == '/', c == '-':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// String formats r as one console line (without the newline). The detail is
// flattened onto one line.
func (r Result) String() string {
	detail := strings.Map(func(c rune) rune {
		if c == '\n' || c == '\r' || c == '\t' {
			return ' '
		}
		return c
	}, r.Detail)
	return fmt.Sprintf("%s name=%s status=%s detail=%s", PrefixResult, SanitizeName(r.Name), r.Status, detail)
}

// Console is what a guest console log says.
type Console struct {
	// Lines are all lines, with trailing carriage returns removed.
	Lines []string
	// Booted is true once the E2E-BOOT line was seen; Kernel is its release.
	Booted bool
	Kernel string
	// Results in console order.
	Results []Result
	// Done is true once E2E-DONE was seen; RC is its rc.
	Done bool
	RC   int
	// Panic is the first kernel panic line, if any.
	Panic string
	// Malformed lists lines that start like a result but do not parse.
	Malformed []string
}

// Parse reads a console log. Markers are found anywhere in a line, so a
// kernel message that got in front of a guest's output does not hide it.
func Parse(r io.Reader) (*Console, error) {
	c := &Console{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		c.add(strings.TrimRight(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("result: read console: %w", err)
	}
	return c, nil
}

// ParseString is Parse of a string.
func ParseString(s string) *Console {
	c, _ := Parse(strings.NewReader(s))
	return c
}

func (c *Console) add(line string) {
	c.Lines = append(c.Lines, line)
	if c.Panic == "" && strings.Contains(line, "Kernel panic") {
		c.Panic = line
	}
	if i := strings.Index(line, PrefixBoot+" "); i >= 0 {
		c.Booted = true
		c.Kernel = field(line[i:], "kernel")
	}
	if i := strings.Index(line, PrefixResult+" "); i >= 0 {
		if res, ok := parseResult(line[i:]); ok {
			c.Results = append(c.Results, res)
		} else {
			c.Malformed = append(c.Malformed, line)
		}
	}
	if i := strings.Index(line, PrefixDone+" "); i >= 0 {
		rc, err := strconv.Atoi(field(line[i:], "rc"))
		if err != nil {
			c.Malformed = append(c.Malformed, line)
			return
		}
		c.Done, c.RC = true, rc
	}
}

// field returns the value of key=value in a space-separated line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func parseResult(line string) (Result, bool) {
	rest, ok := strings.CutPrefix(line, PrefixResult+" name=")
	if !ok {
		return Result{}, false
	}
	name, rest, ok := strings.Cut(rest, " status=")
	if !ok || name == "" || SanitizeName(name) != name {
		return Result{}, false
	}
	status, detail, ok := strings.Cut(rest, " detail=")
	if !ok {
		// Tolerate a missing detail.
		status, detail = strings.TrimSpace(rest), ""
	}
	switch Status(status) {
	case Pass, Fail, Info:
	default:
		return Result{}, false
	}
	return Result{Name: name, Status: Status(status), Detail: detail}, true
}

// Failed returns the results with status fail.
func (c *Console) Failed() []Result {
	var out []Result
	for _, r := range c.Results {
		if r.Status == Fail {
			out = append(out, r)
		}
	}
	return out
}

// Find returns the last result with the given name.
func (c *Console) Find(name string) (Result, bool) {
	for i := len(c.Results) - 1; i >= 0; i-- {
		if c.Results[i].Name == name {
			return c.Results[i], true
		}
	}
	return Result{}, false
}

// Verdict says whether the run passed: it booted, finished (E2E-DONE rc=0),
// did not panic, printed at least one pass and no fail or malformed result,
// and printed every name in require with status pass or info. The error
// lists every problem found.
func (c *Console) Verdict(require ...string) error {
	var problems []string
	if !c.Booted {
		problems = append(problems, "the guest never reached /init (no "+PrefixBoot+" line)")
	}
	if c.Panic != "" {
		problems = append(problems, "kernel panic: "+c.Panic)
	}
	if !c.Done {
		problems = append(problems, "the scenario did not finish (no "+PrefixDone+" line)")
	} else if c.RC != 0 {
		problems = append(problems, fmt.Sprintf("the scenario exited with rc=%d", c.RC))
	}
	for _, r := range c.Failed() {
		problems = append(problems, "failed: "+r.Name+": "+r.Detail)
	}
	for _, l := range c.Malformed {
		problems = append(problems, "malformed result line: "+l)
	}
	passed := 0
	for _, r := range c.Results {
		if r.Status == Pass {
			passed++
		}
	}
	if passed == 0 && len(c.Failed()) == 0 {
		problems = append(problems, "no result passed")
	}
	for _, name := range require {
		if _, ok := c.Find(name); !ok {
			problems = append(problems, "missing result "+name)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(problems, "\n"))
}

// Printer prints results for a guest program.
type Printer struct {
	W io.Writer
	// Failures counts Fail lines printed.
	Failures int
}

// Passf prints a pass result.
func (p *Printer) Passf(name, format string, args ...any) { p.print(name, Pass, format, args...) }

// Failf prints a fail result.
func (p *Printer) Failf(name, format string, args ...any) {
	p.Failures++
	p.print(name, Fail, format, args...)
}

// Infof prints a fact.
func (p *Printer) Infof(name, format string, args ...any) { p.print(name, Info, format, args...) }

// Check prints pass with detail if err is nil, else fail with the error.
func (p *Printer) Check(name string, err error, detail string) bool {
	if err != nil {
		p.Failf(name, "%v", err)
		return false
	}
	p.Passf(name, "%s", detail)
	return true
}

func (p *Printer) print(name string, s Status, format string, args ...any) {
	fmt.Fprintln(p.W, Result{Name: name, Status: s, Detail: fmt.Sprintf(format, args...)})
}
