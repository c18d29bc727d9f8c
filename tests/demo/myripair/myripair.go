// Package myripair runs pairs of QEMU guests whose Myri-10G NICs, served
// by one myriemu, share its emulated switch, with the unmodified myri10ge
// driver; it holds the two-guest demo (make demo) and what the e2e tests
// share with it: guest scripts, result and server-log readers, and the
// pcap summary from tshark.
package myripair

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/guestdrv/result"
	"github.com/myriemu/myriemu/tests/harness"
	"github.com/myriemu/myriemu/vm"
)

// NetTool is the guest program every guest gets.
const NetTool = "./guestdrv/cmd/e2e-net"

// ModulePath is where the image builder puts the in-tree driver, for
// scripts that reload it (insmod needs the file).
const ModulePath = "/lib/modules/myri10ge.ko.xz"

// NIC is one Myri-10G NIC of a server.
type NIC struct {
	Name   string // myriemu device name, e.g. myri0
	Socket string
	MAC    string
}

// ServerArgs returns the arguments of "myriemu serve" for nics, each with
// slices slices (1 by default), capturing the switch to pcap if not "".
func ServerArgs(nics []NIC, slices int, pcap, logLevel string) []string {
	args := []string{"serve"}
	for _, n := range nics {
		d := "myri10ge,socket=" + n.Socket + ",name=" + n.Name + ",mac=" + n.MAC + PIOKey()
		if slices > 1 {
			d += ",slices=" + strconv.Itoa(slices)
		}
		args = append(args, "--device", d)
	}
	if pcap != "" {
		args = append(args, "--pcap", pcap)
	}
	if logLevel != "" {
		args = append(args, "--log-level", logLevel)
	}
	return args
}

// NICs names n NICs with sockets from socket(name) and MACs
// 00:60:dd:00:00:01 upwards.
func NICs(n int, socket func(name string) string) []NIC {
	out := make([]NIC, n)
	for i := range out {
		name := fmt.Sprintf("myri%d", i)
		out[i] = NIC{Name: name, Socket: socket(name), MAC: fmt.Sprintf("00:60:dd:00:00:%02x", i+1)}
	}
	return out
}

// Firmware is the firmware file under every name the driver may ask for
// (device/myri10ge README): with it the driver loads a file and hands it
// off instead of adopting the running firmware; multi-slice needs it.
func Firmware() map[string][]byte {
	fw := map[string][]byte{}
	for _, name := range myri10ge.FirmwareNames {
		fw[name] = myri10ge.FirmwareImage()
	}
	return fw
}

// GuestSpec is one guest of a pair.
type GuestSpec struct {
	Name     string
	NIC      NIC
	Script   *Script
	Slices   int  // myri10ge_max_slices; 0 or 1: the driver's default
	Firmware bool // install the firmware file
	Timeout  time.Duration
	Require  []string
	Dir      string
}

// Guest returns the harness guest for s.
func (s GuestSpec) Guest() harness.Guest {
	g := harness.Guest{
		Name:     s.Name,
		Programs: []string{NetTool},
		Modules:  []string{"myri10ge"},
		Devices:  []vm.Device{{ID: "nic0", Socket: s.NIC.Socket, Props: DeviceProps()}},
		Scenario: s.Script.String(),
		Timeout:  s.Timeout,
		Require:  s.Require,
		Dir:      s.Dir,
	}
	if s.Slices > 1 {
		g.ModuleArgs = map[string]string{"myri10ge": "myri10ge_max_slices=" + strconv.Itoa(s.Slices)}
	}
	if s.Firmware {
		g.Firmware = Firmware()
	}
	return g
}

// Script is a guest scenario (busybox sh). Step commands record a failure
// and go on; Must commands end the scenario at once, for steps without
// which the rest would only time out. The scenario exits 1 if anything
// failed.
type Script struct {
	b strings.Builder
}

// NewScript starts a scenario that brings eth0 up with ip/24 and waits for
// carrier.
func NewScript(ip string) *Script {
	s := &Script{}
	s.b.WriteString("rc=0\nip link set lo up\n")
	s.Must("ip addr add " + ip + "/24 dev eth0")
	s.Must("ip link set eth0 up")
	s.Must("e2e-net link-wait eth0 60s")
	s.Step("e2e-net ethtool drvinfo eth0")
	return s
}

