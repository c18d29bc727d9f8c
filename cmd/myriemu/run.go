package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/testdev"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/devkey"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/sirupsen/logrus"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "devel"

// device is a device model serve can serve and release.
type device interface {
	pci.Device
	Close() error
}

// deviceEnv is what a device kind gets to build one device.
type deviceEnv struct {
	Name string
	Log  *logrus.Entry
	Opts map[string]string // the kind's own --device keys
	Wire *fabric.Switch    // the emulated wire every NIC of this process joins
}

// deviceKey is a --device key of a kind beyond socket=, fd= and name=.
type deviceKey struct{ Name, Help string }

// deviceKind is a kind of device serve can create. Its keys are parsed by
// its own package: check at parse time (a bad value is a usage error),
// again by new.
type deviceKind struct {
	help  string
	keys  []deviceKey
	check func(opts map[string]string) error
	new   func(env deviceEnv) (device, error)
}

func (k deviceKind) hasKey(name string) bool {
	for _, key := range k.keys {
		if key.Name == name {
			return true
		}
	}
	return false
}

// deviceKinds is the registry of device kinds.
func deviceKinds() map[string]deviceKind {
	return map[string]deviceKind{
		"testdev": {
			help:  "generic test function 1234:7e57: DMA engine, MSI-X/MSI/INTx, WC window (device/testdev/README.md)",
			keys:  keysOf(testdev.Keys, func(k testdev.Key) deviceKey { return deviceKey(k) }),
			check: testdev.ParseOptions,
			new: func(env deviceEnv) (device, error) {
				if err := testdev.ParseOptions(env.Opts); err != nil {
					return nil, err
				}
				d, err := testdev.New(env.Name, env.Log)
				if err != nil {
					return nil, err
				}
				return d, nil
			},
		},
		"myri10ge": {
			help: "Myricom Myri-10G NIC 14c1:0008 for the unmodified Linux myri10ge driver, on the process's switch (device/myri10ge/README.md)",
			keys: keysOf(myri10ge.Keys, func(k devkey.Key) deviceKey { return deviceKey(k) }),
			check: func(opts map[string]string) error {
				_, err := myri10ge.ParseOptions("check", opts)
				return err
			},
			new: newMyri10ge,
		},
		"myrimx": myrimxKind(),
	}
}

func keysOf[K any](keys []K, conv func(K) deviceKey) []deviceKey {
	out := make([]deviceKey, len(keys))
	for i, k := range keys {
		out[i] = conv(k)
	}
	return out
}

const usage = `myriemu serves emulated PCI devices to QEMU guests over vfio-user.

Usage:
  myriemu serve --device KIND,socket=PATH [...]    serve devices until SIGTERM, SIGINT or SIGHUP
  myriemu run [flags] -- CMD [ARG...]              boot guests with the cards, run CMD in each, summarise ('myriemu run -h')
  myriemu ctl --control PATH COMMAND [key=value ...]  send one command to a serve's control socket
  myriemu firmware --out DIR                       write the myri10ge firmware files a guest needs for RSS
  myriemu --print-capabilities                     print device kinds, keys and protocol as JSON
  myriemu version                                  print the version
  myriemu help [serve]                             print help

Run 'myriemu help serve' for serve's flags and the device kinds.
`

// newMyri10ge builds a Myri-10G NIC with a port on the process's switch.
func newMyri10ge(env deviceEnv) (device, error) {
	cfg, err := myri10ge.ParseOptions(env.Name, env.Opts)
	if err != nil {
		return nil, err
	}
	cfg.Log = env.Log
	cfg.Port = env.Wire.NewPort(env.Name)
	return myri10ge.New(cfg)
}

// app is one run of the command.
type app struct {
	stdout, stderr io.Writer
	kinds          map[string]deviceKind
	// onShutdown runs when serve starts shutting down after ctx is done;
	// main restores default signal handling so a second signal kills.
	onShutdown func()
	limits     *limiter // the serve run's resource limits (limits.go)
}

