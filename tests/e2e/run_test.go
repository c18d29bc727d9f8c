//go:build e2e

package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myriemu/myriemu/tests/harness"
)

// The tests of `myriemu run` (docs/run.md) drive the built binary as a
// developer would, from a scratch working directory (the default share),
// with their own TMPDIR: every run must leave it empty, and leave no
// process and no mount behind (the harness's leftovers check, on a tag of
// the run's own).

// runOutcome is one `myriemu run` invocation.
type runOutcome struct {
	code           int
	stdout, stderr string
	wall           time.Duration
}

// runInvocation is a `myriemu run` about to start.
type runInvocation struct {
	t         *testing.T
	cmd       *exec.Cmd
	tag       string
	tmp       string // the run's TMPDIR
	dir       string // its working directory (the share)
	keep      string // its --keep directory
	out, errb syncBuffer
	start     time.Time
}

// syncBuffer is a bytes.Buffer the test may read while the run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newRun prepares "myriemu run args..." in a fresh working directory.
func newRun(t *testing.T, args ...string) *runInvocation {
	t.Helper()
	h := harness.New(t, env)
	bin, err := env.MyriemuBinary(h.Context())
	if err != nil {
		t.Fatal(err)
	}
	var tag [8]byte
	if _, err := rand.Read(tag[:]); err != nil {
		t.Fatal(err)
	}
	r := &runInvocation{t: t, tag: hex.EncodeToString(tag[:]), tmp: t.TempDir(), dir: t.TempDir(), keep: h.Dir}
	// Consoles, server log and pcap land in the test's artifacts, kept
	// when it fails.
	r.cmd = exec.Command(bin, append([]string{"run", "--keep", h.Dir}, args...)...)
	r.cmd.Dir = r.dir
	r.cmd.Env = append(os.Environ(), harness.EnvRunTag+"="+r.tag, harness.EnvCache+"="+env.Cache, "TMPDIR="+r.tmp)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.errb
	// Its own process group, as a shell job: a terminal's Ctrl-C goes to
	// the whole group, and so does the test's.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return r
}

func (r *runInvocation) startRun() {
	r.t.Helper()
	r.start = time.Now()
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			_ = r.cmd.Wait()
		}
	})
}

