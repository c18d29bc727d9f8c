package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/myriemu/myriemu/fault"
)

// QMP error classes (qmp-spec.rst, "Error"): the ones QEMU still uses.
const (
	classGeneric         = "GenericError"
	classCommandNotFound = "CommandNotFound"
	classDeviceNotActive = "DeviceNotActive"
	classDeviceNotFound  = "DeviceNotFound"
)

// qmpError is a command's failure: class and desc (go-qemu checks only
// desc, so it is never empty).
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

func errorf(class, format string, args ...any) *qmpError {
	return &qmpError{Class: class, Desc: fmt.Sprintf(format, args...)}
}

func errorLine(id json.RawMessage, class, desc string) []byte {
	b, _ := json.Marshal(struct {
		Error qmpError        `json:"error"`
		ID    json.RawMessage `json:"id,omitempty"`
	}{qmpError{class, desc}, id})
	return append(b, '\n')
}

// param is one argument of a command.
type param struct {
	name     string
	typ      string // "str", "bool", "int"
	optional bool
}

// command is one QMP command.
type command struct {
	params []param
	run    func(c *client, args map[string]json.RawMessage) (any, error)
}

func (s *Server) commands() map[string]command {
	name := []param{{name: "name", typ: "str"}}
	cmds := map[string]command{
		"qmp_capabilities": {params: []param{{name: "enable", typ: "array", optional: true}}},
		"query-version":    {run: s.queryVersion},
		"query-commands":   {run: s.queryCommands},
		// QEMU's StatusInfo is {running, status} since 9.0 removed
		// singlestep. The devices always run: there are no vCPUs here
		// to stop, so stop and cont are not offered (docs/control.md).
		"query-status": {run: func(*client, map[string]json.RawMessage) (any, error) {
			return map[string]any{"running": true, "status": "running"}, nil
		}},
		"query-devices":       {run: s.queryDevices},
		"query-counters":      {params: name, run: s.queryCounters},
		"set_link":            {params: []param{{name: "name", typ: "str"}, {name: "up", typ: "bool"}}, run: s.setLink},
		"device-reset":        {params: name, run: s.deviceReset},
		"device-disconnect":   {params: name, run: s.deviceDisconnect},
		"fault-add":           {params: []param{{name: "rule", typ: "str"}}, run: s.faultAdd},
		"fault-del":           {params: []param{{name: "id", typ: "str"}}, run: s.faultDel},
		"query-faults":        {run: s.queryFaults},
		"query-fault-log":     {run: s.queryFaultLog},
		"query-dma-audit":     {params: []param{{name: "name", typ: "str", optional: true}}, run: s.queryDMAAudit},
		"query-registrations": {params: []param{{name: "name", typ: "str"}, {name: "retired", typ: "bool", optional: true}}, run: s.queryRegistrations},
		"port-add":            {params: []param{{name: "spec", typ: "str"}}, run: s.portAdd},
		"port-del":            {params: []param{{name: "name", typ: "str"}}, run: s.portDel},
		"query-ports":         {run: s.queryPorts},
		"query-rx-filter":     {params: []param{{name: "name", typ: "str", optional: true}}, run: s.queryRxFilter},
	}
	// The reference's experimental spellings (x- prefix) of the fault
	// commands, for scripts written against it.
	for _, n := range []string{"fault-add", "fault-del", "query-faults"} {
		cmds["x-"+n] = cmds[n]
	}
	return cmds
}

// request is a QMP input object.
type request struct {
	Execute   *string                    `json:"execute"`
	Arguments map[string]json.RawMessage `json:"arguments"`
	ID        json.RawMessage            `json:"id"`
}

