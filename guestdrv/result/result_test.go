package result

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	p := &Printer{W: &buf}
	p.Passf("testdev.scratch", "wrote %#x read %#x", 0xdead, 0xdead)
	p.Failf("dma fill", "byte 3 = %#x,\nwant %#x", 1, 2) // name sanitized, detail flattened
	p.Infof("pci.found", "")
	p.Check("ok", nil, "fine")
	p.Check("bad", errors.New("boom"), "unused")
	if p.Failures != 2 {
		t.Errorf("Failures = %d, want 2", p.Failures)
	}
	c := ParseString(strings.ReplaceAll(buf.String(), "\n", "\r\n"))
	want := []Result{
		{"testdev.scratch", Pass, "wrote 0xdead read 0xdead"},
		{"dma_fill", Fail, "byte 3 = 0x1, want 0x2"},
		{"pci.found", Info, ""},
		{"ok", Pass, "fine"},
		{"bad", Fail, "boom"},
	}
	if diff := cmp.Diff(want, c.Results); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if len(c.Malformed) != 0 {
		t.Errorf("malformed: %q", c.Malformed)
	}
}

const goodConsole = "[    0.000000] Linux version 7.2.13\r\n" +
	"E2E-BOOT kernel=7.2.13+deb14-amd64 uptime=3.10\r\n" +
	"E2E-RESULT name=pci.list status=info detail=0000:00:00.0 8086:29c0\r\n" +
	"[    3.5] random: crng init done E2E-RESULT name=a status=pass detail=x y z\r\n" +
	"E2E-DONE rc=0\r\n" +
	"[    3.6] reboot: Power down\r\n"

func TestParse(t *testing.T) {
	c := ParseString(goodConsole)
	if !c.Booted || c.Kernel != "7.2.13+deb14-amd64" {
		t.Errorf("Booted=%v Kernel=%q", c.Booted, c.Kernel)
	}
	if !c.Done || c.RC != 0 {
		t.Errorf("Done=%v RC=%d", c.Done, c.RC)
	}
	want := []Result{{"pci.list", Info, "0000:00:00.0 8086:29c0"}, {"a", Pass, "x y z"}}
	if diff := cmp.Diff(want, c.Results); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if got := c.Lines[1]; got != "E2E-BOOT kernel=7.2.13+deb14-amd64 uptime=3.10" {
		t.Errorf("line 1 = %q (carriage return kept?)", got)
	}
	if err := c.Verdict("a", "pci.list"); err != nil {
		t.Errorf("Verdict = %v", err)
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name    string
		console string
		require []string
		want    []string // substrings of the error; none = pass
	}{
		{"pass", goodConsole, nil, nil},
		{"never booted", "SeaBIOS\r\n", nil, []string{"never reached /init", "did not finish", "no result passed"}},
		{"hang", "E2E-BOOT kernel=k uptime=1\nE2E-RESULT name=a status=pass detail=\n", nil,
			[]string{"did not finish"}},
		{"failed assertion", "E2E-BOOT kernel=k uptime=1\nE2E-RESULT name=a status=fail detail=want 1 got 2\nE2E-DONE rc=1\n",
			nil, []string{"failed: a: want 1 got 2", "rc=1"}},
		{"panic", "E2E-BOOT kernel=k uptime=1\nKernel panic - not syncing: Attempted to kill init!\n", nil,
			[]string{"kernel panic: Kernel panic - not syncing"}},
		{"missing required", goodConsole, []string{"testdev.dma"}, []string{"missing result testdev.dma"}},
		{"only info", "E2E-BOOT kernel=k uptime=1\nE2E-RESULT name=a status=info detail=\nE2E-DONE rc=0\n", nil,
			[]string{"no result passed"}},
		{"malformed", "E2E-BOOT kernel=k uptime=1\nE2E-RESULT name=a status=maybe detail=\nE2E-RESULT name=b status=pass detail=\nE2E-DONE rc=0\n",
			nil, []string{"malformed result line: E2E-RESULT name=a status=maybe"}},
		{"bad rc", "E2E-BOOT kernel=k uptime=1\nE2E-RESULT name=b status=pass detail=\nE2E-DONE rc=x\n", nil,
			[]string{"malformed result line: E2E-DONE rc=x", "did not finish"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ParseString(tt.console).Verdict(tt.require...)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Verdict = %v, want pass", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verdict = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Verdict error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(goodConsole)
	f.Add("E2E-RESULT name= status=pass detail=\n")
	f.Add("E2E-RESULT name=a status=pass\nE2E-DONE rc=-1\n")
	f.Fuzz(func(t *testing.T, s string) {
		c := ParseString(s)
		for _, r := range c.Results {
			if r.Name == "" || SanitizeName(r.Name) != r.Name {
				t.Fatalf("bad name %q accepted", r.Name)
			}
			if r.Status != Pass && r.Status != Fail && r.Status != Info {
				t.Fatalf("bad status %q", r.Status)
			}
			// A parsed result prints back to a line that parses the same.
			again := ParseString(r.String() + "\n")
			if len(again.Results) != 1 || again.Results[0].Name != r.Name || again.Results[0].Status != r.Status {
				t.Fatalf("round trip of %+v gave %+v", r, again.Results)
			}
		}
		_ = c.Verdict()
	})
}