// wait waits for the run to end (at most limit), checks that it left
// nothing behind, and returns what it did.
func (r *runInvocation) wait(limit time.Duration) runOutcome {
	r.t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		r.t.Fatalf("myriemu run still running after %v; killed\nstdout:\n%s\nstderr:\n%s", limit, r.out.String(), r.errb.String())
	}
	o := runOutcome{code: 0, stdout: r.out.String(), stderr: r.errb.String(), wall: time.Since(r.start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		o.code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	r.t.Logf("myriemu run %s: exit %d after %.1f s wall (load average %s)", strings.Join(r.cmd.Args[4:], " "), o.code, o.wall.Seconds(), loadAverage())
	r.checkLeftovers()
	return o
}

// checkLeftovers: no process of the run, no mount under the rootfs, the
// cache or the share, and nothing in its TMPDIR.
func (r *runInvocation) checkLeftovers() {
	r.t.Helper()
	var left []string
	var err error
	// Pdeathsig and reaping take a moment after the run's own exit.
	for i := 0; i < 20; i++ {
		if left, err = harness.Leftovers(r.tag, env.Rootfs.Dir, env.Cache, r.dir); err != nil {
			r.t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ents, _ := os.ReadDir(r.tmp); len(ents) > 0 {
		for _, e := range ents {
			left = append(left, "file left in TMPDIR: "+filepath.Join(r.tmp, e.Name()))
		}
	}
	if len(left) > 0 {
		r.t.Errorf("myriemu run left behind:\n%s", strings.Join(left, "\n"))
	}
}

// run runs "myriemu run args..." to its end.
func run(t *testing.T, limit time.Duration, args ...string) (runOutcome, *runInvocation) {
	t.Helper()
	r := newRun(t, args...)
	r.startRun()
	return r.wait(limit), r
}

func (o runOutcome) dump() string {
	return "--- stdout:\n" + o.stdout + "--- stderr:\n" + o.stderr
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Acceptance 1: one guest with one Myri-10G NIC runs `true`; exit 0. The
// wall time is logged (docs/run.md has the measured figures; the issue's
// bound is 20 s warm on an idle machine, not asserted here: CI's machine
// is loaded and shared).
func TestRunTrue(t *testing.T) {
	o, _ := run(t, 5*time.Minute, "--", "true")
	if o.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", o.code, o.dump())
	}
	for _, want := range []string{
		"guest1: CMD exit 0",
		"kernel warnings (WARN, BUG, oops, lockdep, timed out): none",
		"guest1.myri10ge0 (myri10ge): commands=",
		"myriemu run: exit 0",
	} {
		if !strings.Contains(o.stderr, want) {
			t.Errorf("summary lacks %q\n%s", want, o.dump())
		}
	}
}

// Acceptance 2: two guests on one switch ping each other with the
// documented variables; both exit 0.
func TestRunTwoGuestsPing(t *testing.T) {
	o, _ := run(t, 8*time.Minute, "--guests", "2", "--", "sh", "-c", "ping -c 10 10.0.0.$((3-GUEST_INDEX))")
	if o.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", o.code, o.dump())
	}
	for _, g := range []string{"guest1", "guest2"} {
		re := regexp.MustCompile(`(?m)^` + g + `\| 10 packets transmitted, 10 packets received, 0% packet loss`)
		if !re.MatchString(o.stdout) {
			t.Errorf("%s's ping summary missing or lossy\n%s", g, o.dump())
		}
		if !strings.Contains(o.stderr, g+": CMD exit 0") {
			t.Errorf("summary lacks %s: CMD exit 0\n%s", g, o.dump())
		}
		// Both NICs carried the echoes (and ARP) both ways.
		re = regexp.MustCompile(g + `\.myri10ge0 \(myri10ge\): .* tx_frames=(\d+) .* rx_frames=(\d+)`)
		if m := re.FindStringSubmatch(o.stderr); m == nil || len(m[1]) < 2 || len(m[2]) < 2 {
			t.Errorf("%s's NIC counters show fewer than 10 frames each way: %q\n%s", g, m, o.dump())
		}
	}
}

// Acceptance 3, first half: --build-module shows kbuild's output, loads
// the module, and the WARN_ON it hits at load is in the summary; the exit
// status is non-zero although CMD succeeded.
func TestRunBuildModuleWarns(t *testing.T) {
	src, err := filepath.Abs("testdata/run/warn_on")
	if err != nil {
		t.Fatal(err)
	}
	o, _ := run(t, 5*time.Minute, "--build-module", src, "--", "sh", "-c", "grep run_warn_on /proc/modules")
	if o.code == 0 {
		t.Fatalf("exit 0, want non-zero: the kernel warned\n%s", o.dump())
	}
	for _, want := range []string{
		"LD [M]  run_warn_on.ko", // kbuild's own output
		"guest1: CMD exit 0",     // the module was loaded and CMD found it
		"kernel: WARNING: ",      // the splat's first line, in the summary
		"run_warn_on_init",       // ... naming the function that warned
		"(CMD exited 0, but see above)",
	} {
		if !strings.Contains(o.stderr, want) {
			t.Errorf("stderr lacks %q\n%s", want, o.dump())
		}
	}
	if !strings.Contains(o.stdout, "guest1| run_warn_on ") {
		t.Errorf("CMD did not see the module in /proc/modules\n%s", o.dump())
	}
}

// Acceptance 3, second half: a compile error shows gcc's message as it is
// and exits 2 before anything boots.
func TestRunBuildModuleCompileError(t *testing.T) {
	src, err := filepath.Abs("testdata/run/broken")
	if err != nil {
		t.Fatal(err)
	}
	o, _ := run(t, 3*time.Minute, "--build-module", src, "--", "true")
	if o.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", o.code, o.dump())
	}
	for _, want := range []string{
		"run_broken.c:12:16: error: ",
		"run_broken_undeclared_identifier",
		"nothing booted",
		"Entering directory '" + src + "'", // kbuild's relative names resolve in the developer's tree
	} {
		if !strings.Contains(o.stderr, want) {
			t.Errorf("stderr lacks %q\n%s", want, o.dump())
		}
	}
	if strings.Contains(o.stdout, "guest1|") || strings.Contains(o.stderr, "reached /init") {
		t.Errorf("a guest booted after a compile error\n%s", o.dump())
	}
}

// Acceptance 4, first half: CMD's own exit status comes back, and CMD ran
// in the shared working directory, read-write.
func TestRunExitStatusAndShare(t *testing.T) {
	r := newRun(t, "--", "sh", "-c", `cat from-host.txt && echo "from guest $GUEST_NAME" > from-guest.txt && exit 7`)
	if err := os.WriteFile(filepath.Join(r.dir, "from-host.txt"), []byte("written on the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.startRun()
	o := r.wait(5 * time.Minute)
	if o.code != 7 {
		t.Fatalf("exit %d, want 7 (CMD's)\n%s", o.code, o.dump())
	}
	if !strings.Contains(o.stdout, "guest1| written on the host") {
		t.Errorf("CMD did not read the host's file in the share\n%s", o.dump())
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "from-guest.txt"))
	if err != nil || string(b) != "from guest guest1\n" {
		t.Errorf("the guest's file in the share: %q, %v", b, err)
	}
}

// Acceptance 4, second half: Ctrl-C (SIGINT to the run's process group,
// as a terminal sends it) or SIGTERM (to run alone, as a supervisor sends
// it) while the guest boots stops everything and leaves no QEMU, no
// server, no mount and no scratch file.
func TestRunInterruptDuringBoot(t *testing.T) {
	for _, tt := range []struct {
		name  string
		sig   syscall.Signal
		group bool
		want  int
	}{
		{"ctrl-c", syscall.SIGINT, true, 130},
		{"sigterm", syscall.SIGTERM, false, 143},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRun(t, "--", "sleep", "600")
			r.startRun()
			r.waitForQEMU()
			pid := r.cmd.Process.Pid
			if tt.group {
				pid = -pid
			}
			if err := syscall.Kill(pid, tt.sig); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			o := r.wait(time.Minute)
			t.Logf("stopped %.1f s after %v", time.Since(sent).Seconds(), tt.sig)
			if o.code != tt.want {
				t.Errorf("exit %d, want %d\n%s", o.code, tt.want, o.dump())
			}
			if strings.Contains(o.stderr, "guest1 reached /init after") {
				t.Logf("note: the guest had reached /init before the signal (a very fast boot)")
			}
			if !strings.Contains(o.stderr, "interrupted") {
				t.Errorf("summary does not say it was interrupted\n%s", o.dump())
			}
		})
	}
}

