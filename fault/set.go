package fault

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Op is what a door reports about one operation when its door is armed.
// Fields a door does not know stay zero; the parser refuses match clauses a
// door does not report (see doorMatches), so zero never matches by accident.
type Op struct {
	Point  string // the operation: read, write, raise, cmd, frame, config, reset, ...
	Device string
	Slice  int // -1 at the dma door for an access that is no slice's
	Vector int
	Queue  int
	Opcode int
	OpName string // the command's name, e.g. MXGEFW_CMD_SET_MTU
	Region string
	Addr   uint64 // IOVA, BAR offset
	Len    int
	Dir    string // tx or rx
}

// Action is a fault to inject now, as Eval returns it.
type Action struct {
	Kind Kind
	Rule string
	Args []Arg
	// Rand is a draw of the rule's stream the door may use (to pick an
	// offset), so that what the fault does is as reproducible as when.
	Rand uint64
}

// Arg returns the value of argument name ("" if the kind has none).
func (a *Action) Arg(name string) string {
	for _, x := range a.Args {
		if x.Name == name {
			return x.Value
		}
	}
	return ""
}

// Int returns argument name as an integer (the parser checked it).
func (a *Action) Int(name string) int64 {
	n, _ := strconv.ParseInt(a.Arg(name), 0, 64)
	return n
}

// Duration returns argument name as a duration.
func (a *Action) Duration(name string) time.Duration {
	d, _ := time.ParseDuration(a.Arg(name))
	return d
}

// Firing is one injected fault, as the log records it. Op is the door's
// operation counter for that device: replay is keyed on (Door, Device, Op),
// never on wall time.
type Firing struct {
	Seq    uint64 `json:"seq"`
	Door   string `json:"door"`
	Device string `json:"device"`
	Op     uint64 `json:"op"`
	Rule   string `json:"rule"`
	Fault  string `json:"fault"`
	Args   string `json:"args,omitempty"`
	Rand   uint64 `json:"rand"`
}

// RuleStatus is an armed rule with its counters, as query-faults shows it.
type RuleStatus struct {
	ID      string `json:"id"`
	Rule    string `json:"rule"`
	Matched uint64 `json:"matched"`
	Fired   uint64 `json:"fired"`
	// Left is how many firings remain (-1: unlimited).
	Left int64 `json:"left"`
}

// recentFirings bounds the firings kept in memory for query-fault-log.
const recentFirings = 1024

// Set is the armed rules of one process and the doors' operation counters.
//
// With no rule armed at a door, Armed is one atomic load and a predictable
// branch, which is all the door pays. Eval runs under the Set's lock: a
// firing decision is serialised, which keeps it reproducible.
type Set struct {
	seed uint64
	log  *logrus.Entry
	now  func() time.Time

	armed [numDoors]atomic.Bool

	mu       sync.Mutex
	rules    []*armedRule
	state    int64
	ops      map[opKey]*uint64
	replay   map[opKey]map[uint64]Firing
	seq      uint64
	recent   []Firing // ring of the last recentFirings
	out      *bufio.Writer
	outErr   error
	watchers []func(Firing)
	lastLog  time.Time
	unlogged int
}

type opKey struct {
	door   Door
	device string
}

type armedRule struct {
	*Rule
	stream   uint64
	draws    uint64
	matched  uint64
	passed   uint64 // operations that reached the interval step
	fired    uint64
	left     int64
	skip     uint64
	lastFire time.Time
}

// NewSet returns a set with no rule armed whose random streams derive
// from seed.
func NewSet(seed uint64, log *logrus.Entry) *Set {
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	return &Set{seed: seed, log: log.WithField("component", "fault"), now: time.Now,
		ops: map[opKey]*uint64{}, state: 1}
}

// Seed returns the global seed.
func (s *Set) Seed() uint64 { return s.seed }

// Armed reports whether any rule (or replayed firing) is armed at door d.
// A nil Set has none. This is the branch every door takes first.
func (s *Set) Armed(d Door) bool {
	return s != nil && s.armed[d].Load()
}

// SetLog makes every firing append one JSON line to w (the replay log).
func (s *Set) SetLog(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = bufio.NewWriter(w)
}

// Flush writes out the buffered log lines and returns the first write error.
func (s *Set) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out != nil && s.outErr == nil {
		s.outErr = s.out.Flush()
	}
	return s.outErr
}

