package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/myriemu/myriemu/device/myrimx"
	"github.com/myriemu/myriemu/device/myrimx/mxtest"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/dma/dmatest"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/link"
	"github.com/myriemu/myriemu/internal/leaktest"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// quietRoot is a root logger that drops every line: these tests assert on
// replies and events, not on logs.
func quietRoot() *logrus.Entry {
	l, _ := logtest.NewNullLogger()
	return logrus.NewEntry(l)
}

// monitor is a go-qemu client of serve's control socket whose events are
// drained all the time (go-qemu's reader blocks on an unread event) and
// kept when they are of the kind asked for.
type monitor struct {
	*qmp.SocketMonitor
	kept chan qmp.Event
	wg   sync.WaitGroup
}

func dialMonitor(t *testing.T, path, keep string) *monitor {
	t.Helper()
	mon, err := qmp.NewSocketMonitor("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	events, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := &monitor{SocketMonitor: mon, kept: make(chan qmp.Event, 1024)}
	m.wg.Go(func() {
		for e := range events {
			if e.Event == keep {
				select {
				case m.kept <- e:
				default:
				}
			}
		}
	})
	return m
}

// startControl starts serve's doors on a switch of their own with a
// control socket, after setup (if any) has added targets or ports, and a
// go-qemu monitor keeping the events named keep. The monitor, the doors
// and the switch close when the test ends, in that order.
func startControl(t *testing.T, keep string, setup func(d *doors, wire *fabric.Switch)) (*doors, *monitor) {
	t.Helper()
	wire := fabric.NewSwitch(quietRoot())
	t.Cleanup(wire.Close)
	d, err := newDoors(controlConfig{Control: filepath.Join(t.TempDir(), "qmp")}, quietRoot(), wire)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(d, wire)
	}
	if err := d.start(unixsock.Perm{}); err != nil {
		t.Fatal(err)
	}
	mon := dialMonitor(t, d.cfg.Control, keep)
	t.Cleanup(func() {
		mon.Disconnect()
		d.close()
		mon.wg.Wait()
	})
	return d, mon
}

// run runs cmd and decodes its reply; an error reply fails the test.
func (m *monitor) run(t *testing.T, cmd string) map[string]any {
	t.Helper()
	out, err := m.Run([]byte(cmd))
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var r map[string]any
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%s: %s: %v", cmd, out, err)
	}
	return r
}

