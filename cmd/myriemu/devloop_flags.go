package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The run subcommand ("devloop" in file and type names, so as not to mix
// it up with run.go, serve's runner): a driver developer's
// edit-build-test loop. Boot guests with emulated cards, load the
// developer's modules, run their command in every guest, summarise.

// runConfig is the parsed command line of run.
type runConfig struct {
	Guests int
	// NICs are the cards every guest gets, in PCI order.
	NICs []nicSpec
	// Share is the host directory mounted at the same path in every
	// guest (absolute); "" shares nothing.
	Share string
	// Cwd is where CMD starts in the guest: the host's working directory
	// if it lies inside Share, else Share, else /.
	Cwd string
	// Modules load in this order, after the in-tree driver.
	Modules []moduleSource
	// Faults and Control pass through to serve.
	Faults, Control string
	// Keep keeps consoles, server log and pcap in this directory.
	Keep     string
	Shell    bool
	Timeout  time.Duration // CMD's bound, per guest, from /init on
	Boot     time.Duration // QEMU start to /init
	Memory   int           // MiB per guest
	LogLevel string        // serve's
	Cmd      []string
}

// nicSpec is one --nic: a device kind and its serve --device keys.
type nicSpec struct {
	Kind string
	Opts []string // key=value, as given, in order
}

// slices is the NIC's slices= (1 when not given).
func (n nicSpec) slices() int {
	for _, kv := range n.Opts {
		if v, ok := strings.CutPrefix(kv, "slices="); ok {
			if s, err := strconv.Atoi(v); err == nil {
				return s
			}
		}
	}
	return 1
}

// moduleSource is one --module (a .ko) or --build-module (a kbuild dir).
type moduleSource struct {
	Path  string // absolute
	Build bool
}

// moduleFlag appends to a list shared by --module and --build-module, so
// that modules load in command-line order whichever flag named them.
type moduleFlag struct {
	list  *[]moduleSource
	build bool
}

func (m moduleFlag) String() string { return "" }
func (m moduleFlag) Set(v string) error {
	if v == "" {
		return errors.New("empty path")
	}
	*m.list = append(*m.list, moduleSource{Path: v, Build: m.build})
	return nil
}

const runUsage = `Usage:
  myriemu run [flags] -- CMD [ARG...]
  myriemu run [flags] --shell

Boots --guests QEMU guests (TCG) from the provisioned sid rootfs, each with
its emulated cards on one emulated switch, loads the distribution's driver
and your modules, mounts --share at the same path and runs CMD in every
guest with busybox sh (a host binary must be static to run there). Guest
consoles stream live, prefixed by guest name; a summary follows: CMD's exit
status per guest, kernel warnings, each NIC's counters.

CMD sees GUEST_INDEX (1..N), GUEST_COUNT, GUEST_NAME (guest1...),
GUEST_ADDR (10.0.0.GUEST_INDEX, the first NIC's), GUEST_ADDRS (every
guest's GUEST_ADDR), NIC_COUNT and per Myri-10G NIC j: NICj_IF, NICj_ADDR
(10.0.j.GUEST_INDEX/24).

Exit status: CMD's worst; 1 if CMD succeeded everywhere but a kernel
warned, a module did not load or a guest did not finish; 2 for a usage or
module compile error (before anything boots); 130 after Ctrl-C, 143 after
SIGTERM.

Flags:
`

// runFlags is run's flag set and where its values land.
type runFlags struct {
	*flag.FlagSet
	guests          *int
	nics            listFlag
	share           *string
	modules         []moduleSource
	faults, control *string
	keep            *string
	shell           *bool
	timeout, boot   *time.Duration
	memory          *int
	level           *string
}

func newRunFlags(out io.Writer, kinds map[string]deviceKind) *runFlags {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(out)
	rf := &runFlags{FlagSet: fs}
	rf.guests = fs.Int("guests", 1, "`N` guests, all on one emulated switch")
	fs.Var(&rf.nics, "nic", "card of every guest, `KIND[,key=value...]` (repeatable; default myri10ge); kinds: "+
		strings.Join(kindNames(kinds), ", "))
	rf.share = fs.String("share", ".", "host `DIR` mounted read-write at the same path in every guest (9p); none: no share")
	fs.Var(moduleFlag{list: &rf.modules}, "module", "kernel module `FILE.ko` to load before CMD (repeatable, in dependency order)")
	fs.Var(moduleFlag{list: &rf.modules, build: true}, "build-module",
		"build the out-of-tree module in `DIR` (kbuild, against the guest kernel's headers) and load it (repeatable)")
	rf.faults = fs.String("faults", "", "fault rules `FILE`, passed to serve --faults")
	rf.control = fs.String("control", "", "control socket `PATH`, passed to serve --control; its fault log is in the summary")
	rf.keep = fs.String("keep", "", "keep consoles, QEMU command lines, server log and the wire's pcap in `DIR`")
	rf.shell = fs.Bool("shell", false, "an interactive shell on the first guest's console instead of CMD")
	rf.timeout = fs.Duration("timeout", 10*time.Minute, "bound on each guest from /init to power-off (CMD included)")
	rf.boot = fs.Duration("boot-timeout", 3*time.Minute, "bound on each guest from QEMU's start to /init")
	rf.memory = fs.Int("memory", 512, "guest RAM in `MiB`")
	rf.level = fs.String("log-level", "info", "serve's log `level` (its log is in --keep DIR)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), runUsage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nCard kinds and their keys (socket=, fd= and name= are set by run):\n")
		for _, k := range kindNames(kinds) {
			fmt.Fprintf(fs.Output(), "  %-10s %s\n", k, kinds[k].help)
			for _, key := range kinds[k].keys {
				fmt.Fprintf(fs.Output(), "      %s=: %s\n", key.Name, key.Help)
			}
		}
	}
	return rf
}