var qemuRE = regexp.MustCompile(`ld-linux-x86-64|qemu-system-x86_64`)

// waitForQEMU waits until the run's guest QEMU runs (the server starts
// before it).
func (r *runInvocation) waitForQEMU() {
	r.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		left, err := harness.Leftovers(r.tag)
		if err != nil {
			r.t.Fatal(err)
		}
		// The QEMU starts right after its console file is made. The
		// rootfs's QEMU runs through its ld.so; a host QEMU goes by name.
		_, cerr := os.Stat(filepath.Join(r.keep, "guest1", "console.log"))
		if cerr == nil && qemuRE.MatchString(strings.Join(left, "\n")) {
			r.t.Logf("running before the signal:\n%s", strings.Join(left, "\n"))
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("QEMU never started\nstdout:\n%s\nstderr:\n%s", r.out.String(), r.errb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --shell: the first guest's console takes standard input; what the shell
// prints comes back, and its exit status is run's.
func TestRunShell(t *testing.T) {
	r := newRun(t, "--shell")
	in, err := r.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.startRun()
	// Type only once the prompt is there, as a person would.
	deadline := time.Now().Add(4 * time.Minute)
	for !strings.Contains(r.out.String(), "guest1:") {
		if time.Now().After(deadline) {
			t.Fatalf("no shell prompt within 4 min\nstdout:\n%s\nstderr:\n%s", r.out.String(), r.errb.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := io.WriteString(in, "echo shell-ok $GUEST_NAME $GUEST_ADDR\nexit 4\n"); err != nil {
		t.Fatal(err)
	}
	o := r.wait(3 * time.Minute)
	in.Close()
	if o.code != 4 {
		t.Errorf("exit %d, want 4 (the shell's)\n%s", o.code, o.dump())
	}
	if !strings.Contains(o.stdout, "shell-ok guest1 10.0.0.1") {
		t.Errorf("the shell's output is missing\n%s", o.dump())
	}
}