// run executes the command line args (without the program name) and
// returns the exit status.
func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, usage)
		return 2
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "--print-capabilities", "-print-capabilities":
		return a.printCapabilities()
	case "serve":
		return a.runServe(ctx, rest)
	case "run":
		return a.runRun(ctx, rest)
	case "firmware":
		return a.runFirmware(rest)
	case "ctl":
		return a.runCtl(ctx, rest)
	case "version", "--version", "-version":
		fmt.Fprintln(a.stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		switch {
		case len(rest) == 0:
			fmt.Fprint(a.stdout, usage)
		case len(rest) == 1 && rest[0] == "serve":
			newServeFlags(a.stdout, a.kinds).Usage()
		default:
			fmt.Fprintf(a.stderr, "myriemu help: no help for %q\n", strings.Join(rest, " "))
			return 2
		}
		return 0
	default:
		fmt.Fprintf(a.stderr, "myriemu: unknown command %q\nRun 'myriemu help' for usage.\n", cmd)
		return 2
	}
}

func (a *app) runServe(ctx context.Context, args []string) int {
	cfg, err := parseServe(args, a.kinds, io.Discard)
	if errors.Is(err, flag.ErrHelp) {
		newServeFlags(a.stdout, a.kinds).Usage()
		return 0
	}
	if errors.Is(err, errPrintCapabilities) {
		return a.printCapabilities()
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "myriemu serve: %v\nRun 'myriemu help serve' for usage.\n", err)
		return 2
	}
	if err := a.serve(ctx, cfg); err != nil {
		fmt.Fprintf(a.stderr, "myriemu: %v\n", err)
		return 1
	}
	return 0
}

// served is one device being served.
type served struct {
	cfg deviceConfig
	dev device
	srv *vfiouser.Server
}

// serve creates and listens for every device, prints the readiness line,
// and serves until ctx is done (nil) or a server fails (its error).
func (a *app) serve(ctx context.Context, cfg serveConfig) error {
	root := a.logger(cfg)
	setServeProcs(root, len(cfg.Devices))
	a.limits = newLimiter(cfg.Limits, root)
	wire := fabric.NewSwitch(root)
	defer wire.Close()
	doors, err := newDoors(cfg.Control, root, wire)
	if err != nil {
		return err
	}
	defer doors.close()
	ports, perr := openPorts(root, wire, cfg)
	if perr != nil {
		return perr
	}
	defer ports.Close()
	doors.ports = ports
	var all []*served
	// shutdown closes the servers (dropping clients, removing the socket
	// files) in parallel, then releases the devices.
	shutdown := func() {
		var wg sync.WaitGroup
		for _, s := range all {
			wg.Go(func() {
				if err := s.srv.Close(); err != nil {
					root.WithField("device", s.cfg.Name).WithError(err).Error("closing server failed")
				}
			})
		}
		wg.Wait()
		for _, s := range all {
			if err := s.dev.Close(); err != nil {
				root.WithField("device", s.cfg.Name).WithError(err).Error("closing device failed")
			}
		}
	}
	for _, dc := range cfg.Devices {
		s, err := a.listen(root, wire, doors, dc, cfg.Perm)
		if err != nil {
			shutdown()
			return err
		}
		all = append(all, s)
	}
	if err := doors.start(cfg.Perm); err != nil {
		shutdown()
		return err
	}
	// The capture file is created only once every socket listens, so a
	// start that fails never truncates an existing capture.
	var capture *fabric.Capture
	if cfg.Pcap != "" {
		c, err := startCapture(cfg.Pcap, root)
		if err != nil {
			shutdown()
			return err
		}
		wire.SetCapture(c)
		capture = c
	}

	failed := make(chan error, len(all))
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { runServe(s, failed) })
	}
	fmt.Fprintln(a.stdout, readyLine(all))
	root.WithField("devices", len(all)).Info("ready")

	select {
	case <-ctx.Done():
		root.Info("shutting down")
		if a.onShutdown != nil {
			a.onShutdown()
		}
	case err = <-failed:
		root.WithError(err).Error("a server failed; shutting down")
	}
	shutdown()
	wg.Wait()
	if capture != nil {
		if cerr := stopCapture(wire, capture, cfg.Pcap, root); err == nil {
			err = cerr
		}
	}
	root.Info("stopped")
	return err
}

