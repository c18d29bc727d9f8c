package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/myriemu/myriemu/control"
	"github.com/myriemu/myriemu/device/myri10ge"
	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/link"
	"github.com/myriemu/myriemu/fault"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/sirupsen/logrus"
)

// controlConfig is serve's control socket and fault injection setup.
type controlConfig struct {
	Control     string // QMP-compatible control socket path
	Faults      string // rules file armed at start
	FaultSeed   uint64
	FaultLog    string // replay log written here
	FaultReplay string // replay log read from here
}

// controlFlags are serve's control and fault flags.
type controlFlags struct {
	control, faults, log, replay *string
	seed                         *uint64
}

func addControlFlags(fs *flag.FlagSet) *controlFlags {
	return &controlFlags{
		control: fs.String("control", "", "serve a QMP-compatible control socket at `PATH` (mode 0600; docs/control.md)"),
		faults:  fs.String("faults", "", "arm the fault rules in `FILE` at start, one per line (docs/faults.md)"),
		seed:    fs.Uint64("fault-seed", 0, "global `SEED` of the fault rules' random streams"),
		log:     fs.String("fault-log", "", "append every fault firing to `FILE` (a replay log)"),
		replay:  fs.String("fault-replay", "", "replay the firings of the fault log `FILE`"),
	}
}

func (c *controlFlags) config() controlConfig {
	return controlConfig{Control: *c.control, Faults: *c.faults, FaultSeed: *c.seed, FaultLog: *c.log, FaultReplay: *c.replay}
}

// doors wires serve's fault set into every device's doors and serves the
// control socket over the devices.
type doors struct {
	cfg     controlConfig
	log     *logrus.Entry
	set     *fault.Set
	logFile *os.File
	wire    *fabric.Switch
	ctl     *control.Server
	targets []*target
	wg      sync.WaitGroup
	errs    errorEvents
	audit   auditEvents
	ports   *link.Set // the switch's ports to other networks, for port-add and friends
}

// newDoors builds the fault set (rules, replay, log) and puts the wire
// under it. Nothing is armed half: a bad rules file fails serve.
func newDoors(cfg controlConfig, root *logrus.Entry, wire *fabric.Switch) (*doors, error) {
	d := &doors{cfg: cfg, log: root, wire: wire, set: fault.NewSet(cfg.FaultSeed, root)}
	if cfg.Faults != "" {
		text, err := os.ReadFile(cfg.Faults)
		if err != nil {
			return nil, fmt.Errorf("faults: %w", err)
		}
		rules, err := fault.ParseFile(string(text))
		if err != nil {
			return nil, fmt.Errorf("faults %s: %w", cfg.Faults, err)
		}
		if err := d.set.AddAll(rules); err != nil {
			return nil, fmt.Errorf("faults %s: %w", cfg.Faults, err)
		}
	}
	if cfg.FaultReplay != "" {
		f, err := os.Open(cfg.FaultReplay)
		if err != nil {
			return nil, fmt.Errorf("fault replay: %w", err)
		}
		firings, err := fault.ReadLog(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("fault replay %s: %w", cfg.FaultReplay, err)
		}
		d.set.Replay(firings)
	}
	if cfg.FaultLog != "" {
		f, err := os.OpenFile(cfg.FaultLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("fault log: %w", err)
		}
		d.logFile = f
		d.set.SetLog(f)
	}
	wire.SetFaults(d.set)
	wire.OnFaultLink(func(port string, up bool) {
		d.emit("LINK_CHANGED", map[string]any{"device": port, "up": up, "cause": "fault"})
	})
	d.errs.d = d
	d.audit.d = d
	return d, nil
}

// emit sends an event if the control socket is up.
func (d *doors) emit(event string, data map[string]any) {
	if d.ctl != nil {
		d.ctl.Emit(event, data)
	}
}

// function puts f's doors under the fault set and returns what the
// vfio-user server should serve: f, observed for client events.
func (d *doors) function(f *pci.Function, dev device, dc deviceConfig) vfiouser.Function {
	t := &target{d: d, cfg: dc, dev: dev, fn: f}
	f.SetFaults(d.set, dc.Name)
	f.SetHostWrap(func(h pci.Host) pci.Host {
		irq := msi.WithFaults(h.IRQ, d.set, dc.Name)
		t.mu.Lock()
		t.irq = irq
		t.mu.Unlock()
		h.Mem = &observedSpace{Space: dma.WithFaults(h.Mem, d.set, dc.Name), report: func(err error) { d.errs.dma(dc.Name, err) }}
		h.IRQ = irq
		return h
	})
	for _, p := range d.wire.Ports() {
		if p.Name() == dc.Name {
			t.port = p
		}
	}
	d.targets = append(d.targets, t)
	d.watchAudit(dev)
	d.watchErrors(dev, dc.Name)
	return t
}

// served records the server of the device function was called for last.
func (d *doors) served(srv *vfiouser.Server) { d.targets[len(d.targets)-1].srv = srv }

