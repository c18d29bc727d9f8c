package myrimx

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/myriemu/myriemu/dma"
)

// Key is a --device key of a myrimx and its help text.
type Key struct{ Name, Help string }

// Keys are the keys ParseOptions takes, in the order help lists them.
var Keys = []Key{
	{"endpoints", fmt.Sprintf("endpoints, each with a doorbell page and an MSI-X vector, 1..%d (default %d)", MaxEndpoints, DefaultEndpoints)},
	{"audit", "DMA audit mode: off, observe (report, let through) or enforce (report, refuse: DMA_FAULT) (default observe)"},
	{"nic_id", "48-bit MX nic id, nonzero (default: 00:60:dd and three bytes hashed from the name)"},
}

// ParseOptions returns the Config of a myrimx from its key=value options
// (see Keys); Name, Hub and Log are the caller's to fill. An unknown key
// or a bad value is an error naming the key and what it takes.
func ParseOptions(opts map[string]string) (Config, error) {
	cfg := Config{Endpoints: DefaultEndpoints, Audit: dma.AuditObserve}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad key reported is always the same one
	for _, k := range keys {
		v := opts[k]
		switch k {
		case "endpoints":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxEndpoints {
				return cfg, fmt.Errorf("endpoints=%s: want 1..%d", v, MaxEndpoints)
			}
			cfg.Endpoints = n
		case "audit":
			m, err := dma.ParseAuditMode(v)
			if err != nil {
				return cfg, fmt.Errorf("audit=%s: want off, observe or enforce", v)
			}
			cfg.Audit = m
		case "nic_id":
			n, err := strconv.ParseUint(v, 0, 64)
			if err != nil || n == 0 || n >= 1<<48 {
				return cfg, fmt.Errorf("nic_id=%s: want a nonzero 48-bit number", v)
			}
			cfg.NICID = n
		default:
			names := make([]string, len(Keys))
			for i, key := range Keys {
				names[i] = key.Name
			}
			return cfg, fmt.Errorf("unknown key %q (known: %s)", k, strings.Join(names, ", "))
		}
	}
	return cfg, nil
}
