package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
)

// errPrintCapabilities is parseServe's answer to --print-capabilities.
var errPrintCapabilities = errors.New("print capabilities")

// lookupGroup resolves a group name or number.
func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil && n >= 0 {
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(grp.Gid)
}

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
	Socket string            // path to listen on, or
	FD     int               // a listening socket handed over (>= 3), when Socket is ""
	Opts   map[string]string // kind-specific keys
}

// serveConfig is the parsed command line of serve.
type serveConfig struct {
	Devices   []deviceConfig
	Limits    limitsConfig // limits.go
	LogLevel  logrus.Level
	LogFormat string // "text" or "json"
	Pcap      string // capture the switch to this file
	// Perm is the mode and group of every socket serve creates (the zero
	// value: 0600, the process's group). A control socket gets the same:
	// unixsock.ListenUnix(path, cfg.Perm).
	Perm unixsock.Perm

	Ports []string // --port values: switch ports to other networks (ports.go)
}

// endpoint is one --socket or --fd, in command-line order.
type endpoint struct {
	path string
	fd   int
}

// endpointFlag appends a --socket (fd false) or --fd to a shared list, so
// the n-th device without socket= or fd= takes the n-th of either.
type endpointFlag struct {
	list *[]endpoint
	fd   bool
}

func (f endpointFlag) String() string { return "" }
func (f endpointFlag) Set(v string) error {
	if !f.fd {
		*f.list = append(*f.list, endpoint{path: v})
		return nil
	}
	n, err := parseFD(v)
	if err != nil {
		return err
	}
	*f.list = append(*f.list, endpoint{fd: n})
	return nil
}

// parseFD parses an inherited descriptor number; 0..2 are stdio.
func parseFD(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 3 {
		return 0, fmt.Errorf("fd %q: want a descriptor number >= 3", v)
	}
	return n, nil
}

// listFlag collects every value of a repeatable flag, in order.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const serveUsage = `Usage:
  myriemu serve --device KIND,socket=PATH[,name=NAME][,KEY=VALUE...] ... [flags]
  myriemu serve --socket PATH --device KIND [--socket PATH --device KIND ...] [flags]
  myriemu serve --print-capabilities

Serves one device per UNIX socket to QEMU's vfio-user-pci, until SIGTERM,
SIGINT or SIGHUP (SIGHUP is not a reload: it stops serve like SIGTERM).
Sockets are created 0600 whatever the umask (see --socket-mode and
--socket-group). A supervisor may hand over a listening socket instead:
fd=N (or --fd N). The n-th --device without socket= or fd= takes the n-th
--socket or --fd. A device is named KIND<i> (testdev0, testdev1, ...)
unless name= is given. Once every socket listens (and the --pcap file is
open), prints one line on stdout:
  myriemu: ready device=NAME socket=PATH [device=NAME socket=PATH ...]

Exit status:
  0  stopped by SIGTERM, SIGINT or SIGHUP; everything shut down cleanly
  1  runtime error: a socket or the --pcap file could not be created, a
     server failed, or the capture stopped on a write error (full disk:
     the file then ends at the last whole frame)
  2  usage error: unknown flag, device kind or key, or a bad value
     (slices=0, mac=garbage); a hint follows on stderr

