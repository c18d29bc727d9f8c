package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/device/testdev"
	"github.com/myriemu/myriemu/fabric"
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

// deviceKind is a kind of device serve can create.
type deviceKind struct {
	help string
	keys map[string]string // --device keys of this kind beyond socket and name, and their help
	new  func(env deviceEnv) (device, error)
}

// deviceKinds is the registry of device kinds.
func deviceKinds() map[string]deviceKind {
	return map[string]deviceKind{
		"testdev": {
			help: "generic test function 1234:7e57: DMA engine, MSI-X/MSI/INTx, WC window (device/testdev/README.md)",
			new: func(env deviceEnv) (device, error) {
				d, err := testdev.New(env.Name, env.Log)
				if err != nil {
					return nil, err
				}
				return d, nil
			},
		},
		"myri10ge": {
			help: "Myricom Myri-10G NIC 14c1:0008 for the unmodified Linux myri10ge driver, on the process's switch (device/myri10ge/README.md)",
			keys: map[string]string{
				"mac":    "permanent MAC address (default: 00:60:dd and three bytes hashed from the name, so stable per name)",
				"slices": "RSS slices and MSI-X vectors offered, 1..32 (default 1)",
				"serial": "EEPROM serial number (default: hashed from the name)",
			},
			new: newMyri10ge,
		},
	}
}

const usage = `myriemu serves emulated PCI devices to QEMU guests over vfio-user.

Usage:
  myriemu serve --socket PATH --device KIND [...]   serve devices until SIGTERM or SIGINT
  myriemu ctl --control PATH COMMAND [key=value ...]  send one command to a serve's control socket
  myriemu firmware --out DIR                       write the myri10ge firmware files a guest needs for RSS
  myriemu version                                  print the version
  myriemu help [serve]                             print help

Run 'myriemu help serve' for serve's flags and the device kinds.
`

// newMyri10ge builds a Myri-10G NIC with a port on the process's switch.
func newMyri10ge(env deviceEnv) (device, error) {
	h := fnv.New32a()
	h.Write([]byte(env.Name))
	sum := h.Sum32()
	cfg := myri10ge.Config{
		Name:   env.Name,
		MAC:    net.HardwareAddr{0x00, 0x60, 0xdd, byte(sum >> 16), byte(sum >> 8), byte(sum)},
		Serial: sum % 1000000,
		Slices: 1,
		Log:    env.Log,
	}
	if v, ok := env.Opts["mac"]; ok {
		mac, err := net.ParseMAC(v)
		if err != nil {
			return nil, fmt.Errorf("mac=%s: %w", v, err)
		}
		cfg.MAC = mac
	}
	if v, ok := env.Opts["slices"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("slices=%s: not a number", v)
		}
		cfg.Slices = n
	}
	if v, ok := env.Opts["serial"]; ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("serial=%s: not a 32-bit number", v)
		}
		cfg.Serial = uint32(n)
	}
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
}

// run executes the command line args (without the program name) and
// returns the exit status.
func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, usage)
		return 2
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return a.runServe(ctx, rest)
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
	wire := fabric.NewSwitch(root)
	defer wire.Close()
	doors, err := newDoors(cfg.Control, root, wire)
	if err != nil {
		return err
	}
	defer doors.close()
	if cfg.Pcap != "" {
		file, err := os.Create(cfg.Pcap)
		if err != nil {
			return fmt.Errorf("pcap: %w", err)
		}
		c, err := fabric.NewCapture(file)
		if err != nil {
			file.Close()
			return err
		}
		wire.SetCapture(c)
		defer func() {
			wire.SetCapture(nil)
			if err := c.Close(); err != nil {
				root.WithError(err).Error("closing the capture failed")
			}
			root.WithFields(logrus.Fields{"file": cfg.Pcap, "frames": c.Frames()}).Info("capture written")
		}()
	}
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
		s, err := a.listen(root, wire, doors, dc)
		if err != nil {
			shutdown()
			return err
		}
		all = append(all, s)
	}
	if err := doors.start(); err != nil {
		shutdown()
		return err
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
	root.Info("stopped")
	return err
}

// listen creates device dc and listens on its socket.
func (a *app) listen(root *logrus.Entry, wire *fabric.Switch, doors *doors, dc deviceConfig) (*served, error) {
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
	srv, err := vfiouser.Listen(vfiouser.Config{Path: dc.Socket, Function: doors.function(f, dev, dc), Log: log.WithField("component", "vfiouser")})
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("device %s: %w", dc.Name, err)
	}
	doors.served(srv)
	log.WithFields(logrus.Fields{"kind": dc.Kind, "socket": dc.Socket}).Info("listening")
	return &served{cfg: dc, dev: dev, srv: srv}, nil
}

// runServe serves s until it is closed; any other end is a failure.
func runServe(s *served, failed chan<- error) {
	err := s.srv.Serve(context.Background())
	if !errors.Is(err, vfiouser.ErrServerClosed) {
		failed <- fmt.Errorf("device %s: serve %s: %w", s.cfg.Name, s.cfg.Socket, err)
	}
}

// readyLine is the one line printed on stdout once every socket listens.
func readyLine(all []*served) string {
	var b strings.Builder
	b.WriteString("myriemu: ready")
	for _, s := range all {
		fmt.Fprintf(&b, " device=%s socket=%s", s.cfg.Name, quoteIfNeeded(s.cfg.Socket))
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
