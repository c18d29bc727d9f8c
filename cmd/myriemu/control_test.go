package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myriemu/myriemu/internal/leaktest"
)

// TestServeControlAndCtl serves two NICs with a control socket and a rules
// file, and drives it with myriemu ctl as a script would.
func TestServeControlAndCtl(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.WriteFile(rules, []byte("# armed at start\nloss: wire.frame=loss; probability=5\n"), 0o644)
	qmp := filepath.Join(dir, "qmp.sock")
	_, stop, stderr := startServe(t, "serve", "--device", "myri10ge,socket="+filepath.Join(dir, "m0"), "--device", "myri10ge,socket="+filepath.Join(dir, "m1"),
		"--control", qmp, "--faults", rules, "--fault-seed", "7", "--fault-log", filepath.Join(dir, "flog"))
	defer func() {
		if code := stop(); code != 0 {
			t.Errorf("serve exit %d: %s", code, stderr)
		}
	}()
	fi, err := os.Stat(qmp)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	ctl := func(args ...string) (string, int) {
		var out, errOut syncBuffer
		c := &app{stdout: &out, stderr: &errOut, kinds: deviceKinds()}
		code := c.run(context.Background(), append([]string{"ctl", "--control", qmp}, args...))
		return out.String() + errOut.String(), code
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"query-devices"}, 0, `"name":"myri10ge1","kind":"myri10ge"`},
		{[]string{"query-faults"}, 0, `"rule":"loss: wire.frame=loss; probability=5"`},
		{[]string{"query-faults"}, 0, `"seed":7`},
		{[]string{"set_link", "name=myri10ge0", "up=false"}, 0, "{}"},
		{[]string{"set_link", "name=nope", "up=false"}, 1, `"class":"DeviceNotFound"`},
		{[]string{"fault-add", "rule=r2: msi.raise=drop; times=5"}, 0, `"id":"r2"`},
		{[]string{"fault-add", "rule=r3: msi.raise"}, 1, "column 14"},
		{[]string{"fault-del", "id=r2"}, 0, "{}"},
		{[]string{"query-counters", "name=myri10ge0"}, 0, `"tx_frames"`},
		{[]string{"query-counters", "name=myri10ge0"}, 0, `"dma_errors":0`},
		{[]string{"query-counters", "name=myri10ge0"}, 0, `"link_down_events":0`},
		{[]string{"query-counters", "name=myri10ge0"}, 0, `"no_small_buffer":0`},
		{[]string{"query-counters", "name=myri10ge0"}, 0, `"slices":[{"big_filled":0`},
		{[]string{"query-status"}, 0, `{"running":true,"status":"running"}`},
		{[]string{"device-disconnect", "name=myri10ge0"}, 1, "DeviceNotActive"},
		{[]string{"no-such-command"}, 1, "CommandNotFound"},
		{[]string{"query-devices", "novalue"}, 2, "not key=value"},
	}
	for _, tt := range tests {
		out, code := ctl(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("ctl %v: exit %d %q; want exit %d containing %q", tt.args, code, out, tt.code, tt.want)
		}
	}
}

func TestServeBadRulesFile(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.WriteFile(rules, []byte("ok: dma.read=fail\nbad: dma.read=fail; probability=x\n"), 0o644)
	var stdout, stderr syncBuffer
	a := &app{stdout: &stdout, stderr: &stderr, kinds: deviceKinds()}
	code := a.run(context.Background(), []string{"serve", "--device", "testdev,socket=" + filepath.Join(dir, "t0"), "--faults", rules})
	if code != 1 || !strings.Contains(stderr.String(), "line 2 column 33") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
