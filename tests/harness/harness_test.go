package harness

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as a fake myriemu when HARNESS_FAKE_SERVER is set.
func TestMain(m *testing.M) {
	if mode := os.Getenv("HARNESS_FAKE_SERVER"); mode != "" {
		os.Exit(fakeServer(mode))
	}
	os.Exit(m.Run())
}

// fakeServer modes: ready (print the readiness line, exit 0 on SIGTERM),
// die (exit 1 before it), silent (never ready), stubborn (ready, ignores
// SIGTERM).
func fakeServer(mode string) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Fprintln(os.Stderr, "level=info msg=listening")
	switch mode {
	case "die":
		fmt.Fprintln(os.Stderr, "level=error msg=\"socket in use\"")
		return 1
	case "silent":
		time.Sleep(time.Hour)
		return 0
	}
	fmt.Println("myriemu: ready device=td0 socket=/x.sock")
	if mode == "stubborn" {
		time.Sleep(time.Hour)
	}
	<-sig
	fmt.Fprintln(os.Stderr, "level=info msg=stopped")
	return 0
}

func fakeEnv(t *testing.T, mode string) *Env {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A wrapper script gives the fake its mode (StartServer passes only args).
	script := t.TempDir() + "/myriemu"
	body := fmt.Sprintf("#!/bin/sh\nHARNESS_FAKE_SERVER=%s exec %s \"$@\"\n", mode, exe)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Env{Work: t.TempDir(), Tag: "test" + mode, myriemu: script, programs: map[string]string{}}
}

func TestServerLifecycle(t *testing.T) {
	e := fakeEnv(t, "ready")
	s, err := e.StartServer(t.Context(), "srv", []string{"serve"}, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	left, err := Leftovers(e.Tag)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || !strings.Contains(left[0], "process") {
		t.Errorf("Leftovers while running = %q, want the server", left)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop = %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop = %v", err)
	}
	if !strings.Contains(s.Log(), "myriemu: ready") || !strings.Contains(s.Log(), "msg=stopped") {
		t.Errorf("log = %q", s.Log())
	}
	if left, _ := Leftovers(e.Tag); len(left) != 0 {
		t.Errorf("Leftovers after Stop = %q", left)
	}
}

func TestServerNotReady(t *testing.T) {
	// The bounds leave a loaded machine time to start the (race-built)
	// fake and let it print: "die" never waits for its bound, "silent"
	// always does.
	tests := []struct {
		mode, want string
		bound      time.Duration
	}{
		{"die", "exited before its readiness line", time.Minute},
		{"silent", "printed no \"myriemu: ready\" line within", 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			e := fakeEnv(t, tt.mode)
			_, err := e.StartServer(t.Context(), "srv", nil, tt.bound, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "msg=listening") {
				t.Fatalf("StartServer = %v, want %q and the server's output", err, tt.want)
			}
			if left, _ := Leftovers(e.Tag); len(left) != 0 {
				t.Errorf("Leftovers = %q", left)
			}
		})
	}
}

func TestServerStubbornIsKilled(t *testing.T) {
	e := fakeEnv(t, "stubborn")
	s, err := e.StartServer(t.Context(), "srv", nil, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Stop()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want killed", err)
	}
	if d := time.Since(start); d < 5*time.Second || d > 10*time.Second {
		t.Errorf("Stop took %v, want about 5 s", d)
	}
	if left, _ := Leftovers(e.Tag); len(left) != 0 {
		t.Errorf("Leftovers = %q", left)
	}
}

func TestLeftoversFindsTaggedProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.Env = append(os.Environ(), EnvRunTag+"=abc123")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	left, err := Leftovers("abc123")
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || !strings.Contains(left[0], "sleep 30") {
		t.Errorf("Leftovers = %q, want the sleep", left)
	}
	if left, _ := Leftovers("abc123"); len(left) != 0 {
		t.Errorf("after kill: %q", left)
	}
	if left, _ := Leftovers("other"); len(left) != 0 {
		t.Errorf("other tag: %q", left)
	}
}