Flags:
`

// serveFlags is serve's flag set and where its values land.
type serveFlags struct {
	*flag.FlagSet
	endpoints                                []endpoint
	devices                                  listFlag
	level, format, pcap, sockMode, sockGroup *string
	printCaps                                *bool

	ports listFlag // ports.go
}

// newServeFlags returns serve's flags.
func newServeFlags(out io.Writer, kinds map[string]deviceKind) *serveFlags {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	sf := &serveFlags{FlagSet: fs}
	fs.Var(endpointFlag{list: &sf.endpoints}, "socket", "UNIX socket `PATH` for the next device without socket= or fd= (repeatable)")
	fs.Var(endpointFlag{list: &sf.endpoints, fd: true}, "fd", "listening UNIX socket `N` handed over by a supervisor, for the next device without socket= or fd= (repeatable)")
	fs.Var(&sf.devices, "device", "`KIND[,socket=PATH|fd=N][,name=NAME][,KEY=VALUE...]` of a device to serve (repeatable); kinds: "+
		strings.Join(kindNames(kinds), ", "))
	sf.sockMode = fs.String("socket-mode", "", "octal `MODE` of the socket files, whatever the umask (default 0600)")
	sf.sockGroup = fs.String("socket-group", "", "`GROUP` (name or number) of the socket files, e.g. for a supervisor's group with --socket-mode 0660")
	sf.printCaps = fs.Bool("print-capabilities", false, "print the device kinds, their keys and the protocol as JSON on stdout, and exit")
	sf.level = fs.String("log-level", "info", "log `level`: trace, debug, info, warn, error")
	sf.format = fs.String("log-format", "text", "log `format` on stderr: text or json")
	fs.Var(&sf.ports, "port", portUsage)
	sf.pcap = fs.String("pcap", "", "write every frame crossing the emulated switch to `FILE` (pcap, for tshark; created 0600 once the sockets listen, never through a symlink)")
	addLimitFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), serveUsage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nDevice kinds:\n")
		for _, k := range kindNames(kinds) {
			fmt.Fprintf(fs.Output(), "  %-10s %s\n", k, kinds[k].help)
			for _, key := range kinds[k].keys {
				fmt.Fprintf(fs.Output(), "      %s=: %s\n", key.Name, key.Help)
			}
		}
	}
	return sf
}

// parseServe parses serve's arguments. Usage mistakes are *usageError;
// -h/--help is flag.ErrHelp.
func parseServe(args []string, kinds map[string]deviceKind, out io.Writer) (serveConfig, error) {
	fs := newServeFlags(out, kinds)
	endpoints, devices, level, format := &fs.endpoints, &fs.devices, fs.level, fs.format
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return serveConfig{}, err
		}
		return serveConfig{}, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return serveConfig{}, usagef("unexpected argument %q", fs.Arg(0))
	}
	if *fs.printCaps {
		return serveConfig{}, errPrintCapabilities
	}
	cfg := serveConfig{Pcap: *fs.pcap}
	if *fs.sockMode != "" {
		m, err := unixsock.ParseMode(*fs.sockMode)
		if err != nil {
			return cfg, usagef("--socket-mode: %v", err)
		}
		cfg.Perm.Mode = m
	}
	if *fs.sockGroup != "" {
		gid, err := lookupGroup(*fs.sockGroup)
		if err != nil {
			return cfg, usagef("--socket-group: %v", err)
		}
		cfg.Perm.GID, cfg.Perm.SetGID = gid, true
	}
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
	if cfg.Limits, err = limitsFrom(fs.FlagSet); err != nil {
		return cfg, err
	}
	if cfg.Ports, err = checkPorts(fs.ports); err != nil {
		return cfg, err
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
		if d.Socket == "" && d.FD == 0 {
			if next == len(*endpoints) {
				return cfg, usagef("--device %q has no socket: give socket= or one more --socket", spec)
			}
			e := (*endpoints)[next]
			next++
			if e.fd == 0 && e.path == "" {
				return cfg, usagef("--socket with an empty path")
			}
			d.Socket, d.FD = e.path, e.fd
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
		if err := kinds[d.Kind].check(d.Opts); err != nil {
			return cfg, usagef("--device %q: %v", spec, err)
		}
		sock := d.Socket
		if sock == "" {
			sock = "fd:" + strconv.Itoa(d.FD)
		}
		if socketsUsed[sock] {
			return cfg, usagef("socket %q used by two devices", sock)
		}
		names[d.Name], socketsUsed[sock] = true, true
		cfg.Devices = append(cfg.Devices, d)
	}
	if next < len(*endpoints) {
		if e := (*endpoints)[next]; e.fd != 0 {
			return cfg, usagef("--fd %d has no --device", e.fd)
		}
		return cfg, usagef("--socket %q has no --device", (*endpoints)[next].path)
	}
	return cfg, nil
}

// parseDevice parses KIND[,socket=PATH|fd=N][,name=NAME][,KEY=VALUE...].
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
			if seen["fd"] {
				return d, usagef("--device %q: socket= and fd= together", spec)
			}
			d.Socket = v
		case "fd":
			if seen["socket"] {
				return d, usagef("--device %q: socket= and fd= together", spec)
			}
			n, err := parseFD(v)
			if err != nil {
				return d, usagef("--device %q: %v", spec, err)
			}
			d.FD = n
		case "name":
			if strings.ContainsAny(v, " \t\n=\"") {
				return d, usagef("--device %q: name %q has spaces, quotes or '='", spec, v)
			}
			d.Name = v
		default:
			if !kinds[d.Kind].hasKey(k) {
				known := []string{"socket", "fd", "name"}
				for _, key := range kinds[d.Kind].keys {
					known = append(known, key.Name)
				}
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
