package main

import (
	"encoding/json"
	"fmt"
)

// capabilities is what --print-capabilities prints, following the
// convention of QEMU's vhost-user backend programs: a supervisor (or
// libvirt) learns what this binary serves without starting it.
type capabilities struct {
	Type     string          `json:"type"`     // what a client attaches: "vfio-user-pci"
	Protocol string          `json:"protocol"` // "vfio-user"
	Version  string          `json:"version"`  // myriemu's version line
	Socket   []capabilityKey `json:"socket_keys"`
	Devices  []capabilityDev `json:"devices"`
}

type capabilityDev struct {
	Kind string          `json:"kind"`
	Help string          `json:"help"`
	Keys []capabilityKey `json:"keys"`
}

type capabilityKey struct {
	Name string `json:"name"`
	Help string `json:"help"`
}

// socketKeys are the --device keys every kind takes.
var socketKeys = []capabilityKey{
	{"socket", "UNIX socket path to create (mode 0600 unless --socket-mode)"},
	{"fd", "listening UNIX socket handed over by a supervisor (>= 3); instead of socket="},
	{"name", "device name in logs and the readiness line (default KIND<i>)"},
}

func (a *app) printCapabilities() int {
	c := capabilities{Type: "vfio-user-pci", Protocol: "vfio-user", Version: versionString(), Socket: socketKeys}
	for _, name := range kindNames(a.kinds) {
		k := a.kinds[name]
		d := capabilityDev{Kind: name, Help: k.help, Keys: []capabilityKey{}}
		for _, key := range k.keys {
			d.Keys = append(d.Keys, capabilityKey(key))
		}
		c.Devices = append(c.Devices, d)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		fmt.Fprintf(a.stderr, "myriemu: %v\n", err)
		return 1
	}
	fmt.Fprintln(a.stdout, string(b))
	return 0
}