// TestControlDMAAudit: a myrimx NIC in observe mode, served through
// serve's control wiring, is driven by mxtest into an A7 violation (a
// stale user registration cache: the VA now maps other pages). A go-qemu
// client sees the live registrations, receives DMA_AUDIT with the §6.9
// fields and reads the violation in query-dma-audit.
func TestControlDMAAudit(t *testing.T) {
	leaktest.Check(t)
	hub := myrimx.NewHub()
	a := mxtest.NewNIC(t, hub, mxtest.Options{Name: "mxa", Audit: dma.AuditObserve})
	b := mxtest.NewNIC(t, hub, mxtest.Options{Name: "mxb", Audit: dma.AuditObserve, Base: 3 << 30})
	ea, eb := a.Open(0, 8, 10), b.Open(0, 8, 10)

	_, mon := startControl(t, "DMA_AUDIT", func(d *doors, _ *fabric.Switch) {
		for _, n := range []*mxtest.NIC{a, b} {
			d.targets = append(d.targets, &target{d: d, cfg: deviceConfig{Name: n.Dev.Name(), Kind: "myrimx"}, dev: n.Dev, fn: n.Func})
			d.watchAudit(n.Dev)
		}
	})

	const size = 3 * 4096
	src, dst := a.AllocBuffer(size, false), b.AllocBuffer(size, true)
	a.Fill(src, 0, make([]byte, size))
	pt := dmatest.NewPageTables(b.RAM.Bytes(), b.Base, 4, func() uint64 { return b.Alloc(4096, 4096) })
	for i, pg := range dst.Pages {
		pt.Map(dst.UserVA+uint64(i)*4096, pg, 1, true)
	}
	b.Write64(eb.Reg(myrimx.EPPTRoot), pt.PTRoot())
	for _, r := range []struct {
		ep     *mxtest.Endpoint
		access uint32
		buf    mxtest.Buffer
	}{{ea, myrimx.AccessSendSrc, src}, {eb, myrimx.AccessRecvDst, dst}} {
		if _, ev, err := r.ep.Register(1, 7, r.access, r.buf); err != nil || ev.Status != myrimx.StatusSuccess {
			t.Fatalf("REG: %v %v", ev, err)
		}
	}

	regs := mon.run(t, `{"execute":"query-registrations","arguments":{"name":"mxb"}}`)["return"].([]any)
	if len(regs) != 1 {
		t.Fatalf("query-registrations mxb: %v", regs)
	}
	r0 := regs[0].(map[string]any)
	if r0["id"] != 1.0 || r0["generation"] != 7.0 || r0["state"] != "valid" || r0["length"] != float64(size) ||
		r0["user-va"] != float64(dst.UserVA) || r0["pages"] != 3.0 {
		t.Errorf("registration: %v", r0)
	}
	audit := func() map[string]any {
		l := mon.run(t, `{"execute":"query-dma-audit","arguments":{"name":"mxb"}}`)["return"].([]any)
		if len(l) != 1 {
			t.Fatalf("query-dma-audit mxb: %v", l)
		}
		return l[0].(map[string]any)
	}
	if c := audit(); c["name"] != "mxb" || c["mode"] != "observe" || c["violations"] != 0.0 {
		t.Fatalf("before the bug: %v", c)
	}

	// munmap + mmap at the same VA: new pages, no DEREG; the RECV goes to
	// the device's (stale) pages, which the page-table oracle catches.
	fresh := b.AllocBuffer(size, false)
	for i, pg := range fresh.Pages {
		pt.Map(dst.UserVA+uint64(i)*4096, pg, 1, true)
	}
	nic, epi := eb.Addr()
	seq := eb.Post(mxtest.RecvCmd(1, 7, 0, size, 0, 0, 0))[0]
	ea.Post(mxtest.SendCmd(1, 7, 0, size, nic, epi, 0, 0))
	if ev, err := eb.WaitSeq(seq); err != nil || ev.Status != myrimx.StatusSuccess {
		t.Fatalf("observe: RECV %v %v, want it through as buggy hardware would", ev, err)
	}

	select {
	case e := <-mon.kept:
		want := map[string]any{"device": "mxb", "kind": "A7-page-table", "mode": "observe", "tag": "data",
			"endpoint": 0.0, "region": 1.0, "generation": 7.0, "direction": "write"}
		for k, v := range want {
			if e.Data[k] != v {
				t.Errorf("DMA_AUDIT %s = %v, want %v (%v)", k, e.Data[k], v, e.Data)
			}
		}
		addr, _ := e.Data["address"].(float64)
		if ln, _ := e.Data["length"].(float64); ln <= 0 || !containsPage(dst.Pages, uint64(addr)) {
			t.Errorf("DMA_AUDIT address %#x length %v: not in the stale registration's pages", uint64(addr), ln)
		}
	case <-time.After(mxtest.WaitTimeout):
		t.Fatal("no DMA_AUDIT event")
	}
	c := audit()
	pc, _ := c["per-check"].(map[string]any)
	if v, _ := c["violations"].(float64); v == 0 || pc["A7-page-table"] == nil || pc["A7-page-table"].(float64) == 0 {
		t.Errorf("query-dma-audit after the bug: %v", c)
	}
	// Without a name: every audited device.
	if all := mon.run(t, `{"execute":"query-dma-audit"}`)["return"].([]any); len(all) != 2 {
		t.Errorf("query-dma-audit: %v", all)
	}
	out, err := mon.Run([]byte(`{"execute":"query-registrations","arguments":{"name":"nope"}}`))
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("query-registrations of no device: %s %v", out, err)
	}
}

func containsPage(pages []uint64, addr uint64) bool {
	for _, p := range pages {
		if addr >= p && addr < p+4096 {
			return true
		}
	}
	return false
}