// Watch registers fn to be called after every firing, outside the Set's
// lock, on the door's goroutine: fn must not block.
func (s *Set) Watch(fn func(Firing)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// Add arms r. Its random stream is seeded from (global seed, rule id), or
// from its own seed= clause. An id already armed is an error; the rule is
// then not armed.
func (s *Set) Add(r *Rule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(r)
}

func (s *Set) addLocked(r *Rule) error {
	for _, a := range s.rules {
		if a.ID == r.ID {
			return fmt.Errorf("fault: rule %q is already armed", r.ID)
		}
	}
	stream := mix(s.seed ^ hashString(r.ID))
	if r.hasSeed {
		stream = mix(r.seed ^ hashString(r.ID))
	}
	s.rules = append(s.rules, &armedRule{Rule: r, stream: stream, left: r.times, skip: r.after})
	s.rearmLocked()
	s.log.WithFields(logrus.Fields{"rule": r.ID, "fault": r.Kind.String()}).Info("fault rule armed")
	return nil
}

// AddAll arms every rule or none: a rules file is never half armed.
func (s *Set) AddAll(rules []*Rule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := map[string]bool{}
	for _, a := range s.rules {
		ids[a.ID] = true
	}
	for _, r := range rules {
		if ids[r.ID] {
			return fmt.Errorf("fault: rule %q is already armed", r.ID)
		}
		ids[r.ID] = true
	}
	for _, r := range rules {
		s.addLocked(r) // cannot fail: the ids were checked under the same lock
	}
	return nil
}

// ErrNoRule is returned by Delete for an id that is not armed.
var ErrNoRule = errors.New("no such rule")

// Delete disarms rule id.
func (s *Set) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.rules, func(a *armedRule) bool { return a.ID == id })
	if i < 0 {
		return fmt.Errorf("fault: rule %q: %w", id, ErrNoRule)
	}
	s.rules = slices.Delete(s.rules, i, i+1)
	s.rearmLocked()
	s.log.WithField("rule", id).Info("fault rule disarmed")
	return nil
}

// Rules lists the armed rules with their counters, in arming order.
func (s *Set) Rules() []RuleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RuleStatus, 0, len(s.rules))
	for _, a := range s.rules {
		out = append(out, RuleStatus{ID: a.ID, Rule: a.String(), Matched: a.matched, Fired: a.fired, Left: a.left})
	}
	return out
}

// Recent returns up to the last 1024 firings, oldest first, and the total
// number of firings so far.
func (s *Set) Recent() ([]Firing, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.recent)
	out := make([]Firing, 0, n)
	if n == recentFirings {
		start := int(s.seq % recentFirings)
		out = append(out, s.recent[start:]...)
		out = append(out, s.recent[:start]...)
	} else {
		out = append(out, s.recent...)
	}
	return out, s.seq
}

// State returns the blkdebug-style state (it starts at 1).
func (s *Set) State() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *Set) rearmLocked() {
	var on [numDoors]bool
	for _, a := range s.rules {
		on[a.Door] = true
	}
	for k := range s.replay {
		on[k.door] = true
	}
	for d := range on {
		s.armed[d].Store(on[d])
	}
}

// Eval counts one operation at door d and decides whether a fault fires
// on it. Doors call it only when Armed(d). Rules are tried in arming
// order and the first that fires wins; each rule evaluates its clauses in
// the order of Linux's should_fail: match and state, times exhausted,
// after (a budget of operations to let pass), interval, probability from
// the rule's own stream, every (at most once per duration); then it fires:
// times decrements, new_state applies, and the firing is logged.
func (s *Set) Eval(d Door, op *Op) (Action, bool) {
	s.mu.Lock()
	key := opKey{d, op.Device}
	c := s.ops[key]
	if c == nil {
		c = new(uint64)
		s.ops[key] = c
	}
	*c++
	n := *c
	if s.replay != nil {
		if f, ok := s.replay[key][n]; ok {
			act := Action{Kind: kindByName(f.Fault), Rule: f.Rule, Args: parseArgs(f.Args), Rand: f.Rand}
			return s.fireLocked(d, op, n, act)
		}
	}
	for _, a := range s.rules {
		if a.Door != d || !a.matches(op) {
			continue
		}
		a.matched++
		if a.state > 0 && s.state != a.state {
			continue
		}
		if a.left == 0 {
			continue
		}
		if a.skip > 0 {
			a.skip--
			continue
		}
		a.passed++
		if a.interval > 1 && a.passed%a.interval != 0 {
			continue
		}
		a.draws++
		draw := mix(a.stream + a.draws*0x9e3779b97f4a7c15)
		if a.hasProbability && !chance(draw, a.probability) {
			continue
		}
		if a.every > 0 {
			now := s.now()
			if !a.lastFire.IsZero() && now.Sub(a.lastFire) < a.every {
				continue
			}
			a.lastFire = now
		}
		a.fired++
		if a.left > 0 {
			a.left--
		}
		if a.newState > 0 {
			s.state = a.newState
		}
		return s.fireLocked(d, op, n, Action{Kind: a.Kind, Rule: a.ID, Args: a.Args, Rand: mix(draw)})
	}
	s.mu.Unlock()
	return Action{}, false
}

