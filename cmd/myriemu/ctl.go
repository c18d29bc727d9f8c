package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"
)

const ctlUsage = `Usage:
  myriemu ctl --control PATH COMMAND [key=value ...]

Sends one command to a serve's control socket (QMP) and prints its reply
as one JSON line: the return value, or {"error":{"class":...,"desc":...}}.
Exit status 0 on a return, 1 on an error reply or a failure, 2 on a usage
error. Values true and false are booleans, key:=JSON passes raw JSON, any
other value is a string. Examples:

  myriemu ctl --control /run/myriemu.qmp query-devices
  myriemu ctl --control /run/myriemu.qmp set_link name=myri0 up=false
  myriemu ctl --control /run/myriemu.qmp fault-add 'rule=r1: msi.raise=drop; times=50'
`

// runCtl is the shell client of the control socket.
func (a *app) runCtl(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() { fmt.Fprint(a.stderr, ctlUsage); fs.PrintDefaults() }
	path := fs.String("control", "", "control socket `PATH` of a running serve")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after `DURATION`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" || fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cmd := fs.Arg(0)
	arguments := map[string]json.RawMessage{}
	for _, kv := range fs.Args()[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(a.stderr, "myriemu ctl: argument %q is not key=value\n", kv)
			return 2
		}
		if raw, isRaw := strings.CutSuffix(k, ":"); isRaw {
			if !json.Valid([]byte(v)) {
				fmt.Fprintf(a.stderr, "myriemu ctl: %s:= is not valid JSON\n", raw)
				return 2
			}
			arguments[raw] = json.RawMessage(v)
			continue
		}
		switch v {
		case "true", "false":
			arguments[k] = json.RawMessage(v)
		default:
			b, _ := json.Marshal(v)
			arguments[k] = b
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	reply, isErr, err := ctlCall(ctx, *path, cmd, arguments)
	if err != nil {
		fmt.Fprintf(a.stderr, "myriemu ctl: %v\n", err)
		return 1
	}
	fmt.Fprintln(a.stdout, string(reply))
	if isErr {
		return 1
	}
	return 0
}

// ctlCall negotiates and runs one command; it returns the return value
// (or the whole error object) and whether it was an error.
func ctlCall(ctx context.Context, path, cmd string, args map[string]json.RawMessage) (json.RawMessage, bool, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, false, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	r := bufio.NewReaderSize(conn, 64<<10)
	readReply := func() (map[string]json.RawMessage, error) {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, fmt.Errorf("reading the reply: %w", err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(line, &m); err != nil {
				return nil, fmt.Errorf("reply is not JSON: %q", line)
			}
			if _, ev := m["event"]; ev {
				continue
			}
			return m, nil
		}
	}
	greeting, err := readReply()
	if err != nil {
		return nil, false, err
	}
	if _, ok := greeting["QMP"]; !ok {
		if e, ok := greeting["error"]; ok {
			return e, true, nil
		}
		return nil, false, fmt.Errorf("no QMP greeting")
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return nil, false, err
	}
	if m, err := readReply(); err != nil {
		return nil, false, err
	} else if e, ok := m["error"]; ok {
		return e, true, nil
	}
	req, _ := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
	if _, err := conn.Write(append(req, '\n')); err != nil {
		return nil, false, err
	}
	m, err := readReply()
	if err != nil {
		return nil, false, err
	}
	if e, ok := m["error"]; ok {
		b, _ := json.Marshal(map[string]json.RawMessage{"error": e})
		return b, true, nil
	}
	return m["return"], false, nil
}
