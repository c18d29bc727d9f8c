package main

import (
	"fmt"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/fabric/link"
	"github.com/sirupsen/logrus"
)

// portUsage is the help of serve's --port flag.
const portUsage = "`KIND=ADDR[,...]` of a switch port joining another network (repeatable): " +
	"stream=HOST:PORT|unix:PATH,server|client (QEMU -netdev stream), " +
	"dgram=LOCAL,REMOTE (QEMU -netdev dgram), tap=IFNAME (created if missing), vhost-user=PATH (QEMU -netdev vhost-user); " +
	"keys mtu=N (the far side's MTU, default 9000) and name=NAME; see docs/wire.md"

// checkPorts validates the --port values, as usage errors.
func checkPorts(specs []string) ([]string, error) {
	names := map[string]bool{}
	for _, spec := range specs {
		cfg, err := link.ParseSpec(spec)
		if err != nil {
			return nil, usagef("--port: %v", err)
		}
		if cfg.Name != "" && names[cfg.Name] {
			return nil, usagef("--port %q: name %q used twice", spec, cfg.Name)
		}
		names[cfg.Name] = true
	}
	return specs, nil
}

// openPorts opens and starts the switch's ports to other networks (their
// UNIX socket files get the mode and group of the devices' sockets); the
// caller closes the set.
func openPorts(root *logrus.Entry, wire *fabric.Switch, cfg serveConfig) (*link.Set, error) {
	set := link.NewSet(wire, root)
	set.Perm = cfg.Perm // --socket-mode and --socket-group, as for the devices' sockets
	for _, spec := range cfg.Ports {
		if _, err := set.Add(spec); err != nil {
			set.Close()
			return nil, fmt.Errorf("--port %s: %w", spec, err)
		}
	}
	return set, nil
}