// start listens on the control socket, if one was asked for.
func (d *doors) start(perm unixsock.Perm) error {
	if d.cfg.Control == "" {
		return nil
	}
	ts := make([]control.Target, len(d.targets))
	for i, t := range d.targets {
		ts[i] = resetter{t}
	}
	ctl, err := control.Listen(control.Config{Path: d.cfg.Control, Targets: ts, Faults: d.set, Ports: d.controlPorts(), Version: version, Log: d.log, Perm: perm})
	if err != nil {
		return err
	}
	d.ctl = ctl
	d.wg.Go(func() { ctl.Serve(context.Background()) })
	return nil
}

// close stops the control socket and flushes the fault log.
func (d *doors) close() {
	if d.ctl != nil {
		d.ctl.Close()
	}
	d.wg.Wait()
	if d.logFile != nil {
		if err := d.set.Flush(); err != nil {
			d.log.WithError(err).Error("writing the fault log failed")
		}
		if err := d.logFile.Close(); err != nil {
			d.log.WithError(err).Error("closing the fault log failed")
		}
	}
}

// target is a served device as the control socket sees it; it is also the
// vfiouser.Function served, to see clients come and go.
type target struct {
	d    *doors
	cfg  deviceConfig
	dev  device
	fn   *pci.Function
	srv  *vfiouser.Server
	port *fabric.SwitchPort

	mu        sync.Mutex
	connected bool
	irq       *msi.FaultRaiser
}

func (t *target) Attach(mem *dma.Map) error {
	if err := t.fn.Attach(mem); err != nil {
		return err
	}
	t.mu.Lock()
	t.connected = true
	t.mu.Unlock()
	t.d.emit("CLIENT_CONNECTED", map[string]any{"device": t.cfg.Name, "socket": t.cfg.Socket})
	return nil
}

func (t *target) Detach() {
	t.fn.Detach()
	t.mu.Lock()
	t.connected = false
	irq := t.irq
	t.irq = nil
	t.mu.Unlock()
	if irq != nil {
		irq.Close()
	}
	t.d.emit("CLIENT_DISCONNECTED", map[string]any{"device": t.cfg.Name, "socket": t.cfg.Socket})
}

// The vfiouser.Function methods other than Attach and Detach are f's.
func (t *target) DeviceInfo() (uint32, uint32) { return t.fn.DeviceInfo() }
func (t *target) RegionInfo(i uint32) (pci.RegionInfo, error) {
	return t.fn.RegionInfo(i)
}
func (t *target) IRQInfo(i uint32) (pci.IRQInfo, error) { return t.fn.IRQInfo(i) }
func (t *target) ReadRegion(i uint32, off uint64, p []byte) error {
	return t.fn.ReadRegion(i, off, p)
}
func (t *target) WriteRegion(i uint32, off uint64, p []byte) error {
	return t.fn.WriteRegion(i, off, p)
}
func (t *target) SetIRQs(index, flags, start, count uint32, fds []int, data []byte) error {
	return t.fn.SetIRQs(index, flags, start, count, fds, data)
}

// Reset serves vfio-user's DEVICE_RESET (as vfiouser.Function).
func (t *target) Reset() { t.fn.Reset() }

// control.Target:

func (t *target) Name() string { return t.cfg.Name }

func (t *target) Info() control.DeviceInfo {
	t.mu.Lock()
	connected := t.connected
	t.mu.Unlock()
	mode := t.fn.IRQMode()
	info := control.DeviceInfo{Name: t.cfg.Name, Kind: t.cfg.Kind, Socket: t.cfg.Socket,
		Connected: connected, BusMaster: t.fn.BusMaster(), IRQMode: mode.String(),
		MSI: mode == msi.ModeMSI, MSIX: mode == msi.ModeMSIX}
	if t.port != nil {
		up := t.port.LinkUp()
		info.Link = &up
	}
	return info
}

func (t *target) Counters() any {
	out := map[string]any{}
	if n, ok := t.dev.(interface{ Counters() myri10ge.Counters }); ok {
		c := n.Counters()
		out["nic"] = snakeFields(c.Stats)
		out["drops"] = snakeFields(c.Drops)
		slices := make([]map[string]any, len(c.Slices))
		for i, s := range c.Slices {
			slices[i] = snakeFields(s)
		}
		out["slices"] = slices
	} else if n, ok := t.dev.(interface{ Stats() myri10ge.Stats }); ok {
		out["nic"] = snakeFields(n.Stats())
	}
	addMyrimxCounters(out, t.dev)
	if t.port != nil {
		out["port"] = snakeFields(t.port.Stats())
	}
	if t.srv != nil {
		out["vfio-user"] = snakeFields(t.srv.Stats())
	}
	out["removed"] = t.fn.Removed()
	out["process"] = processCounters()
	return out
}

func (t *target) SetLink(up bool) error {
	if t.port == nil {
		return control.ErrNotSupported
	}
	t.port.SetLink(up)
	return nil
}

func (t *target) DeviceReset() error { t.fn.Reset(); return nil }