// maxGuests keeps the addresses in one /24 and the machine usable.
const maxGuests = 16

// parseRun parses run's arguments; cwd is the host's working directory.
// Usage mistakes are *usageError; -h/--help is flag.ErrHelp.
func parseRun(args []string, kinds map[string]deviceKind, cwd string, out io.Writer) (runConfig, error) {
	rf := newRunFlags(out, kinds)
	if err := rf.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runConfig{}, err
		}
		return runConfig{}, &usageError{msg: err.Error()}
	}
	cfg := runConfig{
		Guests: *rf.guests, Faults: *rf.faults, Control: *rf.control, Shell: *rf.shell,
		Timeout: *rf.timeout, Boot: *rf.boot, Memory: *rf.memory, LogLevel: *rf.level, Cmd: rf.Args(),
	}
	switch {
	case cfg.Guests < 1 || cfg.Guests > maxGuests:
		return cfg, usagef("--guests %d: want 1..%d", cfg.Guests, maxGuests)
	case cfg.Memory < 128:
		return cfg, usagef("--memory %d: want at least 128 (MiB)", cfg.Memory)
	case cfg.Timeout <= 0 || cfg.Boot <= 0:
		return cfg, usagef("--timeout and --boot-timeout must be positive")
	case cfg.Shell && len(cfg.Cmd) > 0:
		return cfg, usagef("--shell and a CMD (%q): give one", strings.Join(cfg.Cmd, " "))
	case !cfg.Shell && len(cfg.Cmd) == 0:
		return cfg, usagef("no CMD: give -- CMD [ARG...] (e.g. -- true) or --shell")
	}
	if len(cfg.Cmd) == 0 {
		cfg.Cmd = nil
	}
	if _, err := logLevel(cfg.LogLevel); err != nil {
		return cfg, err
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(cwd, p)
	}
	for _, p := range []*string{rf.faults, rf.control, rf.keep} {
		if *p != "" {
			*p = abs(*p)
		}
	}
	cfg.Faults, cfg.Control, cfg.Keep = *rf.faults, *rf.control, *rf.keep

	nics := []string(rf.nics)
	if len(nics) == 0 {
		nics = []string{"myri10ge"}
	}
	for _, spec := range nics {
		n, err := parseNIC(spec, kinds, cfg.Guests)
		if err != nil {
			return cfg, err
		}
		cfg.NICs = append(cfg.NICs, n)
	}
	for _, m := range rf.modules {
		m.Path = abs(m.Path)
		if !m.Build && !strings.HasSuffix(m.Path, ".ko") && !strings.HasSuffix(m.Path, ".ko.xz") {
			return cfg, usagef("--module %s: want a .ko (or .ko.xz) file; --build-module takes a source directory", m.Path)
		}
		cfg.Modules = append(cfg.Modules, m)
	}

	if *rf.share != "none" && *rf.share != "" {
		cfg.Share = abs(*rf.share)
		if err := checkSharePath(cfg.Share); err != nil {
			return cfg, err
		}
	}
	cfg.Cwd = "/"
	if cfg.Share != "" {
		cfg.Cwd = cfg.Share
		if cwd == cfg.Share || strings.HasPrefix(cwd, cfg.Share+"/") {
			cfg.Cwd = cwd
		}
	}
	return cfg, nil
}

