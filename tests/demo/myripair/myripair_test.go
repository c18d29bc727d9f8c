package myripair

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/harness"
)

func TestParseLogLine(t *testing.T) {
	l, ok := ParseLogLine(`time="2026-11-24T00:58:42.233Z" level=info msg="NIC detached" commands=59 component=myri10ge device=myri0 rx_bytes=16932262 note="a \"quoted\" value"`)
	if !ok {
		t.Fatal("not parsed")
	}
	want := LogLine{"time": "2026-11-24T00:58:42.233Z", "level": "info", "msg": "NIC detached", "commands": "59",
		"component": "myri10ge", "device": "myri0", "rx_bytes": "16932262", "note": `a "quoted" value`}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "myriemu: ready device=myri0 socket=/x", `level="unterminated`, "plain text"} {
		if _, ok := ParseLogLine(bad); ok {
			t.Errorf("ParseLogLine(%q) accepted", bad)
		}
	}
}

const serverLog = `myriemu: ready device=myri0 socket=/s0 device=myri1 socket=/s1
time="t" level=info msg=ready component=myriemu devices=2
time="t" level=debug msg=command cmd=RESET component=myri10ge device=myri0 status=OK
time="t" level=warning msg="receive ring overfilled" component=myri10ge device=myri1 posted=512
time="t" level=info msg="NIC detached" commands=10 component=myri10ge device=myri0 guest_errors=0 rx_bytes=100
time="t" level=error msg="DMA abort: slice halted until the driver resets the NIC" component=myri10ge device=myri1 slice=0
time="t" level=info msg="NIC detached" commands=20 component=myri10ge device=myri0 guest_errors=1 rx_bytes=200
`

func TestProblemsAndCounters(t *testing.T) {
	p := Problems(serverLog)
	if len(p) != 2 || !strings.Contains(p[0], "overfilled") || !strings.Contains(p[1], "DMA abort") {
		t.Errorf("Problems = %q", p)
	}
	c := NICCounters(serverLog, "myri0")
	if len(c) != 2 || c[0]["commands"] != 10 || c[1]["rx_bytes"] != 200 || c[1]["guest_errors"] != 1 {
		t.Errorf("myri0 counters %v", c)
	}
	if c := NICCounters(serverLog, "myri1"); len(c) != 0 {
		t.Errorf("myri1 never detached, got %v", c)
	}
}

func TestParseTshark(t *testing.T) {
	out := strings.Join([]string{
		",,,,,,1", // ARP request
		"10.0.0.1,10.0.0.2,8,,1,,",
		"10.0.0.2,10.0.0.1,0,,1,,",
		"10.0.0.2,10.0.0.1,,8948,1,1,",
		"10.0.0.2,10.0.0.1,,100,0,0,", // bad IPv4 and TCP checksums
		"10.0.0.1,10.0.0.2,,0,1,2,",   // an ACK, checksum unverified
		",,,,,,",                      // IPv6 multicast: no IPv4 fields
	}, "\n") + "\n"
	p, err := parseTshark(out)
	if err != nil {
		t.Fatal(err)
	}
	want := Pcap{
		Frames:       7,
		EchoRequests: map[string]int{"10.0.0.1>10.0.0.2": 1}, EchoReplies: map[string]int{"10.0.0.2>10.0.0.1": 1},
		TCPSegments: map[string]int{"10.0.0.2>10.0.0.1": 2, "10.0.0.1>10.0.0.2": 1},
		TCPBytes:    map[string]int{"10.0.0.2>10.0.0.1": 9048, "10.0.0.1>10.0.0.2": 0},
		ARP:         1, BadIPChecksums: 1, BadTCPChecksums: 1, GoodTCPChecksums: 1,
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := parseTshark("1,2\n"); err == nil {
		t.Error("short line accepted")
	}
}

func run(lines ...string) *harness.Run {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("E2E-RESULT " + l + "\n")
	}
	return &harness.Run{Console: result.ParseString(b.String())}
}

func TestTransfers(t *testing.T) {
	send := run("name=tcp.send:x/0 status=pass detail=bytes=10 sha256=aa seconds=1.00",
		"name=tcp.send:x/1 status=pass detail=bytes=10 sha256=bb seconds=1.00")
	recv := run("name=tcp.recv:x/1 status=pass detail=bytes=10 sha256=bb seconds=1.00",
		"name=tcp.recv:x/0 status=pass detail=bytes=10 sha256=aa seconds=1.00",
		"name=tcp.recv:x status=pass detail=conns=2 bytes=20 seconds=2.00 MBps=0.00")
	tr, problems := Transfers(send, recv, "x", 2, 10)
	if len(problems) != 0 || tr.Bytes != 20 || tr.Seconds != 2 {
		t.Errorf("good transfer: %+v %q", tr, problems)
	}
	bad := run("name=tcp.recv:x/0 status=pass detail=bytes=10 sha256=ab seconds=1.00",
		"name=tcp.recv:x/1 status=fail detail=bytes=3 sha256=cc seconds=1.00 error=\"reset\"")
	_, problems = Transfers(send, bad, "x", 2, 10)
	if len(problems) != 3 || !strings.Contains(problems[0], "sha256 aa, received 10 bytes sha256 ab") ||
		!strings.Contains(problems[1], "receiver fail") || !strings.Contains(problems[2], "no tcp.recv:x total") {
		t.Errorf("bad transfer problems %q", problems)
	}
	if _, problems := Transfers(send, recv, "x", 3, 0); len(problems) != 1 || !strings.Contains(problems[0], "x/2") {
		t.Errorf("missing stream: %q", problems)
	}
}

func TestScript(t *testing.T) {
	s := NewScript("10.0.0.9").Step("a b").Must("c 'd'").Raw("x &\n").String()
	for _, want := range []string{
		"rc=0\n", "ip addr add 10.0.0.9/24 dev eth0 || {", "e2e-net link-wait eth0 60s || {",
		"a b || rc=1\n", "c 'd' || { echo 'E2E-RESULT name=scenario status=fail detail=step failed: c d'; exit 1; }\n",
		"x &\nexit $rc\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if Field("a=1 b=2%", "b") != "2%" || FieldFloat("a=1 b=2%", "b") != 2 || FieldFloat("after=0.25s", "after") != 0.25 || Field("a=1", "c") != "" {
		t.Error("Field")
	}
}

func TestServerArgsAndNICs(t *testing.T) {
	nics := NICs(2, func(n string) string { return "/run/" + n + ".sock" })
	got := ServerArgs(nics, 4, "/w.pcap", "debug")
	want := []string{"serve",
		"--device", "myri10ge,socket=/run/myri0.sock,name=myri0,mac=00:60:dd:00:00:01,slices=4",
		"--device", "myri10ge,socket=/run/myri1.sock,name=myri1,mac=00:60:dd:00:00:02,slices=4",
		"--pcap", "/w.pcap", "--log-level", "debug"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if fw := Firmware(); len(fw) != 4 || len(fw["myri10ge_rss_eth_z8e.dat"]) == 0 {
		t.Errorf("firmware files %d", len(fw))
	}
}
