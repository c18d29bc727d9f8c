package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// T runs scenarios inside a Go test: it keeps the files of a failed test
// under tests/artifacts/<test>/, stops every server it started when the
// test ends, and fails the test with the full report (verdict, QEMU command
// line, guest console, server logs).
type T struct {
	testing.TB
	Env *Env
	// Dir is tests/artifacts/<test name>, removed when the test passes.
	Dir string

	work    string // per-test scratch (sockets)
	servers []*Server
}

var testSeq atomic.Int64

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// New prepares a T for tb. env comes from the package's TestMain.
func New(tb testing.TB, env *Env) *T {
	tb.Helper()
	if env == nil {
		tb.Fatalf("e2e harness: no environment (TestMain did not set one up)")
	}
	h := &T{TB: tb, Env: env}
	h.Dir = filepath.Join(env.Repo, "tests", "artifacts", unsafeName.ReplaceAllString(tb.Name(), "_"))
	if err := os.RemoveAll(h.Dir); err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	h.work = filepath.Join(env.Work, fmt.Sprintf("t%d", testSeq.Add(1)))
	if err := os.MkdirAll(h.work, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for i := len(h.servers) - 1; i >= 0; i-- {
			if err := h.servers[i].Stop(); err != nil {
				tb.Errorf("stopping server: %v\n%s", err, indent(tail(h.servers[i].Log(), 100)))
			}
		}
		if tb.Failed() {
			tb.Logf("artifacts kept in %s", h.Dir)
		} else {
			_ = os.RemoveAll(h.Dir)
		}
	})
	return h
}

// Socket returns a fresh socket path for name in the test's scratch dir.
func (h *T) Socket(name string) string { return filepath.Join(h.work, name+".sock") }

// Context returns a context that ends a little before the test's deadline.
func (h *T) Context() context.Context {
	ctx := context.Background()
	if d, ok := h.TB.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, dl.Add(-10*time.Second))
			h.Cleanup(cancel)
		}
	}
	return ctx
}

// Server starts "myriemu args..." (stopped when the test ends) and fails
// the test if it does not become ready within 30 s.
func (h *T) Server(name string, args ...string) *Server {
	h.Helper()
	logFile, err := os.Create(filepath.Join(h.Dir, "server-"+name+".log"))
	if err != nil {
		h.Fatal(err)
	}
	h.Cleanup(func() { logFile.Close() })
	s, err := h.Env.StartServer(h.Context(), name, args, 30*time.Second, logFile)
	if err != nil {
		h.Fatalf("%v", err)
	}
	h.servers = append(h.servers, s)
	return s
}

// Servers returns the servers started so far.
func (h *T) Servers() []*Server { return h.servers }

// breakIfAsked makes g's scenario start with a failing result when
// EnvBreak matches the test's name, so that anyone can watch a guest
// assertion fail `make test` and see what the report shows.
func (h *T) breakIfAsked(g *Guest) {
	h.Helper()
	expr := os.Getenv(EnvBreak)
	if expr == "" {
		return
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		h.Fatalf("%s=%q: %v", EnvBreak, expr, err)
	}
	if re.MatchString(h.Name()) {
		g.Scenario = fmt.Sprintf("echo 'E2E-RESULT name=deliberate.break status=fail detail=%s=%s matched %s'\n%s",
			EnvBreak, unsafeName.ReplaceAllString(expr, "_"), unsafeName.ReplaceAllString(h.Name(), "_"), g.Scenario)
	}
}

// Guest boots g with its files under the test's artifacts directory and
// returns the run without judging it.
func (h *T) Guest(g Guest) *Run {
	h.Helper()
	h.breakIfAsked(&g)
	if g.Dir == "" {
		g.Dir = filepath.Join(h.Dir, g.Name)
	}
	start := time.Now()
	r := h.Env.RunGuest(h.Context(), g)
	h.Logf("guest %s: %s in %.1fs (QEMU %.1fs)", g.Name, map[bool]string{true: "passed", false: "failed"}[r.Err == nil],
		time.Since(start).Seconds(), r.Elapsed.Seconds())
	return r
}

// Guests boots several guests at once, each with its files under the
// test's artifacts directory, and fails the test with every failed guest's
// report unless all passed.
func (h *T) Guests(gs ...Guest) []*Run {
	h.Helper()
	for i := range gs {
		h.breakIfAsked(&gs[i])
		if gs[i].Dir == "" {
			gs[i].Dir = filepath.Join(h.Dir, gs[i].Name)
		}
	}
	runs := h.Env.RunGuests(h.Context(), gs...)
	var reports []string
	for _, r := range runs {
		h.Logf("guest %s: %s (QEMU %.1fs)", r.Guest, map[bool]string{true: "passed", false: "failed"}[r.Err == nil], r.Elapsed.Seconds())
		if r.Err != nil {
			reports = append(reports, r.Report(h.servers...))
		}
	}
	if len(reports) > 0 {
		h.Fatalf("%s", strings.Join(reports, "\n"))
	}
	return runs
}

// MustPass boots g and fails the test with the full report unless it
// passed.
func (h *T) MustPass(g Guest) *Run {
	h.Helper()
	r := h.Guest(g)
	if r.Err != nil {
		h.Fatalf("%s", r.Report(h.servers...))
	}
	return r
}

// Results renders the result lines of a run, for logs.
func Results(r *Run) string {
	if r.Console == nil {
		return ""
	}
	var b strings.Builder
	for _, res := range r.Console.Results {
		fmt.Fprintf(&b, "  %-4s %s: %s\n", res.Status, res.Name, res.Detail)
	}
	return b.String()
}