// handle answers one JSON value with exactly one reply line.
func (c *client) handle(msg []byte, negotiated *bool) []byte {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(msg, &raw); err != nil {
		if len(msg) > 0 && msg[0] == '[' {
			return errorLine(nil, classGeneric, "QMP input must be a JSON object")
		}
		return errorLine(nil, classGeneric, "JSON parse error: "+err.Error())
	}
	id := raw["id"]
	for k := range raw {
		if k != "execute" && k != "arguments" && k != "id" {
			return errorLine(id, classGeneric, fmt.Sprintf("QMP input member '%s' is unexpected", k))
		}
	}
	var req request
	if err := json.Unmarshal(msg, &req); err != nil || req.Execute == nil {
		if a, ok := raw["arguments"]; ok && !isObject(a) {
			return errorLine(id, classGeneric, "QMP input member 'arguments' must be an object")
		}
		if _, ok := raw["execute"]; ok {
			return errorLine(id, classGeneric, "QMP input member 'execute' must be a string")
		}
		return errorLine(id, classGeneric, "QMP input lacks member 'execute'")
	}
	if a, ok := raw["arguments"]; ok && !isObject(a) {
		return errorLine(id, classGeneric, "QMP input member 'arguments' must be an object")
	}
	name := *req.Execute
	if !*negotiated {
		if name != "qmp_capabilities" {
			return errorLine(id, classCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'")
		}
		if err := checkArgs(c.srv.cmds[name].params, req.Arguments); err != nil {
			return errorLine(id, err.Class, err.Desc)
		}
		if e, ok := req.Arguments["enable"]; ok && !bytes.Equal(bytes.TrimSpace(e), []byte("[]")) {
			return errorLine(id, classGeneric, "Capability not available")
		}
		*negotiated = true
		return replyLine(id, struct{}{})
	}
	// The first command after negotiation: the client's reader is running
	// now, so events may flow.
	if !c.events.Load() {
		c.events.Store(true)
	}
	if name == "qmp_capabilities" {
		return errorLine(id, classCommandNotFound, "Capabilities negotiation is already complete, command ignored")
	}
	cmd, ok := c.srv.cmds[name]
	if !ok {
		return errorLine(id, classCommandNotFound, fmt.Sprintf("The command %s has not been found", name))
	}
	if err := checkArgs(cmd.params, req.Arguments); err != nil {
		return errorLine(id, err.Class, err.Desc)
	}
	ret, err := cmd.run(c, req.Arguments)
	if err != nil {
		var qe *qmpError
		if !errors.As(err, &qe) {
			qe = &qmpError{Class: classGeneric, Desc: err.Error()}
		}
		if qe.Desc == "" {
			qe.Desc = "error"
		}
		return errorLine(id, qe.Class, qe.Desc)
	}
	if ret == nil {
		ret = struct{}{}
	}
	return replyLine(id, ret)
}

func isObject(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{'
}

func replyLine(id json.RawMessage, ret any) []byte {
	b, err := json.Marshal(struct {
		Return any             `json:"return"`
		ID     json.RawMessage `json:"id,omitempty"`
	}{ret, id})
	if err != nil {
		return errorLine(id, classGeneric, "reply not encodable: "+err.Error())
	}
	return append(b, '\n')
}

// checkArgs checks arguments as QEMU's generated marshallers do: every
// mandatory one present, none unknown, each of its type.
func checkArgs(params []param, args map[string]json.RawMessage) *qmpError {
	for k := range args {
		if !slices.ContainsFunc(params, func(p param) bool { return p.name == k }) {
			return errorf(classGeneric, "Parameter '%s' is unexpected", k)
		}
	}
	for _, p := range params {
		v, ok := args[p.name]
		if !ok {
			if p.optional {
				continue
			}
			return errorf(classGeneric, "Parameter '%s' is missing", p.name)
		}
		var okType bool
		switch p.typ {
		case "str":
			var s string
			okType = json.Unmarshal(v, &s) == nil && bytes.TrimSpace(v)[0] == '"'
		case "bool":
			t := string(bytes.TrimSpace(v))
			okType = t == "true" || t == "false"
		case "array":
			var a []json.RawMessage
			okType = json.Unmarshal(v, &a) == nil && bytes.TrimSpace(v)[0] == '['
		}
		if !okType {
			want := map[string]string{"str": "string", "bool": "boolean", "array": "array"}[p.typ]
			return errorf(classGeneric, "Invalid parameter type for '%s', expected: %s", p.name, want)
		}
	}
	return nil
}

func strArg(args map[string]json.RawMessage, k string) string {
	var s string
	json.Unmarshal(args[k], &s)
	return s
}

func (s *Server) target(args map[string]json.RawMessage) (Target, error) {
	n := strArg(args, "name")
	t, ok := s.targets[n]
	if !ok {
		return nil, errorf(classDeviceNotFound, "Device '%s' not found", n)
	}
	return t, nil
}

// targetsNamed is the device args names, or every device when the
// optional name is absent (QEMU's query-rx-filter rule).
func (s *Server) targetsNamed(args map[string]json.RawMessage) ([]Target, error) {
	if _, one := args["name"]; !one {
		return s.cfg.Targets, nil
	}
	t, err := s.target(args)
	if err != nil {
		return nil, err
	}
	return []Target{t}, nil
}

func (s *Server) queryVersion(*client, map[string]json.RawMessage) (any, error) {
	major, minor, micro := parseVersion(s.cfg.Version)
	return map[string]any{"qemu": map[string]int{"major": major, "minor": minor, "micro": micro},
		"package": "myriemu " + s.cfg.Version}, nil
}

func (s *Server) queryCommands(*client, map[string]json.RawMessage) (any, error) {
	var out []map[string]string
	for n := range s.cmds {
		out = append(out, map[string]string{"name": n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"] < out[j]["name"] })
	return out, nil
}

func (s *Server) queryDevices(*client, map[string]json.RawMessage) (any, error) {
	out := make([]DeviceInfo, 0, len(s.cfg.Targets))
	for _, t := range s.cfg.Targets {
		out = append(out, t.Info())
	}
	return out, nil
}

func (s *Server) queryCounters(_ *client, args map[string]json.RawMessage) (any, error) {
	t, err := s.target(args)
	if err != nil {
		return nil, err
	}
	return t.Counters(), nil
}

func (s *Server) setLink(c *client, args map[string]json.RawMessage) (any, error) {
	t, err := s.target(args)
	if err != nil {
		return nil, err
	}
	var up bool
	json.Unmarshal(args["up"], &up)
	if err := targetErr(t, t.SetLink(up)); err != nil {
		return nil, err
	}
	s.log.WithFields(map[string]any{"device": t.Name(), "up": up}).Info("link set")
	// After the reply: go-qemu's reader blocks handing an event to a
	// caller who is still waiting for the reply of the command that
	// caused it.
	c.afterReply(func() {
		s.Emit("LINK_CHANGED", map[string]any{"device": t.Name(), "up": up, "cause": "set_link"})
	})
	return nil, nil
}

func (s *Server) deviceReset(_ *client, args map[string]json.RawMessage) (any, error) {
	t, err := s.target(args)
	if err != nil {
		return nil, err
	}
	s.log.WithField("device", t.Name()).Info("device reset requested")
	return nil, targetErr(t, t.Reset())
}

func (s *Server) deviceDisconnect(_ *client, args map[string]json.RawMessage) (any, error) {
	t, err := s.target(args)
	if err != nil {
		return nil, err
	}
	s.log.WithField("device", t.Name()).Info("device disconnect requested")
	return nil, targetErr(t, t.Disconnect())
}

// targetErr maps a Target's error to its QMP class.
func targetErr(t Target, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotActive):
		return errorf(classDeviceNotActive, "Device '%s' has not been activated: %v", t.Name(), err)
	default:
		return errorf(classGeneric, "device %s: %v", t.Name(), err)
	}
}

func (s *Server) faults() (*fault.Set, error) {
	if s.cfg.Faults == nil {
		return nil, errorf(classGeneric, "fault injection is not enabled on this server")
	}
	return s.cfg.Faults, nil
}

func (s *Server) faultAdd(_ *client, args map[string]json.RawMessage) (any, error) {
	set, err := s.faults()
	if err != nil {
		return nil, err
	}
	r, err := fault.Parse(strArg(args, "rule"))
	if err != nil {
		return nil, errorf(classGeneric, "%v", err)
	}
	if err := set.Add(r); err != nil {
		return nil, errorf(classGeneric, "%v", err)
	}
	return map[string]string{"id": r.ID, "rule": r.String()}, nil
}

func (s *Server) faultDel(_ *client, args map[string]json.RawMessage) (any, error) {
	set, err := s.faults()
	if err != nil {
		return nil, err
	}
	if err := set.Delete(strArg(args, "id")); err != nil {
		return nil, errorf(classGeneric, "%v", err)
	}
	return nil, nil
}

func (s *Server) queryFaults(*client, map[string]json.RawMessage) (any, error) {
	set, err := s.faults()
	if err != nil {
		return nil, err
	}
	return map[string]any{"seed": set.Seed(), "state": set.State(), "rules": set.Rules()}, nil
}

func (s *Server) queryFaultLog(*client, map[string]json.RawMessage) (any, error) {
	set, err := s.faults()
	if err != nil {
		return nil, err
	}
	recent, total := set.Recent()
	return map[string]any{"total": total, "firings": recent}, nil
}

// queryDMAAudit answers the audit counters of every audited device, or of
// the one named.
func (s *Server) queryDMAAudit(_ *client, args map[string]json.RawMessage) (any, error) {
	targets, err := s.targetsNamed(args)
	if err != nil {
		return nil, err
	}
	_, one := args["name"] // then a device without it is an error
	out := []map[string]any{}
	for _, t := range targets {
		a, ok := t.(Auditor)
		var c map[string]any
		err := ErrNotSupported
		if ok {
			c, err = a.DMAAudit()
		}
		if errors.Is(err, ErrNotSupported) && !one {
			continue // a device without an audit, in the list of all
		}
		if err != nil {
			return nil, targetErr(t, err)
		}
		c["name"] = t.Name()
		out = append(out, c)
	}
	return out, nil
}

func (s *Server) queryRegistrations(_ *client, args map[string]json.RawMessage) (any, error) {
	t, err := s.target(args)
	if err != nil {
		return nil, err
	}
	if boolArg(args, "retired") {
		return retiredRegistrations(t)
	}
	a, ok := t.(Auditor)
	if !ok {
		return nil, targetErr(t, ErrNotSupported)
	}
	regs, err := a.Registrations()
	if err != nil {
		return nil, targetErr(t, err)
	}
	return regs, nil
}

func (s *Server) ports() (Ports, error) {
	if s.cfg.Ports == nil {
		return nil, errorf(classGeneric, "this server has no switch ports to other networks")
	}
	return s.cfg.Ports, nil
}

func (s *Server) portAdd(_ *client, args map[string]json.RawMessage) (any, error) {
	p, err := s.ports()
	if err != nil {
		return nil, err
	}
	spec := strArg(args, "spec")
	n, err := p.AddPort(spec)
	if err != nil {
		return nil, errorf(classGeneric, "port-add %s: %v", spec, err)
	}
	s.log.WithFields(map[string]any{"port": n, "spec": spec}).Info("port added")
	return map[string]string{"name": n}, nil
}

func (s *Server) portDel(_ *client, args map[string]json.RawMessage) (any, error) {
	p, err := s.ports()
	if err != nil {
		return nil, err
	}
	n := strArg(args, "name")
	if err := p.RemovePort(n); err != nil {
		return nil, errorf(classDeviceNotFound, "%v", err)
	}
	s.log.WithField("port", n).Info("port removed")
	return nil, nil
}

func (s *Server) queryPorts(*client, map[string]json.RawMessage) (any, error) {
	p, err := s.ports()
	if err != nil {
		return nil, err
	}
	return p.QueryPorts(), nil
}

// CommandNames lists the commands the server answers, sorted.
func CommandNames() []string {
	var s Server
	var out []string
	for n := range s.commands() {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
