package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRun(t *testing.T) {
	kinds := deviceKinds()
	base := func(mod func(*runConfig)) runConfig {
		c := runConfig{Guests: 1, NICs: []nicSpec{{Kind: "myri10ge"}}, Share: "/home/dev/drv", Cwd: "/home/dev/drv",
			Timeout: 10 * time.Minute, Boot: 3 * time.Minute, Memory: 512, LogLevel: "info", Cmd: []string{"true"}}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := []struct {
		name, args  string
		want        runConfig
		errContains string
	}{
		{name: "defaults", args: "-- true", want: base(nil)},
		{name: "CMD without --", args: "true", want: base(nil)},
		{name: "two guests, two cards, modules in order", args: "--guests 2 --nic myri10ge,slices=2 --nic testdev " +
			"--module a.ko --build-module ../src --module /lib/b.ko.xz -- sh -c x",
			want: base(func(c *runConfig) {
				c.Guests = 2
				c.NICs = []nicSpec{{Kind: "myri10ge", Opts: []string{"slices=2"}}, {Kind: "testdev"}}
				c.Modules = []moduleSource{{Path: "/home/dev/drv/a.ko"}, {Path: "/home/dev/src", Build: true}, {Path: "/lib/b.ko.xz"}}
				c.Cmd = []string{"sh", "-c", "x"}
			})},
		{name: "share elsewhere: CMD starts in the share", args: "--share /srv/x --keep k --faults f.rules --control /run/c.sock -- true",
			want: base(func(c *runConfig) {
				c.Share, c.Cwd = "/srv/x", "/srv/x"
				c.Keep, c.Faults, c.Control = "/home/dev/drv/k", "/home/dev/drv/f.rules", "/run/c.sock"
			})},
		{name: "share a parent: CMD starts in the working directory", args: "--share .. -- true",
			want: base(func(c *runConfig) { c.Share = "/home/dev" })},
		{name: "no share", args: "--share none -- true", want: base(func(c *runConfig) { c.Share, c.Cwd = "", "/" })},
		{name: "shell", args: "--shell", want: base(func(c *runConfig) { c.Shell, c.Cmd = true, nil })},

		{name: "no CMD", args: "", errContains: "no CMD"},
		{name: "shell and CMD", args: "--shell -- true", errContains: "--shell and a CMD"},
		{name: "zero guests", args: "--guests 0 -- true", errContains: "--guests 0"},
		{name: "too many guests", args: "--guests 17 -- true", errContains: "--guests 17"},
		{name: "unknown kind", args: "--nic myri99 -- true", errContains: `unknown kind "myri99"`},
		{name: "bad value, the kind's own check", args: "--nic myri10ge,serial=abc -- true", errContains: `--nic "myri10ge,serial=abc"`},
		{name: "run sets fd", args: "--nic myri10ge,fd=3 -- true", errContains: "run sets fd="},
		{name: "run sets socket", args: "--nic myri10ge,socket=/x -- true", errContains: "run sets socket="},
		{name: "one mac for two guests", args: "--guests 2 --nic myri10ge,mac=00:60:dd:00:00:01 -- true", errContains: "same MAC"},
		{name: "unknown key", args: "--nic myri10ge,speed=40 -- true", errContains: `unknown key "speed"`},
		{name: "bad slices", args: "--nic myri10ge,slices=64 -- true", errContains: "slices= wants 1..32"},
		{name: "module not a .ko", args: "--module src -- true", errContains: "want a .ko"},
		{name: "share root", args: "--share / -- true", errContains: "--share /:"},
		{name: "share under proc", args: "--share /proc/x -- true", errContains: "under /proc"},
		{name: "share bin", args: "--share /bin -- true", errContains: "hide the guest's own /bin"},
		{name: "bad log level", args: "--log-level loud -- true", errContains: `--log-level "loud"`},
		{name: "tiny memory", args: "--memory 64 -- true", errContains: "--memory 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRun(strings.Fields(tt.args), kinds, "/home/dev/drv", io.Discard)
			if tt.errContains != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.errContains) {
					t.Fatalf("error %v, want a usage error containing %q", err, tt.errContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanAndServeArgs(t *testing.T) {
	cfg := runConfig{Guests: 2, NICs: []nicSpec{{Kind: "testdev"}, {Kind: "myri10ge", Opts: []string{"slices=2"}}}, LogLevel: "info",
		Faults: "/f", Control: "/c"}
	gs := planGuests(cfg, "/s")
	got := serveArgs(cfg, gs, "/k/wire.pcap")
	want := []string{"serve", "--log-format", "json", "--log-level", "info",
		"--device", "testdev,socket=/s/g1n0.sock,name=guest1.testdev0",
		"--device", "myri10ge,socket=/s/g1n1.sock,name=guest1.myri10ge1,slices=2,mac=00:60:dd:00:01:01",
		"--device", "testdev,socket=/s/g2n0.sock,name=guest2.testdev0",
		"--device", "myri10ge,socket=/s/g2n1.sock,name=guest2.myri10ge1,slices=2,mac=00:60:dd:00:01:02",
		"--pcap", "/k/wire.pcap", "--faults", "/f", "--control", "/c"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("serve args (-want +got):\n%s", diff)
	}
	if c := gs[1].Cards[1]; c.Netdev != 0 || gs[1].Cards[0].Netdev != -1 {
		t.Errorf("netdev numbering: %+v", gs[1].Cards)
	}
	devs := gs[0].devices()
	if len(devs) != 2 || devs[0].Props != nil || devs[1].Props != nil || devs[1].ID != "nic1" {
		t.Errorf("devices = %+v", devs)
	}
}

// The scenario must be valid sh, quote what it runs, and export the
// documented variables.
func TestScenario(t *testing.T) {
	cfg := runConfig{Guests: 2, NICs: []nicSpec{{Kind: "myri10ge"}, {Kind: "myri10ge"}}, Share: "/home/dev/my drv",
		Cwd: "/home/dev/my drv", Cmd: []string{"sh", "-c", "echo 'it''s' $GUEST_ADDR"}}
	g := planGuests(cfg, "/s")[1]
	s := scenario(cfg, g, []string{"my_mod"})
	for _, want := range []string{
		"mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 myriemu-share '/home/dev/my drv'",
		"[ -d /sys/module/my_mod ]",
		"ip addr add 10.0.0.2/24 dev eth0",
		"ip addr add 10.0.1.2/24 dev eth1",
		"export GUEST_INDEX=2 GUEST_COUNT=2 GUEST_NAME=guest2 GUEST_ADDRS='10.0.0.1 10.0.0.2' NIC_COUNT=2 HOME=/ " +
			"NIC0_IF=eth0 NIC0_ADDR=10.0.0.2 GUEST_ADDR=10.0.0.2 NIC1_IF=eth1 NIC1_ADDR=10.0.1.2\n",
		"barrier ready\necho MYRIEMU-RUN cmd-start\nsh -c 'echo '\\''it'\\'''\\''s'\\'' $GUEST_ADDR'\n",
		"barrier done",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("scenario lacks %q:\n%s", want, s)
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh on the host: %v", err)
	}
	cmd := exec.Command(sh, "-n")
	cmd.Stdin = strings.NewReader(s)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s\n%s", err, out, s)
	}
	// The command line survives quoting: run the CMD part on the host.
	out, err := exec.Command(sh, "-c", "export GUEST_ADDR=10.0.0.2; "+shq(cfg.Cmd[0])+" "+shq(cfg.Cmd[1])+" "+shq(cfg.Cmd[2])).Output()
	if err != nil || string(out) != "its 10.0.0.2\n" {
		t.Errorf("quoted CMD printed %q, %v", out, err)
	}
}

func TestConsoleLiveAndOutcome(t *testing.T) {
	var live, file bytes.Buffer
	booted := 0
	c := &console{name: "guest1", file: &file, live: &live, liveMu: new(sync.Mutex), onBoot: func() { booted++ }}
	text := "[    1.000000] early line\r\n" +
		"E2E-BOOT kernel=7.2 uptime=3.1\r\n" +
		"E2E-RESULT name=insmod:dca status=pass detail=\r\n" +
		"E2E-RESULT name=insmod:my_mod status=fail detail=insmod: can't insert 'my_mod.ko': invalid module format\r\n" +
		"MYRIEMU-RUN cmd-start\r\n" +
		"hello from CMD: request timed out\r\n" +
		"no newline at the endMYRIEMU-RUN cmd-exit rc=3\r\n" +
		"MYRIEMU-DMESG [    2.100000] WARNING: CPU: 0 PID: 1 at foo.c:1 init+0x1/0x2\r\n" +
		"MYRIEMU-DMESG [    2.200000] myri10ge 0000:01:00.0: command 21 timed out\r\n" +
		"[    2.100000] WARNING: CPU: 0 PID: 1 at foo.c:1 init+0x1/0x2\r\n" +
		"E2E-DONE rc=3 uptime=9\r\n" +
		"[    9.000000] reboot: Power down"
	for _, chunk := range strings.SplitAfter(text, "t") { // arbitrary write boundaries
		c.Write([]byte(chunk))
	}
	c.flush()
	if file.String() != text || booted != 1 {
		t.Errorf("file %d bytes (want %d), booted %d times", file.Len(), len(text), booted)
	}
	wantLive := "guest1| [    1.000000] early line\n" +
		"guest1| insmod my_mod failed: insmod: can't insert 'my_mod.ko': invalid module format\n" +
		"guest1| hello from CMD: request timed out\n" +
		"guest1| no newline at the end\n" +
		"guest1| [    2.100000] WARNING: CPU: 0 PID: 1 at foo.c:1 init+0x1/0x2\n" +
		"guest1| [    9.000000] reboot: Power down\n"
	if diff := cmp.Diff(wantLive, live.String()); diff != "" {
		t.Errorf("live console (-want +got):\n%s", diff)
	}
	o := outcome(&guestRun{con: c})
	want := guestOutcome{cmdRC: 3,
		insmod: []string{"my_mod: insmod: can't insert 'my_mod.ko': invalid module format"},
		// CMD's own "timed out" is not the kernel's; the WARNING once.
		warnings: []string{"WARNING: CPU: 0 PID: 1 at foo.c:1 init+0x1/0x2", "myri10ge 0000:01:00.0: command 21 timed out"},
	}
	if diff := cmp.Diff(want, o, cmp.AllowUnexported(guestOutcome{})); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
}

func TestExitCode(t *testing.T) {
	g := func(lines ...string) *guestRun {
		c := &console{name: "g", live: io.Discard, liveMu: new(sync.Mutex)}
		c.Write([]byte(strings.Join(lines, "\n") + "\n"))
		return &guestRun{con: c}
	}
	ok := func(rc string) *guestRun { return g("MYRIEMU-RUN cmd-exit rc=" + rc) }
	warned := g("MYRIEMU-RUN cmd-exit rc=0", "MYRIEMU-DMESG [ 1.0] BUG: sleeping function called")
	tests := []struct {
		name string
		s    summary
		want int
	}{
		{"all zero", summary{guests: []*guestRun{ok("0"), ok("0")}}, 0},
		{"worst CMD", summary{guests: []*guestRun{ok("7"), ok("0"), ok("3")}}, 7},
		{"kernel warned", summary{guests: []*guestRun{ok("0"), warned}}, 1},
		{"CMD failed and kernel warned: CMD's", summary{guests: []*guestRun{ok("4"), warned}}, 4},
		{"setup failed", summary{guests: []*guestRun{g("MYRIEMU-RUN setup-failed eth0: no carrier")}}, 1},
		{"timed out", summary{guests: []*guestRun{{con: ok("0").con, timedOut: "x"}}}, 1},
		{"server unclean", summary{guests: []*guestRun{ok("0")}, serverErr: errors.New("exit 1")}, 1},
		{"interrupted", summary{guests: []*guestRun{ok("0")}, interrupted: true}, 130},
	}
	for _, tt := range tests {
		if got := tt.s.exitCode(); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestServerLog(t *testing.T) {
	log := `{"component":"myriemu","level":"info","msg":"ready","time":"t"}
not json
{"commands":59,"device":"guest1.myri10ge0","level":"info","msg":"NIC detached","rx_frames":20,"tx_frames":30,"time":"t"}
{"device":"guest1.myri10ge0","level":"warning","msg":"guest error","slice":0,"time":"t"}
`
	e := logEntries(log)
	want := map[string]map[string]uint64{"guest1.myri10ge0": {"commands": 59, "rx_frames": 20, "tx_frames": 30}}
	if diff := cmp.Diff(want, nicCounters(e)); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"warning: guest error device=guest1.myri10ge0 slice=0"}, serverProblems(e)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestCopySourceAndRewriter(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for _, f := range []string{"Kbuild", "a.c", "sub/b.h", "a.o", "a.ko", ".a.o.cmd", "a.mod.c", "Module.symvers", ".git/HEAD"} {
		p := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := copySource(src, dst); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dst, p)
			got = append(got, rel)
		}
		return nil
	})
	if diff := cmp.Diff([]string{"Kbuild", "a.c", "sub/b.h"}, got); diff != "" {
		t.Errorf("copied (-want +got):\n%s", diff)
	}

	var out bytes.Buffer
	w := &pathRewriter{out: &out, r: strings.NewReplacer("/mnt/", "/src/", "'/mnt'", "'/src'")}
	w.Write([]byte("make[1]: Entering directory '/mnt'\n/mnt/a.c:1:1: err"))
	w.Write([]byte("or: x\n/mntx stays"))
	w.Flush()
	if want := "make[1]: Entering directory '/src'\n/src/a.c:1:1: error: x\n/mntx stays\n"; out.String() != want {
		t.Errorf("rewritten %q, want %q", out.String(), want)
	}
}

func TestModuleNameOf(t *testing.T) {
	for in, want := range map[string]string{"/x/my-drv.ko": "my_drv", "dca.ko.xz": "dca", "a.ko": "a"} {
		if got := moduleNameOf(in); got != want {
			t.Errorf("moduleNameOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// --shell: bytes reach the terminal as they come (a prompt has no
// newline) until the shell's exit marker; the kernel log dump after it is
// filtered as usual.
func TestConsoleRaw(t *testing.T) {
	var live bytes.Buffer
	c := &console{name: "guest1", live: &live, liveMu: new(sync.Mutex), raw: true}
	c.Write([]byte("guest1:/# "))
	if live.String() != "guest1:/# " {
		t.Fatalf("prompt not shown at once: %q", live.String())
	}
	c.Write([]byte("exit 3\r\nMYRIEMU-RUN cmd-exit rc=3\r\nMYRIEMU-DMESG [ 1.0] x\r\n[ 2.0] reboot: Power down\r\n"))
	want := "guest1:/# exit 3\r\nMYRIEMU-RUN cmd-exit rc=3\r\nguest1| [ 2.0] reboot: Power down\n"
	if live.String() != want {
		t.Errorf("live %q, want %q", live.String(), want)
	}
}

func TestSignalCode(t *testing.T) {
	for _, tt := range []struct {
		cause error
		want  int
	}{
		{errors.New("terminated signal received"), 143},
		{errors.New("interrupt signal received"), 130},
		{context.Canceled, 130}, // --shell's Ctrl-]
	} {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(tt.cause)
		if got := signalCode(ctx); got != tt.want {
			t.Errorf("cause %v: %d, want %d", tt.cause, got, tt.want)
		}
	}
}