// parseNIC parses KIND[,key=value...]. socket= and name= are run's to set;
// a fixed mac= would repeat on every guest.
func parseNIC(spec string, kinds map[string]deviceKind, guests int) (nicSpec, error) {
	parts := strings.Split(spec, ",")
	n := nicSpec{Kind: parts[0]}
	k, ok := kinds[n.Kind]
	if !ok {
		return n, usagef("--nic %q: unknown kind %q (known: %s)", spec, n.Kind, strings.Join(kindNames(kinds), ", "))
	}
	seen := map[string]bool{}
	opts := map[string]string{}
	for _, kv := range parts[1:] {
		key, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok || v == "":
			return n, usagef("--nic %q: %q is not key=value with a value", spec, kv)
		case seen[key]:
			return n, usagef("--nic %q: %s given twice", spec, key)
		case key == "socket" || key == "fd" || key == "name":
			return n, usagef("--nic %q: run sets %s= itself", spec, key)
		case key == "mac" && guests > 1:
			return n, usagef("--nic %q: one mac= for %d guests would put the same MAC on the wire %d times", spec, guests, guests)
		}
		if !k.hasKey(key) {
			var known []string
			for _, kk := range k.keys {
				known = append(known, kk.Name)
			}
			return n, usagef("--nic %q: unknown key %q (known: %s)", spec, key, strings.Join(known, ", "))
		}
		seen[key] = true
		opts[key] = v
		n.Opts = append(n.Opts, kv)
	}
	if s := n.slices(); s < 1 || s > 32 {
		return n, usagef("--nic %q: slices= wants 1..32", spec)
	}
	if k.check != nil {
		// The kind's own check, as serve would make it: a bad value is a
		// usage error before anything starts.
		if err := k.check(opts); err != nil {
			return n, usagef("--nic %q: %v", spec, err)
		}
	}
	return n, nil
}

// checkSharePath refuses mount points that would hide what the guest's
// busybox userland needs.
func checkSharePath(p string) error {
	if p == "/" {
		return usagef("--share /: mounting over the guest's root would hide its userland; share a directory")
	}
	for _, sys := range []string{"/proc", "/sys", "/dev"} {
		if p == sys || strings.HasPrefix(p, sys+"/") {
			return usagef("--share %s: under %s, which the guest mounts itself", p, sys)
		}
	}
	for _, own := range []string{"/bin", "/lib", "/etc"} {
		if p == own {
			return usagef("--share %s: would hide the guest's own %s", p, own)
		}
	}
	if strings.ContainsAny(p, "\n\x00") {
		return usagef("--share %q: newline in the path", p)
	}
	return nil
}

// logLevel checks serve's --log-level value.
func logLevel(l string) (string, error) {
	switch l {
	case "trace", "debug", "info", "warn", "error":
		return l, nil
	}
	return "", usagef("--log-level %q: want trace, debug, info, warn or error", l)
}