func (t *target) Disconnect() error {
	if t.srv == nil || !t.srv.DropClient() {
		return control.ErrNotActive
	}
	return nil
}

// resetter adapts target to control.Target, whose Reset returns an error
// while vfiouser.Function's does not.
type resetter struct{ *target }

func (r resetter) Reset() error { return r.DeviceReset() }

// observedSpace reports failed DMA as DEVICE_ERROR events.
type observedSpace struct {
	dma.Space
	report func(error)
}

// Unwrap lets dma.MapOf reach the Map: without it the device's unmap
// watcher and the audit's mapping checks found no Map under serve.
func (o *observedSpace) Unwrap() dma.Space { return o.Space }

// Rewrap puts a copy of the observer over inner, for a dma.Run: the
// accesses of a run are observed too (report never blocks, so it may run
// while a run holds guest memory's read lock).
func (o *observedSpace) Rewrap(inner dma.Space) dma.Space {
	return &observedSpace{Space: inner, report: o.report}
}

var _ dma.Rewrapper = (*observedSpace)(nil)

func (o *observedSpace) ReadAt(p []byte, addr uint64) (int, error) {
	n, err := o.Space.ReadAt(p, addr)
	if err != nil {
		o.report(err)
	}
	return n, err
}

func (o *observedSpace) WriteAt(p []byte, addr uint64) (int, error) {
	n, err := o.Space.WriteAt(p, addr)
	if err != nil {
		o.report(err)
	}
	return n, err
}

func (o *observedSpace) Store32(addr uint64, v uint32) error {
	err := o.Space.Store32(addr, v)
	if err != nil {
		o.report(err)
	}
	return err
}

// Store32In passes the device's label on to the fault door.
func (o *observedSpace) Store32In(r dma.Region, addr uint64, v uint32) error {
	err := dma.Store32In(o.Space, r, addr, v)
	if err != nil {
		o.report(err)
	}
	return err
}

// errorEvents turns device errors into DEVICE_ERROR events, at most
// errorEventsPerSecond a second per process; the rest are counted into
// the next one.
type errorEvents struct {
	d          *doors
	mu         sync.Mutex
	window     time.Time
	inWindow   int
	suppressed uint64
}

const errorEventsPerSecond = 10

func (e *errorEvents) dma(device string, err error) {
	if e.d.ctl == nil {
		return
	}
	data := map[string]any{"device": device, "kind": "dma-abort", "error": err.Error()}
	var de *dma.Error
	if errors.As(err, &de) {
		data["op"], data["addr"], data["len"] = de.Op.String(), "0x"+strconv.FormatUint(de.Addr, 16), de.Len
	}
	e.emit(data)
}

// watchErrors sends the slice halts and guest protocol errors of dev (a
// Myri-10G) to the control socket as DEVICE_ERROR events.
func (d *doors) watchErrors(dev any, name string) {
	if n, ok := dev.(interface {
		SetErrorSink(func(myri10ge.ErrorEvent))
	}); ok {
		n.SetErrorSink(func(e myri10ge.ErrorEvent) { d.errs.device(name, e) })
	}
}

// device reports a slice halt or a guest protocol error of a Myri-10G.
// It runs under the NIC's lock: emit never blocks.
func (e *errorEvents) device(device string, ev myri10ge.ErrorEvent) {
	if e.d.ctl == nil {
		return
	}
	data := map[string]any{"device": device, "kind": ev.Kind, "what": ev.What, "detail": ev.Detail}
	if ev.Slice >= 0 {
		data["slice"] = ev.Slice
	}
	e.emit(data)
}

// emit sends one DEVICE_ERROR unless this second's budget is spent; the
// ones suppressed are counted into the next that goes out.
func (e *errorEvents) emit(data map[string]any) {
	e.mu.Lock()
	now := time.Now()
	if now.Sub(e.window) >= time.Second {
		e.window, e.inWindow = now, 0
	}
	if e.inWindow >= errorEventsPerSecond {
		e.suppressed++
		e.mu.Unlock()
		return
	}
	e.inWindow++
	suppressed := e.suppressed
	e.suppressed = 0
	e.mu.Unlock()
	if suppressed > 0 {
		data["suppressed"] = suppressed
	}
	e.d.emit("DEVICE_ERROR", data)
}

// snakeFields renders a struct of counters as {"tx_frames": n, ...}.
func snakeFields(v any) map[string]any {
	out := map[string]any{}
	rv := reflect.ValueOf(v)
	for i := 0; i < rv.NumField(); i++ {
		name := rv.Type().Field(i).Name
		if name == "LinkDownEvnts" { // the NIC's spelling
			name = "LinkDownEvents"
		}
		var b strings.Builder
		for j, r := range name {
			// A word starts at an upper-case letter after a lower-case
			// one, or at the last capital of an acronym (DMAErrors).
			if j > 0 && unicode.IsUpper(r) && (!unicode.IsUpper(rune(name[j-1])) ||
				j+1 < len(name) && unicode.IsLower(rune(name[j+1]))) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
		}
		out[b.String()] = rv.Field(i).Interface()
	}
	return out
}
