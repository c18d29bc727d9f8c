package control

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// auditTarget is a fake device with a DMA audit.
type auditTarget struct {
	fakeTarget
}

func (a *auditTarget) DMAAudit() (map[string]any, error) {
	return map[string]any{"mode": "observe", "violations": 3}, nil
}
func (a *auditTarget) Registrations() (any, error) {
	return []map[string]any{{"id": 1, "generation": 7}}, nil
}

// fakePorts records port-add and port-del.
type fakePorts struct {
	mu    sync.Mutex
	ports []string
}

func (p *fakePorts) AddPort(spec string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if strings.Contains(spec, "bad") {
		return "", errors.New("link: bad spec")
	}
	p.ports = append(p.ports, spec)
	return spec, nil
}

func (p *fakePorts) RemovePort(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.ports {
		if n == name {
			p.ports = append(p.ports[:i], p.ports[i+1:]...)
			return nil
		}
	}
	return errors.New(`link: no port named "` + name + `"`)
}

func (p *fakePorts) QueryPorts() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{}, p.ports...)
}

// TestAuditCommands: query-dma-audit lists only the audited devices (or
// the one named, refusing one without an audit); query-registrations
// needs an audited device.
func TestAuditCommands(t *testing.T) {
	mx := &auditTarget{fakeTarget{name: "mx0"}}
	s, _ := startServer(t, Config{Targets: []Target{mx}})
	q := dial(t, s.Path())
	q.negotiate()
	_, _, m := q.call(`{"execute":"query-dma-audit"}` + "\n")
	l := m["return"].([]any)
	if len(l) != 1 || l[0].(map[string]any)["name"] != "mx0" || l[0].(map[string]any)["violations"] != 3.0 {
		t.Errorf("query-dma-audit: %v", m)
	}
	if c, _, m := q.call(`{"execute":"query-dma-audit","arguments":{"name":"mx0"}}` + "\n"); c != "" || len(m["return"].([]any)) != 1 {
		t.Errorf("query-dma-audit mx0: %v", m)
	}
	for _, tc := range []struct{ cmd, class string }{
		{`{"execute":"query-dma-audit","arguments":{"name":"myri0"}}`, "GenericError"},
		{`{"execute":"query-dma-audit","arguments":{"name":"nope"}}`, "DeviceNotFound"},
		{`{"execute":"query-registrations","arguments":{"name":"myri0"}}`, "GenericError"},
		{`{"execute":"query-registrations","arguments":{"name":"nope"}}`, "DeviceNotFound"},
		{`{"execute":"query-registrations"}`, "GenericError"},
		{`{"execute":"query-registrations","arguments":{"name":"mx0"}}`, ""},
	} {
		if c, d, _ := q.call(tc.cmd + "\n"); c != tc.class {
			t.Errorf("%s: class %q (%s), want %q", tc.cmd, c, d, tc.class)
		}
	}
}

// TestPortCommands: port-add, port-del and query-ports go to the Ports;
// without Ports they answer GenericError.
func TestPortCommands(t *testing.T) {
	ports := &fakePorts{}
	s, _ := startServer(t, Config{Ports: ports})
	q := dial(t, s.Path())
	q.negotiate()
	if c, _, m := q.call(`{"execute":"port-add","arguments":{"spec":"a"}}` + "\n"); c != "" || m["return"].(map[string]any)["name"] != "a" {
		t.Errorf("port-add: %v", m)
	}
	if c, d, _ := q.call(`{"execute":"port-add","arguments":{"spec":"bad"}}` + "\n"); c != "GenericError" || !strings.Contains(d, "bad spec") {
		t.Errorf("port-add bad: %s %s", c, d)
	}
	if _, _, m := q.call(`{"execute":"query-ports"}` + "\n"); len(m["return"].([]any)) != 1 {
		t.Errorf("query-ports: %v", m)
	}
	if c, _, _ := q.call(`{"execute":"port-del","arguments":{"name":"a"}}` + "\n"); c != "" {
		t.Errorf("port-del: %s", c)
	}
	if c, _, _ := q.call(`{"execute":"port-del","arguments":{"name":"a"}}` + "\n"); c != "DeviceNotFound" {
		t.Errorf("port-del twice: %s", c)
	}

	s2, _ := startServer(t, Config{})
	q2 := dial(t, s2.Path())
	q2.negotiate()
	for _, cmd := range []string{`{"execute":"query-ports"}`, `{"execute":"port-add","arguments":{"spec":"a"}}`, `{"execute":"port-del","arguments":{"name":"a"}}`} {
		if c, d, _ := q2.call(cmd + "\n"); c != "GenericError" || !strings.Contains(d, "no switch ports") {
			t.Errorf("%s without ports: %s %s", cmd, c, d)
		}
	}
}

// TestDocsListEveryCommand: docs/control.md's table has a row for every
// command the server answers, so the two cannot drift.
func TestDocsListEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../docs/control.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range CommandNames() {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/control.md does not list %s", n)
		}
	}
}

// TestAuditCommandsNoAuditedDevice: with no audited device, the list is
// empty, not an error.
func TestAuditCommandsNoAuditedDevice(t *testing.T) {
	s, _ := startServer(t, Config{})
	q := dial(t, s.Path())
	q.negotiate()
	if c, d, m := q.call(`{"execute":"query-dma-audit"}` + "\n"); c != "" || len(m["return"].([]any)) != 0 {
		t.Errorf("query-dma-audit: %s %s %v", c, d, m)
	}
}

// filterTarget is a fake NIC with a receive filter.
type filterTarget struct {
	fakeTarget
}

func (f *filterTarget) RxFilter() (RxFilterInfo, error) {
	return RxFilterInfo{Multicast: "normal", Unicast: "normal", MainMAC: "00:60:dd:00:00:01",
		MulticastTable: []string{"01:00:5e:00:00:01"}}, nil
}

// TestRxFilterCommand: query-rx-filter lists the devices with a filter
// (or the one named, refusing one without), as QEMU's does.
func TestRxFilterCommand(t *testing.T) {
	nic := &filterTarget{fakeTarget{name: "myri1"}}
	s, _ := startServer(t, Config{Targets: []Target{nic}}) // and myri0, without a filter
	q := dial(t, s.Path())
	q.negotiate()
	_, _, m := q.call(`{"execute":"query-rx-filter"}` + "\n")
	l, _ := m["return"].([]any)
	if len(l) != 1 {
		t.Fatalf("query-rx-filter: %v", m)
	}
	f := l[0].(map[string]any)
	if f["name"] != "myri1" || f["main-mac"] != "00:60:dd:00:00:01" || f["multicast"] != "normal" ||
		len(f["multicast-table"].([]any)) != 1 || f["multicast-table"].([]any)[0] != "01:00:5e:00:00:01" {
		t.Errorf("query-rx-filter: %v", f)
	}
	for _, tc := range []struct{ cmd, class string }{
		{`{"execute":"query-rx-filter","arguments":{"name":"myri1"}}`, ""},
		{`{"execute":"query-rx-filter","arguments":{"name":"myri0"}}`, "GenericError"},
		{`{"execute":"query-rx-filter","arguments":{"name":"nope"}}`, "DeviceNotFound"},
	} {
		if c, d, _ := q.call(tc.cmd + "\n"); c != tc.class {
			t.Errorf("%s: class %q (%s), want %q", tc.cmd, c, d, tc.class)
		}
	}
}
