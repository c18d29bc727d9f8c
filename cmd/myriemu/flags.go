package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

// usageError is a command-line mistake: exit status 2 and a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// deviceConfig is one device to serve.
type deviceConfig struct {
	Kind   string
	Name   string
	Socket string
	Opts   map[string]string // kind-specific keys
}

// serveConfig is the parsed command line of serve.
type serveConfig struct {
	Devices   []deviceConfig
	LogLevel  logrus.Level
	LogFormat string // "text" or "json"
	Pcap      string // capture the switch to this file
	Control   controlConfig
}

// listFlag collects every value of a repeatable flag, in order.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const serveUsage = `Usage:
  myriemu serve --socket PATH --device KIND [--socket PATH --device KIND ...] [flags]
  myriemu serve --device KIND,socket=PATH[,name=NAME] ... [flags]

Serves one device per UNIX socket to QEMU's vfio-user-pci, until SIGTERM or
SIGINT. The n-th --device without socket= is served on the n-th --socket.
A device is named KIND<i> (testdev0, testdev1, ...) unless name= is given.
Once every socket listens, prints one line on stdout:
  myriemu: ready device=NAME socket=PATH [device=NAME socket=PATH ...]

Flags:
`

// serveFlags is serve's flag set and where its values land.
type serveFlags struct {
	*flag.FlagSet
	sockets, devices    listFlag
	level, format, pcap *string
	ctl                 *controlFlags
}

// newServeFlags returns serve's flags.
func newServeFlags(out io.Writer, kinds map[string]deviceKind) *serveFlags {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	sf := &serveFlags{FlagSet: fs}
	sockets, devices := &sf.sockets, &sf.devices
	fs.Var(sockets, "socket", "UNIX socket `PATH` for the next device without socket= (repeatable)")
	fs.Var(devices, "device", "`KIND[,socket=PATH][,name=NAME]` of a device to serve (repeatable); kinds: "+
		strings.Join(kindNames(kinds), ", "))
	sf.level = fs.String("log-level", "info", "log `level`: trace, debug, info, warn, error")
	sf.format = fs.String("log-format", "text", "log `format` on stderr: text or json")
	sf.pcap = fs.String("pcap", "", "write every frame crossing the emulated switch to `FILE` (pcap, for tshark)")
	sf.ctl = addControlFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), serveUsage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nDevice kinds:\n")
		for _, k := range kindNames(kinds) {
			fmt.Fprintf(fs.Output(), "  %-10s %s\n", k, kinds[k].help)
			for _, key := range slices.Sorted(maps.Keys(kinds[k].keys)) {
				fmt.Fprintf(fs.Output(), "      %s=: %s\n", key, kinds[k].keys[key])
			}
		}
	}
	return sf
}

// parseServe parses serve's arguments. Usage mistakes are *usageError;
// -h/--help is flag.ErrHelp.
func parseServe(args []string, kinds map[string]deviceKind, out io.Writer) (serveConfig, error) {
	fs := newServeFlags(out, kinds)
	sockets, devices, level, format := &fs.sockets, &fs.devices, fs.level, fs.format
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return serveConfig{}, err
		}
		return serveConfig{}, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return serveConfig{}, usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg := serveConfig{Pcap: *fs.pcap, Control: fs.ctl.config()}
	lv, err := logrus.ParseLevel(*level)
	if err != nil || lv < logrus.ErrorLevel {
		return cfg, usagef("--log-level %q: want trace, debug, info, warn or error", *level)
	}
	cfg.LogLevel = lv
	switch *format {
	case "text", "json":
		cfg.LogFormat = *format
	default:
		return cfg, usagef("--log-format %q: want text or json", *format)
	}

	if len(*devices) == 0 {
		return cfg, usagef("no --device given")
	}
	next := 0 // next unused --socket
	perKind := map[string]int{}
	names := map[string]bool{}
	socketsUsed := map[string]bool{}
	for _, spec := range *devices {
		d, err := parseDevice(spec, kinds)
		if err != nil {
			return cfg, err
		}
		if d.Socket == "" {
			if next == len(*sockets) {
				return cfg, usagef("--device %q has no socket: give socket= or one more --socket", spec)
			}
			d.Socket = (*sockets)[next]
			next++
			if d.Socket == "" {
				return cfg, usagef("--socket with an empty path")
			}
		}
		if d.Name == "" {
			for d.Name == "" || names[d.Name] {
				d.Name = d.Kind + strconv.Itoa(perKind[d.Kind])
				perKind[d.Kind]++
			}
		}
		if names[d.Name] {
			return cfg, usagef("device name %q used twice", d.Name)
		}
		if socketsUsed[d.Socket] {
			return cfg, usagef("socket %q used by two devices", d.Socket)
		}
		names[d.Name], socketsUsed[d.Socket] = true, true
		cfg.Devices = append(cfg.Devices, d)
	}
	if next < len(*sockets) {
		return cfg, usagef("--socket %q has no --device", (*sockets)[next])
	}
	return cfg, nil
}

// parseDevice parses KIND[,socket=PATH][,name=NAME].
func parseDevice(spec string, kinds map[string]deviceKind) (deviceConfig, error) {
	parts := strings.Split(spec, ",")
	d := deviceConfig{Kind: parts[0]}
	if _, ok := kinds[d.Kind]; !ok {
		return d, usagef("--device %q: unknown kind %q (known: %s)", spec, d.Kind, strings.Join(kindNames(kinds), ", "))
	}
	seen := map[string]bool{}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return d, usagef("--device %q: %q is not key=value with a value", spec, kv)
		}
		if seen[k] {
			return d, usagef("--device %q: %s given twice", spec, k)
		}
		seen[k] = true
		switch k {
		case "socket":
			d.Socket = v
		case "name":
			if strings.ContainsAny(v, " \t\n=\"") {
				return d, usagef("--device %q: name %q has spaces, quotes or '='", spec, v)
			}
			d.Name = v
		default:
			if _, ok := kinds[d.Kind].keys[k]; !ok {
				known := append([]string{"socket", "name"}, slices.Sorted(maps.Keys(kinds[d.Kind].keys))...)
				return d, usagef("--device %q: unknown key %q (known: %s)", spec, k, strings.Join(known, ", "))
			}
			if d.Opts == nil {
				d.Opts = map[string]string{}
			}
			d.Opts[k] = v
		}
	}
	return d, nil
}

func kindNames(kinds map[string]deviceKind) []string {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