func TestMountsUnder(t *testing.T) {
	// "/" is always mounted; a fresh temp dir never is.
	got, err := mountsUnder("/")
	if err != nil || len(got) == 0 {
		t.Errorf("mountsUnder(/) = %q, %v", got, err)
	}
	if got, _ := mountsUnder(t.TempDir()); len(got) != 0 {
		t.Errorf("mountsUnder(tempdir) = %q", got)
	}
}

func TestHelpers(t *testing.T) {
	if got := unescapeMount(`/a\040b\011c`); got != "/a b\tc" {
		t.Errorf("unescapeMount = %q", got)
	}
	if !isZombie([]byte("123 (my prog) Z 1 2")) || isZombie([]byte("123 (a) Z) S 1")) {
		t.Error("isZombie")
	}
	if got := tail("a\nb\nc\n", 2); got != "(1 earlier lines cut)\nb\nc" {
		t.Errorf("tail = %q", got)
	}
	if got := indent("a\nb"); got != "    a\n    b" {
		t.Errorf("indent = %q", got)
	}
	if got := indent(""); got != "    (empty)" {
		t.Errorf("indent empty = %q", got)
	}
}

func TestLockedBufferLines(t *testing.T) {
	var lines []string
	b := &lockedBuffer{onLine: func(l string) { lines = append(lines, l) }}
	for _, chunk := range []string{"E2E-BO", "OT kernel=x\r\nsecond", " line\r\n", "partial"} {
		if _, err := b.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"E2E-BOOT kernel=x", "second line"}, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if b.String() != "E2E-BOOT kernel=x\r\nsecond line\r\npartial" {
		t.Errorf("String() = %q", b.String())
	}
}

func TestReport(t *testing.T) {
	r := &Run{
		Guest: "g", Err: fmt.Errorf("failed: a: boom"), CommandLine: "qemu -kernel k",
		ConsoleText: "E2E-BOOT kernel=k uptime=1\r\nE2E-RESULT name=a status=fail detail=boom\r\n",
		QEMUStderr:  "qemu: warning", Dir: "/tmp/x", Timeout: time.Minute, BootTimeout: time.Minute,
	}
	rep := r.Report(&Server{Name: "srv", Argv: []string{"myriemu", "serve"}, log: &lockedBuffer{}})
	for _, want := range []string{
		"=== guest g FAILED", "never reached /init", "    failed: a: boom", "--- QEMU command line:\n    qemu -kernel k",
		"--- guest console:\n    E2E-BOOT kernel=k uptime=1\n    E2E-RESULT name=a status=fail detail=boom",
		"--- QEMU stderr:\n    qemu: warning", "--- server srv log (myriemu serve):\n    (empty)", "files kept in /tmp/x",
	} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}

func TestBreakIfAsked(t *testing.T) {
	const scenario = "e2e-probe -v"
	for _, c := range []struct {
		expr  string
		broke bool
	}{
		{"", false},
		{"TestSomethingElse", false},
		{"TestBreak", true},
		{"^TestBreakIfAsked$", true},
	} {
		t.Setenv(EnvBreak, c.expr)
		g := Guest{Scenario: scenario}
		(&T{TB: t}).breakIfAsked(&g)
		if !c.broke {
			if g.Scenario != scenario {
				t.Errorf("%s=%q changed the scenario to %q", EnvBreak, c.expr, g.Scenario)
			}
			continue
		}
		first, rest, _ := strings.Cut(g.Scenario, "\n")
		if rest != scenario || !strings.HasPrefix(first, "echo 'E2E-RESULT name=deliberate.break status=fail detail=") {
			t.Errorf("%s=%q: scenario %q, want a failing result line, then the scenario", EnvBreak, c.expr, g.Scenario)
		}
	}
}
