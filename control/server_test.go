package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/internal/leaktest"
)

// fakeTarget is a device with a link and counters.
type fakeTarget struct {
	mu        sync.Mutex
	name      string
	link      bool
	resets    int
	connected bool
}

func (f *fakeTarget) Name() string { return f.name }
func (f *fakeTarget) Info() DeviceInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	up := f.link
	return DeviceInfo{Name: f.name, Kind: "fake", Socket: "/tmp/" + f.name, Connected: f.connected, IRQMode: "MSI", MSI: true, Link: &up}
}
func (f *fakeTarget) Counters() any { return map[string]uint64{"tx_frames": 7} }
func (f *fakeTarget) SetLink(up bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.link = up
	return nil
}
func (f *fakeTarget) Reset() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets++
	return nil
}
func (f *fakeTarget) Disconnect() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.connected {
		return ErrNotActive
	}
	f.connected = false
	return nil
}

// startServer serves a control socket with one fake device until the test
// ends, and checks that every goroutine is joined.
func startServer(t *testing.T, cfg Config) (*Server, *fakeTarget) {
	t.Helper()
	leaktest.Check(t)
	dev := &fakeTarget{name: "myri0", link: true, connected: true}
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "control.sock")
	}
	cfg.Targets = append(cfg.Targets, dev)
	if cfg.Version == "" {
		cfg.Version = "v0.3.1"
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after Close")
		}
		if _, err := os.Stat(cfg.Path); !os.IsNotExist(err) {
			t.Errorf("socket file left behind: %v", err)
		}
	})
	return s, dev
}