// Step adds a command whose failure fails the scenario but not at once.
func (s *Script) Step(cmd string) *Script {
	fmt.Fprintf(&s.b, "%s || rc=1\n", cmd)
	return s
}

// Must adds a command whose failure ends the scenario.
func (s *Script) Must(cmd string) *Script {
	fmt.Fprintf(&s.b, "%s || { echo 'E2E-RESULT name=scenario status=fail detail=step failed: %s'; exit 1; }\n",
		cmd, strings.ReplaceAll(cmd, "'", ""))
	return s
}

// Raw adds shell text as is.
func (s *Script) Raw(text string) *Script {
	s.b.WriteString(strings.TrimRight(text, "\n") + "\n")
	return s
}

// String is the scenario.
func (s *Script) String() string { return s.b.String() + "exit $rc\n" }

// Field returns key's value in a result detail of key=value pairs.
func Field(detail, key string) string {
	for _, f := range strings.Fields(detail) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// FieldFloat is Field as a number, without a unit suffix (% or s); 0 if
// absent.
func FieldFloat(detail, key string) float64 {
	v, _ := strconv.ParseFloat(strings.TrimRight(Field(detail, key), "%s"), 64)
	return v
}

// Find returns the last result called name of a run.
func Find(r *harness.Run, name string) (result.Result, bool) {
	if r == nil || r.Console == nil {
		return result.Result{}, false
	}
	return r.Console.Find(name)
}

// Transfer is one stream seen from both ends.
type Transfer struct {
	Label           string
	Bytes           uint64 // received
	SentSHA, GotSHA string
	MBps            float64 // receiver's, first accept to last byte
	Seconds         float64
	Conns           int
}

// Transfers pairs the tcp.send:LABEL/i results of sender with the
// tcp.recv:LABEL/i results of receiver: every stream must have arrived
// whole (bytes and SHA-256 equal on both ends, and equal to want if
// want > 0). It returns the aggregate and every mismatch.
func Transfers(sender, receiver *harness.Run, label string, conns int, want uint64) (Transfer, []string) {
	t := Transfer{Label: label, Conns: conns}
	var problems []string
	for i := range conns {
		n := fmt.Sprintf("%s/%d", label, i)
		s, ok1 := Find(sender, "tcp.send:"+n)
		r, ok2 := Find(receiver, "tcp.recv:"+n)
		switch {
		case !ok1 || !ok2:
			problems = append(problems, fmt.Sprintf("stream %s: sender reported %v, receiver %v", n, ok1, ok2))
			continue
		case s.Status != result.Pass || r.Status != result.Pass:
			problems = append(problems, fmt.Sprintf("stream %s: sender %s (%s), receiver %s (%s)", n, s.Status, s.Detail, r.Status, r.Detail))
			continue
		}
		sb, rb := Field(s.Detail, "bytes"), Field(r.Detail, "bytes")
		ss, rs := Field(s.Detail, "sha256"), Field(r.Detail, "sha256")
		if sb != rb || ss != rs || ss == "" {
			problems = append(problems, fmt.Sprintf("stream %s: sent %s bytes sha256 %s, received %s bytes sha256 %s", n, sb, ss, rb, rs))
		}
		if b, _ := strconv.ParseUint(rb, 10, 64); want > 0 && b != want {
			problems = append(problems, fmt.Sprintf("stream %s: %d bytes, want %d", n, b, want))
		}
		if conns == 1 {
			t.SentSHA, t.GotSHA = ss, rs
		}
	}
	if agg, ok := Find(receiver, "tcp.recv:"+label); ok {
		t.Bytes, _ = strconv.ParseUint(Field(agg.Detail, "bytes"), 10, 64)
		t.MBps = FieldFloat(agg.Detail, "MBps")
		t.Seconds = FieldFloat(agg.Detail, "seconds")
	} else {
		problems = append(problems, "no tcp.recv:"+label+" total")
	}
	return t, problems
}

// ScriptDir is a directory for a guest's files under dir.
func ScriptDir(dir, guest string) string { return filepath.Join(dir, guest) }
