package fault

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxRuleLen bounds the text of one rule.
const MaxRuleLen = 1024

// SyntaxError is a malformed rule. Col is the 1-based byte column in the
// rule's text (Line, if set, the 1-based line of a rules file).
type SyntaxError struct {
	Line int
	Col  int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("fault: rule at line %d column %d: %s", e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("fault: rule at column %d: %s", e.Col, e.Msg)
}

// Rule is one parsed rule: which fault, where it matches and when it fires.
// A Rule is immutable once parsed; its counters live in the Set that arms it.
type Rule struct {
	ID   string
	Kind Kind
	Door Door
	Args []Arg // every argument of Kind, defaults filled in, in spec order

	point string   // rule spelling of the injection point
	on    []string // Op.Point values the rule applies to

	// Match clauses; the zero value matches anything.
	device         string
	slice, vector  int64 // -1: any
	queue          int64
	opcode         int64
	opname         string
	region         string
	lo, hi         uint64 // iova=lo..hi, inclusive; hi 0 with lo 0: any
	hasRange       bool
	dir            string
	probability    float64 // percent; 100 unless given
	hasProbability bool
	interval       uint64 // 0 or 1: every matching operation
	times          int64  // -1 unlimited
	after          uint64
	every          time.Duration
	seed           uint64
	hasSeed        bool
	state          int64 // 0: any state
	newState       int64 // 0: unchanged
	text           string
}

// Arg is one argument of a fired fault.
type Arg struct {
	Name  string
	Value string
}

// String returns the rule in canonical form: what query-faults shows and
// what Parse reads back to an equal rule.
func (r *Rule) String() string { return r.text }

// Parse reads one rule in the grammar of docs/faults.md:
//
//	ID: door.point=action[(args)] { ; clause }
//
// An error is a *SyntaxError naming the column.
func Parse(text string) (*Rule, error) {
	if len(text) > MaxRuleLen {
		return nil, &SyntaxError{Col: MaxRuleLen + 1, Msg: fmt.Sprintf("rule longer than %d bytes", MaxRuleLen)}
	}
	p := &parser{s: text}
	r, err := p.rule()
	if err != nil {
		return nil, err
	}
	r.text = r.canonical()
	return r, nil
}

type parser struct {
	s   string
	pos int
}

func (p *parser) errf(pos int, format string, args ...any) error {
	return &SyntaxError{Col: pos + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

// word reads [A-Za-z0-9_-]+ (and '.' if dots).
func (p *parser) word(what string, dots bool) (string, int, error) {
	p.skipSpace()
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || dots && c == '.' {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		if p.pos == len(p.s) {
			return "", start, p.errf(start, "want %s, found end of rule", what)
		}
		return "", start, p.errf(start, "want %s, found %q", what, p.s[p.pos])
	}
	return p.s[start:p.pos], start, nil
}

func (p *parser) expect(c byte) error {
	p.skipSpace()
	if p.pos >= len(p.s) {
		return p.errf(p.pos, "want %q, found end of rule", c)
	}
	if p.s[p.pos] != c {
		return p.errf(p.pos, "want %q, found %q", c, p.s[p.pos])
	}
	p.pos++
	return nil
}

const maxIDLen = 64

func (p *parser) rule() (*Rule, error) {
	r := &Rule{slice: -1, vector: -1, queue: -1, opcode: -1, times: -1, probability: 100}
	id, at, err := p.word("a rule id", true)
	if err != nil {
		return nil, err
	}
	if len(id) > maxIDLen {
		return nil, p.errf(at, "rule id longer than %d bytes", maxIDLen)
	}
	r.ID = id
	if err := p.expect(':'); err != nil {
		return nil, err
	}
	door, at, err := p.word("a door (dma, msi, bar, fw, wire, pci)", false)
	if err != nil {
		return nil, err
	}
	d, ok := parseDoor(door)
	if !ok {
		return nil, p.errf(at, "unknown door %q (want dma, msi, bar, fw, wire, pci)", door)
	}
	r.Door = d
	if err := p.expect('.'); err != nil {
		return nil, err
	}
	point, pointAt, err := p.word("an injection point", false)
	if err != nil {
		return nil, err
	}
	if err := p.expect('='); err != nil {
		return nil, err
	}
	action, actionAt, err := p.word("an action", false)
	if err != nil {
		return nil, err
	}
	r.point = point
	if r.on = pointOps(d, point); r.on == nil {
		return nil, p.errf(pointAt, "door %s has no point %q (%s)", door, point, strings.Join(pointsOf(d), ", "))
	}
	k, ok := lookupKind(d, point, action)
	if !ok {
		return nil, p.errf(actionAt, "%s.%s has no action %q (%s)", door, point, action, strings.Join(actionsOf(d, point), ", "))
	}
	if kinds[k].Pending {
		return nil, p.errf(actionAt, "%s is not wired to its door yet (docs/faults.md)", kinds[k].Name)
	}
	r.Kind = k
	if k != None {
		r.on = kinds[k].On
	}
	if err := p.args(r); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for {
		p.skipSpace()
		if p.pos == len(p.s) {
			break
		}
		if err := p.expect(';'); err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.pos == len(p.s) { // a trailing ';' is allowed
			break
		}
		if err := p.clause(r, seen); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// args reads the optional (args) of the action and fills in defaults.
func (p *parser) args(r *Rule) error {
	spec := kinds[r.Kind]
	given := map[string]string{}
	p.skipSpace()
	if p.pos < len(p.s) && p.s[p.pos] == '(' {
		p.pos++
		for i := 0; ; i++ {
			p.skipSpace()
			if p.pos < len(p.s) && p.s[p.pos] == ')' && i == 0 {
				p.pos++
				break
			}
			at := p.pos
			name, _, err := p.word("an argument", true)
			if err != nil {
				return err
			}
			val := name
			p.skipSpace()
			if p.pos < len(p.s) && p.s[p.pos] == '=' {
				p.pos++
				if val, _, err = p.word("an argument value", true); err != nil {
					return err
				}
			} else { // positional: only the first argument
				if i > 0 || len(spec.Args) == 0 {
					return p.errf(at, "want name=value")
				}
				name = spec.Args[0].Name
			}
			a := findArg(spec.Args, name)
			if a == nil {
				return p.errf(at, "%s takes no argument %q%s", spec.Name, name, argList(spec.Args))
			}
			if _, dup := given[name]; dup {
				return p.errf(at, "argument %q given twice", name)
			}
			if err := checkArg(a, val); err != nil {
				return p.errf(at, "%s: %v", name, err)
			}
			given[name] = val
			p.skipSpace()
			if p.pos < len(p.s) && p.s[p.pos] == ',' {
				p.pos++
				continue
			}
			if err := p.expect(')'); err != nil {
				return err
			}
			break
		}
	}
	for _, a := range spec.Args {
		v, ok := given[a.Name]
		if !ok {
			v = a.Default
		}
		r.Args = append(r.Args, Arg{Name: a.Name, Value: v})
	}
	return nil
}

func findArg(args []ArgSpec, name string) *ArgSpec {
	for i := range args {
		if args[i].Name == name {
			return &args[i]
		}
	}
	return nil
}

func argList(args []ArgSpec) string {
	if len(args) == 0 {
		return " (it takes none)"
	}
	var names []string
	for _, a := range args {
		names = append(names, a.Name)
	}
	return " (want " + strings.Join(names, ", ") + ")"
}

func checkArg(a *ArgSpec, v string) error {
	switch a.Kind {
	case argInt:
		_, err := strconv.ParseInt(v, 0, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
	case argDuration:
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Minute {
			return fmt.Errorf("%q is not a duration between 0 and 1m", v)
		}
	case argChoice:
		if !slices.Contains(a.Choices, v) {
			return fmt.Errorf("%q is not one of %s", v, strings.Join(a.Choices, ", "))
		}
	}
	return nil
}

// clause reads one match, trigger or state clause.
func (p *parser) clause(r *Rule, seen map[string]bool) error {
	key, at, err := p.word("a clause", false)
	if err != nil {
		return err
	}
	if seen[key] {
		return p.errf(at, "clause %q given twice", key)
	}
	seen[key] = true
	if isMatch(key) && !slices.Contains(doorMatches[r.Door], key) {
		return p.errf(at, "door %s does not report %s (it matches on %s)", r.Door, key, strings.Join(doorMatches[r.Door], ", "))
	}
	if key == "once" {
		if seen["times"] {
			return p.errf(at, "once and times= together")
		}
		r.times = 1
		return nil
	}
	if err := p.expect('='); err != nil {
		return err
	}
	p.skipSpace()
	vat := p.pos
	for p.pos < len(p.s) && p.s[p.pos] != ';' {
		p.pos++
	}
	val := strings.TrimRight(p.s[vat:p.pos], " \t")
	if val == "" {
		return p.errf(vat, "%s= needs a value", key)
	}
	bad := func(format string, args ...any) error {
		return p.errf(vat, "%s=%s: %s", key, val, fmt.Sprintf(format, args...))
	}
	num := func(lo, hi int64) (int64, error) {
		n, err := strconv.ParseInt(val, 0, 64)
		if err != nil || n < lo || n > hi {
			return 0, bad("want an integer in %d..%d", lo, hi)
		}
		return n, nil
	}
	switch key {
	case "device":
		if !validName(val) {
			return bad("not a device name")
		}
		r.device = val
	case "slice":
		r.slice, err = num(0, 1<<16)
	case "vector":
		r.vector, err = num(0, 2048)
	case "queue":
		r.queue, err = num(0, 1<<16)
	case "opcode":
		if n, perr := strconv.ParseInt(val, 0, 64); perr == nil {
			if n < 0 || n > 1<<16 {
				return bad("want 0..65536 or a command name")
			}
			r.opcode = n
		} else if validName(val) {
			r.opname = val
		} else {
			return bad("want a number or a command name")
		}
	case "region":
		if !validName(val) {
			return bad("not a region name (rx_done, stats, cmd, ring, bar0, ...)")
		}
		r.region = val
	case "iova":
		lo, hi, ok := strings.Cut(val, "..")
		if !ok {
			return bad("want lo..hi")
		}
		l, err1 := strconv.ParseUint(lo, 0, 64)
		h, err2 := strconv.ParseUint(hi, 0, 64)
		if err1 != nil || err2 != nil || h < l {
			return bad("want lo..hi, two addresses with lo <= hi")
		}
		r.lo, r.hi, r.hasRange = l, h, true
	case "dir":
		if val != "tx" && val != "rx" {
			return bad("want tx or rx")
		}
		r.dir = val
	case "probability":
		f, perr := strconv.ParseFloat(strings.TrimSuffix(val, "%"), 64)
		if perr != nil || !(f >= 0 && f <= 100) {
			return bad("want a percentage 0..100")
		}
		r.probability, r.hasProbability = f, true
	case "interval":
		var n int64
		n, err = num(1, 1<<62)
		r.interval = uint64(n)
	case "times":
		if seen["once"] {
			return p.errf(at, "once and times= together")
		}
		r.times, err = num(-1, 1<<62)
	case "after":
		var n int64
		n, err = num(0, 1<<62)
		r.after = uint64(n)
	case "every":
		d, perr := time.ParseDuration(val)
		if perr != nil || d <= 0 || d > time.Hour {
			return bad("want a duration between 0 and 1h")
		}
		r.every = d
	case "seed":
		s, perr := strconv.ParseUint(val, 0, 64)
		if perr != nil {
			return bad("want an unsigned 64-bit number")
		}
		r.seed, r.hasSeed = s, true
	case "state":
		r.state, err = num(1, 1<<31)
	case "new_state":
		r.newState, err = num(1, 1<<31)
	default:
		return p.errf(at, "unknown clause %q (device, slice, vector, queue, opcode, region, iova, dir, probability, interval, times, after, once, every, seed, state, new_state)", key)
	}
	return err
}

// doorMatches are the match clauses each door reports in its Op; a rule
// may only match on those, so an unreported field never matches by
// accident.
var doorMatches = [numDoors][]string{
	DMA:  {"device", "iova", "region", "slice"},
	MSI:  {"device", "vector"},
	BAR:  {"device", "region", "iova"},
	FW:   {"device", "opcode", "slice", "queue"},
	Wire: {"device"},
	PCI:  {"device"},
}

func isMatch(key string) bool {
	switch key {
	case "device", "slice", "vector", "queue", "opcode", "region", "iova", "dir":
		return true
	}
	return false
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// pointOps returns the Op.Point values of door d's injection point point,
// or nil if it has none.
func pointOps(d Door, point string) []string {
	var on []string
	for k := None + 1; k < numKinds; k++ {
		if s := &kinds[k]; s.Door == d && s.Point == point {
			for _, o := range s.On {
				if !slices.Contains(on, o) {
					on = append(on, o)
				}
			}
		}
	}
	return on
}

func pointsOf(d Door) []string {
	var out []string
	for k := None + 1; k < numKinds; k++ {
		if s := &kinds[k]; s.Door == d && !slices.Contains(out, s.Point) {
			out = append(out, s.Point)
		}
	}
	return out
}

func actionsOf(d Door, point string) []string {
	out := []string{}
	for k := None + 1; k < numKinds; k++ {
		if s := &kinds[k]; s.Door == d && s.Point == point {
			out = append(out, s.Action)
		}
	}
	return append(out, "none")
}

// canonical prints r so that Parse(r.canonical()) equals r.
func (r *Rule) canonical() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s.%s=%s", r.ID, r.Door, r.point, kinds[r.Kind].Action)
	if len(r.Args) > 0 {
		b.WriteByte('(')
		for i, a := range r.Args {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s=%s", a.Name, a.Value)
		}
		b.WriteByte(')')
	}
	c := func(format string, args ...any) { b.WriteString("; "); fmt.Fprintf(&b, format, args...) }
	if r.device != "" {
		c("device=%s", r.device)
	}
	if r.slice >= 0 {
		c("slice=%d", r.slice)
	}
	if r.vector >= 0 {
		c("vector=%d", r.vector)
	}
	if r.queue >= 0 {
		c("queue=%d", r.queue)
	}
	if r.opcode >= 0 {
		c("opcode=%d", r.opcode)
	}
	if r.opname != "" {
		c("opcode=%s", r.opname)
	}
	if r.region != "" {
		c("region=%s", r.region)
	}
	if r.hasRange {
		c("iova=%#x..%#x", r.lo, r.hi)
	}
	if r.dir != "" {
		c("dir=%s", r.dir)
	}
	if r.hasProbability {
		c("probability=%s", strconv.FormatFloat(r.probability, 'g', -1, 64))
	}
	if r.interval > 0 {
		c("interval=%d", r.interval)
	}
	if r.times >= 0 {
		c("times=%d", r.times)
	}
	if r.after > 0 {
		c("after=%d", r.after)
	}
	if r.every > 0 {
		c("every=%s", r.every)
	}
	if r.hasSeed {
		c("seed=%d", r.seed)
	}
	if r.state > 0 {
		c("state=%d", r.state)
	}
	if r.newState > 0 {
		c("new_state=%d", r.newState)
	}
	return b.String()
}

// ParseFile reads rules, one per line; blank lines and lines starting
// with '#' are skipped. The first malformed rule fails the whole file
// (its *SyntaxError carries the line). Duplicate ids are an error.
func ParseFile(text string) ([]*Rule, error) {
	var rules []*Rule
	ids := map[string]int{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		r, err := Parse(line)
		if err != nil {
			if se, ok := err.(*SyntaxError); ok {
				se.Line = i + 1
			}
			return nil, err
		}
		if prev, dup := ids[r.ID]; dup {
			return nil, &SyntaxError{Line: i + 1, Col: 1, Msg: fmt.Sprintf("rule id %q already used at line %d", r.ID, prev)}
		}
		ids[r.ID] = i + 1
		rules = append(rules, r)
	}
	return rules, nil
}