// fireLocked records a firing and unlocks s.
func (s *Set) fireLocked(d Door, op *Op, n uint64, act Action) (Action, bool) {
	s.seq++
	f := Firing{Seq: s.seq, Door: d.String(), Device: op.Device, Op: n, Rule: act.Rule,
		Fault: act.Kind.String(), Args: formatArgs(act.Args), Rand: act.Rand}
	if len(s.recent) < recentFirings {
		s.recent = append(s.recent, f)
	} else {
		s.recent[(s.seq-1)%recentFirings] = f
	}
	if s.out != nil && s.outErr == nil {
		line, _ := json.Marshal(f)
		line = append(line, '\n')
		if _, err := s.out.Write(line); err != nil {
			s.outErr = err
			s.log.WithError(err).Error("writing the fault log failed; firings are no longer logged")
		}
	}
	// One line per second at most: a rule firing on every packet must not
	// flood the log; the count of those not logged goes with the next.
	if now := time.Now(); now.Sub(s.lastLog) >= time.Second {
		e := s.log.WithFields(logrus.Fields{"rule": f.Rule, "fault": f.Fault, "device": f.Device, "op": f.Op})
		if s.unlogged > 0 {
			e = e.WithField("suppressed", s.unlogged)
		}
		e.Info("fault injected")
		s.lastLog, s.unlogged = now, 0
	} else {
		s.unlogged++
	}
	watchers := s.watchers
	s.mu.Unlock()
	for _, w := range watchers {
		w(f)
	}
	return act, true
}

// matches reports whether op satisfies every match clause of r.
func (r *Rule) matches(op *Op) bool {
	if !slices.Contains(r.on, op.Point) {
		return false
	}
	switch {
	case r.device != "" && r.device != op.Device,
		r.slice >= 0 && int64(op.Slice) != r.slice,
		r.vector >= 0 && int64(op.Vector) != r.vector,
		r.queue >= 0 && int64(op.Queue) != r.queue,
		r.opcode >= 0 && int64(op.Opcode) != r.opcode,
		r.opname != "" && !strings.EqualFold(r.opname, op.OpName) && !strings.EqualFold("MXGEFW_CMD_"+r.opname, op.OpName),
		r.region != "" && r.region != op.Region,
		r.dir != "" && r.dir != op.Dir:
		return false
	}
	if r.hasRange {
		// The operation matches if it overlaps [lo, hi].
		if op.Addr > r.hi || op.Len > 0 && op.Addr+uint64(op.Len)-1 < r.lo || op.Len == 0 && op.Addr < r.lo {
			return false
		}
	}
	return true
}

// chance reports whether draw falls under pct percent.
func chance(draw uint64, pct float64) bool {
	if pct >= 100 {
		return true
	}
	return float64(draw>>11)/(1<<53) < pct/100
}

// mix is SplitMix64's finaliser: a counter-based stream, so the n-th draw
// of a rule depends only on (seed, rule id, n).
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// hashString is FNV-1a, 64 bits.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func formatArgs(args []Arg) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(a.Name)
		b.WriteByte('=')
		b.WriteString(a.Value)
	}
	return b.String()
}

func parseArgs(s string) []Arg {
	if s == "" {
		return nil
	}
	var out []Arg
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, Arg{Name: k, Value: v})
	}
	return out
}

func kindByName(name string) Kind {
	for k := None; k < numKinds; k++ {
		if kinds[k].Name == name {
			return k
		}
	}
	return None
}

// maxLogLine bounds one line of a replay log.
const maxLogLine = 4096

// ReadLog parses a replay log written through SetLog.
func ReadLog(r io.Reader) ([]Firing, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxLogLine), maxLogLine)
	var out []Firing
	for line := 1; sc.Scan(); line++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var f Firing
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("fault: replay log line %d: %w", line, err)
		}
		d, ok := parseDoor(f.Door)
		if !ok {
			return nil, fmt.Errorf("fault: replay log line %d: unknown door %q", line, f.Door)
		}
		k := kindByName(f.Fault)
		if k == None && f.Fault != "none" || kinds[k].Door != d && k != None {
			return nil, fmt.Errorf("fault: replay log line %d: unknown fault %q at door %s", line, f.Fault, f.Door)
		}
		if f.Op == 0 {
			return nil, fmt.Errorf("fault: replay log line %d: op 0 (counters start at 1)", line)
		}
		out = append(out, f)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fault: replay log: %w", err)
	}
	return out, nil
}

// Replay arms the firings of a log: at each (door, device, op) it names,
// that fault fires again with its arguments and draw. Rules armed as well
// are consulted on the other operations.
func (s *Set) Replay(firings []Firing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replay == nil {
		s.replay = map[opKey]map[uint64]Firing{}
	}
	for _, f := range firings {
		d, _ := parseDoor(f.Door)
		k := opKey{d, f.Device}
		if s.replay[k] == nil {
			s.replay[k] = map[uint64]Firing{}
		}
		s.replay[k][f.Op] = f
	}
	s.rearmLocked()
	s.log.WithField("firings", len(firings)).Info("fault replay armed")
}
