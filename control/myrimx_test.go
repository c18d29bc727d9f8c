package control

import "testing"

// retiredTarget is a fake audited device that logs retired registrations.
type retiredTarget struct {
	auditTarget
}

func (r *retiredTarget) RetiredRegistrations() (any, error) {
	return []map[string]any{{"id": 1, "generation": 7, "reason": "clear"}}, nil
}

// TestRetiredRegistrations: query-registrations with retired: true
// answers the log of a device that keeps one, GenericError for an audited
// device without one, and checks the argument's type; without it (or
// false) the live table as before.
func TestRetiredRegistrations(t *testing.T) {
	mx := &retiredTarget{auditTarget{fakeTarget{name: "mx0"}}}
	old := &auditTarget{fakeTarget{name: "mx1"}}
	s, _ := startServer(t, Config{Targets: []Target{mx, old}})
	q := dial(t, s.Path())
	q.negotiate()
	c, d, m := q.call(`{"execute":"query-registrations","arguments":{"name":"mx0","retired":true}}` + "\n")
	if l, ok := m["return"].([]any); c != "" || !ok || len(l) != 1 || l[0].(map[string]any)["reason"] != "clear" {
		t.Errorf("retired mx0: %s %s %v", c, d, m)
	}
	c, d, m = q.call(`{"execute":"query-registrations","arguments":{"name":"mx0","retired":false}}` + "\n")
	if l, ok := m["return"].([]any); c != "" || !ok || len(l) != 1 || l[0].(map[string]any)["reason"] != nil {
		t.Errorf("live mx0: %s %s %v", c, d, m)
	}
	for _, tc := range []struct{ cmd, class string }{
		{`{"execute":"query-registrations","arguments":{"name":"mx1","retired":true}}`, "GenericError"},
		{`{"execute":"query-registrations","arguments":{"name":"myri0","retired":true}}`, "GenericError"},
		{`{"execute":"query-registrations","arguments":{"name":"nope","retired":true}}`, "DeviceNotFound"},
		{`{"execute":"query-registrations","arguments":{"name":"mx0","retired":"yes"}}`, "GenericError"},
		{`{"execute":"query-registrations","arguments":{"name":"mx1","retired":false}}`, ""},
	} {
		if c, d, _ := q.call(tc.cmd + "\n"); c != tc.class {
			t.Errorf("%s: class %q (%s), want %q", tc.cmd, c, d, tc.class)
		}
	}
}