// listen creates device dc and listens on its socket (created with perm)
// or on the listening socket it was handed.
func (a *app) listen(root *logrus.Entry, wire *fabric.Switch, doors *doors, dc deviceConfig, perm unixsock.Perm) (*served, error) {
	log := root.WithField("device", dc.Name)
	dev, err := a.kinds[dc.Kind].new(deviceEnv{Name: dc.Name, Log: log, Opts: dc.Opts, Wire: wire})
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", dc.Name, err)
	}
	f, err := pci.NewFunction(dev, log)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("device %s: %w", dc.Name, err)
	}
	vcfg := a.limits.apply(vfiouser.Config{Path: dc.Socket, Function: doors.function(f, dev, dc), Log: log.WithField("component", "vfiouser"), Perm: perm})
	var srv *vfiouser.Server
	if dc.Socket != "" {
		srv, err = vfiouser.Listen(vcfg)
	} else {
		srv, err = vfiouser.ListenFD(vcfg, dc.FD)
	}
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("device %s: %w", dc.Name, err)
	}
	doors.served(srv)
	log.WithFields(logrus.Fields{"kind": dc.Kind, "socket": srv.Path()}).Info("listening")
	return &served{cfg: dc, dev: dev, srv: srv}, nil
}

// runServe serves s until it is closed; any other end is a failure.
func runServe(s *served, failed chan<- error) {
	err := s.srv.Serve(context.Background())
	if !errors.Is(err, vfiouser.ErrServerClosed) {
		failed <- fmt.Errorf("device %s: serve %s: %w", s.cfg.Name, s.srv.Path(), err)
	}
}

// readyLine is the one line printed on stdout once every socket listens.
func readyLine(all []*served) string {
	var b strings.Builder
	b.WriteString("myriemu: ready")
	for _, s := range all {
		fmt.Fprintf(&b, " device=%s socket=%s", s.cfg.Name, quoteIfNeeded(s.srv.Path()))
	}
	return b.String()
}

// quoteIfNeeded Go-quotes s if it has spaces, quotes or non-printable
// characters, so the readiness line stays one line of key=value pairs.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '\\' || r == 0x7f || !strconv.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// logger is the root logger: stderr, level and format from the flags.
func (a *app) logger(cfg serveConfig) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(a.stderr)
	l.SetLevel(cfg.LogLevel)
	if cfg.LogFormat == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00", DisableColors: true})
	}
	return logrus.NewEntry(l).WithField("component", "myriemu")
}

// versionString is the version line: version, VCS revision, Go version.
func versionString() string {
	s := "myriemu " + version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return s
	}
	var rev, modified string
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.modified":
			if kv.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		s += " (" + rev[:min(12, len(rev))] + modified + ")"
	}
	return s + " " + bi.GoVersion
}

// runFirmware writes the firmware files the myri10ge driver loads for its
// multi-slice (RSS) mode, under every name it may ask for.
func (a *app) runFirmware(args []string) int {
	fs := flag.NewFlagSet("firmware", flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	out := fs.String("out", "", "`DIR` to write the files into (the guest's /lib/firmware)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(a.stderr, "usage: myriemu firmware --out DIR")
		return 2
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(a.stderr, "myriemu firmware: %v\n", err)
		return 1
	}
	img := myri10ge.FirmwareImage()
	for _, name := range myri10ge.FirmwareNames {
		p := filepath.Join(*out, name)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			fmt.Fprintf(a.stderr, "myriemu firmware: %v\n", err)
			return 1
		}
		fmt.Fprintln(a.stdout, p)
	}
	return 0
}