// TestControlPorts: ports added over the control socket at run time carry
// a frame (stream in, dgram out), query-ports counts it, port-del removes
// a port.
func TestControlPorts(t *testing.T) {
	leaktest.Check(t)
	var wire *fabric.Switch
	_, mon := startControl(t, "", func(d *doors, w *fabric.Switch) {
		wire = w
		d.ports = link.NewSet(w, quietRoot())
		t.Cleanup(func() { d.ports.Close() })
	})

	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	add := func(spec string) string {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"execute": "port-add", "arguments": map[string]string{"spec": spec}})
		r := mon.run(t, string(b))["return"].(map[string]any)
		return r["name"].(string)
	}
	if n := add("stream=127.0.0.1:0,server,name=in"); n != "in" {
		t.Fatalf("port-add named %q", n)
	}
	if n := add("dgram=127.0.0.1:0," + peer.LocalAddr().String()); n != "dgram0" {
		t.Fatalf("port-add named %q", n)
	}
	if _, err := mon.Run([]byte(`{"execute":"port-add","arguments":{"spec":"stream=nohost,server"}}`)); err == nil {
		t.Error("port-add of a bad spec succeeded")
	}
	ports := func() []link.PortInfo {
		out, err := mon.Run([]byte(`{"execute":"query-ports"}`))
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ Return []link.PortInfo }
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("query-ports: %s: %v", out, err)
		}
		return r.Return
	}
	q := ports()
	if len(q) != 2 || q[0].Name != "in" || q[1].Name != "dgram0" {
		t.Fatalf("query-ports: %+v", q)
	}

	// A QEMU -netdev stream peer sends one broadcast frame; the switch
	// floods it to the dgram port, whose peer receives it as a datagram.
	conn, err := net.DialTimeout("tcp", q[0].Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	copy(frame[14:], "hello over a port added at run time")
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(frame)))
	if _, err := conn.Write(append(msg, frame...)); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := peer.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != string(frame) {
		t.Fatalf("dgram peer got %q %v, want the frame", buf[:n], err)
	}
	// A link counts a frame out once its write returned, which may be
	// just after the peer read it.
	counted := func(q []link.PortInfo) bool {
		return q[0].Stats.InFrames == 1 && q[0].Stats.InBytes == uint64(len(frame)) && q[1].Stats.OutFrames == 1 && q[0].Stats.Carrier
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if q = ports(); counted(q) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("query-ports counters: in %+v, out %+v", q[0].Stats, q[1].Stats)
			break
		}
	}

	mon.run(t, `{"execute":"port-del","arguments":{"name":"in"}}`)
	if q := ports(); len(q) != 1 || q[0].Name != "dgram0" {
		t.Errorf("query-ports after port-del: %+v", q)
	}
	if len(wire.Ports()) != 1 {
		t.Errorf("%d switch ports after port-del, want 1", len(wire.Ports()))
	}
	if _, err := mon.Run([]byte(`{"execute":"port-del","arguments":{"name":"in"}}`)); err == nil {
		t.Error("port-del twice succeeded")
	}
}

// TestServeControlPortsAndAudit: serve with a myrimx device, a --port and
// a control socket answers the new commands through myriemu ctl, as a
// script would: the --port is listed and can be removed, a port is added
// at run time, the myrimx device has an audit and an empty table.
func TestServeControlPortsAndAudit(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	qmp := filepath.Join(dir, "qmp.sock")
	_, stop, stderr := startServe(t, "serve", "--device", "myrimx,socket="+filepath.Join(dir, "mx"), "--device", "myri10ge,socket="+filepath.Join(dir, "m0"),
		"--port", "stream=unix:"+filepath.Join(dir, "wire")+",server,name=up", "--control", qmp)
	defer func() {
		if code := stop(); code != 0 {
			t.Errorf("serve exit %d: %s", code, stderr)
		}
	}()
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
		{[]string{"query-ports"}, 0, `"name":"up"`},
		{[]string{"port-add", "spec=dgram=127.0.0.1:0,127.0.0.1:9"}, 0, `"name":"dgram0"`},
		{[]string{"query-ports"}, 0, `"name":"dgram0"`},
		{[]string{"port-add", "spec=stream=nohost,server"}, 1, "GenericError"},
		{[]string{"port-del", "name=up"}, 0, "{}"},
		{[]string{"port-del", "name=up"}, 1, "DeviceNotFound"},
		{[]string{"query-dma-audit"}, 0, `"name":"myrimx0"`},
		{[]string{"query-dma-audit", "name=myrimx0"}, 0, `"violations":0`},
		{[]string{"query-dma-audit", "name=myri10ge0"}, 1, "not supported"},
		{[]string{"query-registrations", "name=myrimx0"}, 0, `[]`},
		{[]string{"query-registrations", "name=myri10ge0"}, 1, "not supported"},
	}
	for _, tt := range tests {
		out, code := ctl(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("ctl %v: exit %d %q; want exit %d containing %q", tt.args, code, out, tt.code, tt.want)
		}
	}
	if out, _ := ctl("query-ports"); strings.Contains(out, `"name":"up"`) {
		t.Errorf("query-ports after port-del: %s", out)
	}
}