// Acceptance 1: go-qemu's qmp.SocketMonitor and raw.Monitor, unchanged.
func TestGoQEMUClient(t *testing.T) {
	s, dev := startServer(t, Config{})
	mon, err := qmp.NewSocketMonitor("unix", s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	if mon.Version == nil || mon.Version.Package != "myriemu v0.3.1" || mon.Version.QEMU.Minor != 3 {
		t.Errorf("greeting version %+v", mon.Version)
	}
	events, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, err := mon.Run([]byte(`{"execute":"query-commands"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"set_link", "query-devices", "fault-add", "device-disconnect"} {
		if !strings.Contains(string(out), `"name":"`+want+`"`) {
			t.Errorf("query-commands lacks %s: %s", want, out)
		}
	}
	out, err = mon.Run([]byte(`{"execute":"query-devices"}`))
	if err != nil {
		t.Fatal(err)
	}
	var devs struct{ Return []DeviceInfo }
	if err := json.Unmarshal(out, &devs); err != nil || len(devs.Return) != 1 || devs.Return[0].Name != "myri0" {
		t.Fatalf("query-devices: %s (%v)", out, err)
	}

	r := raw.NewMonitor(mon) // sends "arguments":{} always and no newline
	for _, up := range []bool{false, true} {
		if err := r.SetLink("myri0", up); err != nil {
			t.Fatalf("set_link %v: %v", up, err)
		}
		select {
		case ev := <-events:
			if ev.Event != "LINK_CHANGED" || ev.Data["device"] != "myri0" || ev.Data["up"] != up || ev.Timestamp.Seconds == 0 {
				t.Errorf("event %+v", ev)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no LINK_CHANGED")
		}
		if dev.Info().Link == nil || *dev.Info().Link != up {
			t.Errorf("link not %v", up)
		}
	}
	st, err := r.QueryStatus()
	if err != nil || !st.Running {
		t.Errorf("query-status %+v %v", st, err)
	}
	// An error reply has desc, which is all go-qemu looks at.
	if err := r.SetLink("nonesuch", true); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("set_link on an unknown device: %v", err)
	}
}

// qclient is a raw line client for the conformance tests.
type qclient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, path string) *qclient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	q := &qclient{t: t, conn: c, r: bufio.NewReaderSize(c, 1<<20)}
	g := q.read()
	if _, ok := g["QMP"]; !ok {
		t.Fatalf("greeting %v", g)
	}
	return q
}

func (q *qclient) send(s string) {
	q.t.Helper()
	if _, err := q.conn.Write([]byte(s)); err != nil {
		q.t.Fatal(err)
	}
}

func (q *qclient) read() map[string]any {
	q.t.Helper()
	q.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		q.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		q.t.Fatalf("reply %q: %v", line, err)
	}
	if strings.Count(strings.TrimSpace(string(line)), "\n") > 0 {
		q.t.Fatalf("pretty-printed reply %q", line)
	}
	return m
}

// errClass returns the error class of a reply ("" for a return).
func (q *qclient) call(s string) (class, desc string, m map[string]any) {
	q.t.Helper()
	q.send(s)
	for {
		m = q.read()
		if _, ev := m["event"]; !ev {
			break
		}
	}
	if e, ok := m["error"].(map[string]any); ok {
		return e["class"].(string), e["desc"].(string), m
	}
	if _, ok := m["return"]; !ok {
		q.t.Fatalf("neither return nor error: %v", m)
	}
	return "", "", m
}

func (q *qclient) negotiate() {
	q.t.Helper()
	if c, d, _ := q.call(`{"execute":"qmp_capabilities"}` + "\n"); c != "" {
		q.t.Fatalf("qmp_capabilities: %s %s", c, d)
	}
}

// Acceptance 2: conformance under abuse, one case at a time on one
// connection, which must stay usable after each.
func TestConformanceUnderAbuse(t *testing.T) {
	s, _ := startServer(t, Config{Faults: fault.NewSet(1, nil)})
	q := dial(t, s.Path())
	steps := []struct {
		name, in string
		class    string // "" = a return
		desc     string
	}{
		{"command before negotiation", `{"execute":"query-devices"}`, "CommandNotFound", "qmp_capabilities"},
		{"bad capability", `{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}`, "GenericError", "Capability"},
		{"negotiation", `{"execute":"qmp_capabilities","arguments":{}}`, "", ""},
		{"negotiation again", `{"execute":"qmp_capabilities"}`, "CommandNotFound", "already complete"},
		{"unknown command", `{"execute":"frobnicate"}`, "CommandNotFound", "frobnicate"},
		{"missing argument", `{"execute":"set_link","arguments":{"name":"myri0"}}`, "GenericError", "'up' is missing"},
		{"unexpected argument", `{"execute":"query-devices","arguments":{"x":1}}`, "GenericError", "'x' is unexpected"},
		{"wrong type", `{"execute":"set_link","arguments":{"name":"myri0","up":"yes"}}`, "GenericError", "expected: boolean"},
		{"null is not a string", `{"execute":"query-counters","arguments":{"name":null}}`, "GenericError", "expected: string"},
		{"arguments not an object", `{"execute":"query-devices","arguments":[]}`, "GenericError", "must be an object"},
		{"no execute", `{"arguments":{}}`, "GenericError", "lacks member 'execute'"},
		{"execute not a string", `{"execute":7}`, "GenericError", "must be a string"},
		{"unexpected member", `{"execute":"query-status","foo":1}`, "GenericError", "'foo' is unexpected"},
		{"malformed JSON", `{"execute": }`, "GenericError", "JSON parse error"},
		{"not an object", `[1,2]`, "GenericError", "must be a JSON object"},
		{"junk", `hello`, "GenericError", "outside a JSON object"},
		{"unknown device", `{"execute":"query-counters","arguments":{"name":"eth9"}}`, "DeviceNotFound", "eth9"},
		{"malformed rule", `{"execute":"fault-add","arguments":{"rule":"r1: dma.read=explode"}}`, "GenericError", "column 14"},
		{"good rule", `{"execute":"fault-add","arguments":{"rule":"r1: dma.read=fail; once"}}`, "", ""},
		{"rule armed twice", `{"execute":"fault-add","arguments":{"rule":"r1: dma.read=fail"}}`, "GenericError", "already armed"},
		{"del unknown", `{"execute":"fault-del","arguments":{"id":"r9"}}`, "GenericError", "no such rule"},
		{"del", `{"execute":"fault-del","arguments":{"id":"r1"}}`, "", ""},
		{"still alive", `{"execute":"query-status"}`, "", ""},
	}
	for _, st := range steps {
		class, desc, _ := q.call(st.in + "\n")
		if class != st.class || !strings.Contains(desc, st.desc) {
			t.Errorf("%s: got %q %q, want %q containing %q", st.name, class, desc, st.class, st.desc)
		}
	}

	// id is echoed, whatever JSON it is, on returns and errors.
	_, _, m := q.call(`{"execute":"query-status","id":{"n":[1,"x"]}}` + "\n")
	if b, _ := json.Marshal(m["id"]); string(b) != `{"n":[1,"x"]}` {
		t.Errorf("id echoed as %s", b)
	}
	_, _, m = q.call(`{"execute":"nope","id":"abc"}` + "\n")
	if m["id"] != "abc" {
		t.Errorf("error reply id %v", m["id"])
	}

	// Objects back to back without newlines: one reply each, in order.
	q.send(`{"execute":"query-status","id":1}{"execute":"query-version","id":2}` + "\n")
	for want := 1.0; want <= 2; want++ {
		if m := q.read(); m["id"] != want {
			t.Errorf("back-to-back reply %v, want id %v", m, want)
		}
	}

	// A 1 MiB line: one error, the rest of the line dropped, still usable.
	big := `{"execute":"query-status","arguments":{"pad":"` + strings.Repeat("x", 1<<20) + `"}}` + "\n"
	class, desc, _ := q.call(big)
	if class != "GenericError" || !strings.Contains(desc, "longer than") {
		t.Errorf("1 MiB line: %s %s", class, desc)
	}
	if class, _, _ := q.call(`{"execute":"query-status"}` + "\n"); class != "" {
		t.Errorf("after the 1 MiB line: %s", class)
	}
	deep := strings.Repeat("[", 100) + "\n"
	if class, desc, _ := q.call(deep); class != "GenericError" || !strings.Contains(desc, "deep") {
		t.Errorf("deep nesting: %s %s", class, desc)
	}
	if class, _, _ := q.call(`{"execute":"query-status"}` + "\n"); class != "" {
		t.Errorf("after deep nesting: %s", class)
	}
}

// No event reaches a client before negotiation, nor between the
// negotiation reply and its next command (go-qemu would lose it).
func TestNoEarlyEvents(t *testing.T) {
	s, _ := startServer(t, Config{})
	q := dial(t, s.Path())
	s.Emit("EARLY", nil)
	q.negotiate()
	s.Emit("TOO_EARLY", nil)
	class, _, m := q.call(`{"execute":"query-status"}` + "\n")
	if class != "" || m["return"] == nil {
		t.Fatalf("first reply %v", m)
	}
	s.Emit("ON_TIME", map[string]any{"k": 1})
	m = q.read()
	if m["event"] != "ON_TIME" {
		t.Errorf("first event %v, want ON_TIME", m)
	}
	ts, _ := m["timestamp"].(map[string]any)
	if ts["seconds"] == nil || ts["microseconds"] == nil {
		t.Errorf("timestamp %v", m["timestamp"])
	}
}

func TestManyClients(t *testing.T) {
	s, _ := startServer(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			c, err := net.Dial("unix", s.Path())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			r := bufio.NewReader(c)
			if _, err := r.ReadBytes('\n'); err != nil {
				errs <- fmt.Errorf("client %d greeting: %w", i, err)
				return
			}
			fmt.Fprintf(c, `{"execute":"qmp_capabilities"}{"execute":"query-devices","id":%d}`, i)
			r.ReadBytes('\n')
			line, err := r.ReadBytes('\n')
			if err != nil || !strings.Contains(string(line), fmt.Sprintf(`"id":%d`, i)) {
				errs <- fmt.Errorf("client %d: %q %v", i, line, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTooManyClients(t *testing.T) {
	s, _ := startServer(t, Config{MaxClients: 2})
	a, b := dial(t, s.Path()), dial(t, s.Path())
	_, _ = a, b
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, `"class":"GenericError"`) || !strings.Contains(line, "too many") {
		t.Errorf("third client got %q", line)
	}
}

// A client that never reads loses events, is told how many, and stalls
// neither Emit nor the other clients.
func TestClientThatNeverReads(t *testing.T) {
	// Emitting 20 MB may take longer than the default write timeout on a
	// loaded machine; the mute client must outlive it to read its loss.
	s, _ := startServer(t, Config{WriteTimeout: 5 * time.Minute})
	mute := dial(t, s.Path())
	mute.negotiate()
	mute.call(`{"execute":"query-status"}` + "\n") // events flow from now on
	other := dial(t, s.Path())
	other.negotiate()
	other.call(`{"execute":"query-status"}` + "\n")

	done := make(chan struct{})
	go func() {
		defer close(done)
		pad := strings.Repeat("p", 1000)
		for i := range 20000 { // ~20 MB: far more than socket buffers hold
			s.Emit("NOISE", map[string]any{"i": i, "pad": pad})
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Emit blocked on a client that does not read")
	}
	// The other client still gets replies (after the events it reads).
	if class, _, _ := other.call(`{"execute":"query-status"}` + "\n"); class != "" {
		t.Errorf("other client: %s", class)
	}
	// The mute client, reading at last, learns what it lost.
	var sawDropped bool
	for range eventQueue + 2 {
		m := mute.read()
		if m["event"] == "EVENTS_DROPPED" {
			sawDropped = true
			break
		}
	}
	if !sawDropped {
		t.Error("no EVENTS_DROPPED for the slow client")
	}
}

func TestSocketMode(t *testing.T) {
	s, _ := startServer(t, Config{})
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want 0600 socket", fi.Mode())
	}
}

func TestFaultCommandsAndEvents(t *testing.T) {
	set := fault.NewSet(5, nil)
	s, _ := startServer(t, Config{Faults: set})
	q := dial(t, s.Path())
	q.negotiate()
	if class, desc, _ := q.call(`{"execute":"fault-add","arguments":{"rule":"r1: msi.raise=drop; times=2"}}` + "\n"); class != "" {
		t.Fatal(desc)
	}
	for range 3 {
		set.Eval(fault.MSI, &fault.Op{Point: "raise", Device: "myri0"})
	}
	var got []map[string]any
	for len(got) < 2 {
		m := q.read()
		if m["event"] == "FAULT_INJECTED" {
			got = append(got, m["data"].(map[string]any))
		}
	}
	if got[0]["fault"] != "msi.drop" || got[1]["op"] != 2.0 {
		t.Errorf("events %v", got)
	}
	_, _, m := q.call(`{"execute":"query-faults"}` + "\n")
	rules := m["return"].(map[string]any)["rules"].([]any)
	if r := rules[0].(map[string]any); r["fired"] != 2.0 || r["left"] != 0.0 {
		t.Errorf("query-faults %v", rules)
	}
	_, _, m = q.call(`{"execute":"query-fault-log"}` + "\n")
	if m["return"].(map[string]any)["total"] != 2.0 {
		t.Errorf("query-fault-log %v", m)
	}
}

func TestDeviceCommands(t *testing.T) {
	s, dev := startServer(t, Config{})
	q := dial(t, s.Path())
	q.negotiate()
	if c, _, _ := q.call(`{"execute":"device-reset","arguments":{"name":"myri0"}}` + "\n"); c != "" || dev.resets != 1 {
		t.Errorf("device-reset: %s, %d resets", c, dev.resets)
	}
	if c, _, _ := q.call(`{"execute":"device-disconnect","arguments":{"name":"myri0"}}` + "\n"); c != "" {
		t.Errorf("device-disconnect: %s", c)
	}
	if c, _, _ := q.call(`{"execute":"device-disconnect","arguments":{"name":"myri0"}}` + "\n"); c != "DeviceNotActive" {
		t.Errorf("second device-disconnect: %s", c)
	}
	_, _, m := q.call(`{"execute":"query-counters","arguments":{"name":"myri0"}}` + "\n")
	if m["return"].(map[string]any)["tx_frames"] != 7.0 {
		t.Errorf("query-counters %v", m)
	}
}

func TestFramer(t *testing.T) {
	f := framer{max: 32}
	var got []string
	for _, c := range []byte(`{"a":"}{\""} [1] x y` + "\n" + `{"b":{}}`) {
		switch f.feed(c) {
		case frameValue:
			got = append(got, string(f.take()))
		case frameJunk:
			got = append(got, "junk")
		}
	}
	want := []string{`{"a":"}{\""}`, `[1]`, "junk", `{"b":{}}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("frames %q, want %q", got, want)
	}
}

// A client that takes no line for longer than the write timeout is closed,
// and the others go on.
func TestClientThatNeverReadsIsClosed(t *testing.T) {
	s, _ := startServer(t, Config{WriteTimeout: 200 * time.Millisecond})
	mute := dial(t, s.Path())
	mute.negotiate()
	mute.call(`{"execute":"query-status"}` + "\n")
	pad := strings.Repeat("p", 1000)
	// Keep events coming until the socket buffers are full and the
	// server gives up on the client.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		for i := range 100 {
			s.Emit("NOISE", map[string]any{"i": i, "pad": pad})
		}
		s.mu.Lock()
		n := len(s.clients)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mute.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var err error
	for err == nil {
		_, err = mute.r.ReadBytes('\n')
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the mute client was never closed")
	}
	other := dial(t, s.Path())
	other.negotiate()
	if class, _, _ := other.call(`{"execute":"query-status"}` + "\n"); class != "" {
		t.Errorf("a later client: %s", class)
	}
}
