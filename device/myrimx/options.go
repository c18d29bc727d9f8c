package myrimx

import (
	"fmt"
	"strconv"

	"github.com/myriemu/myriemu/dma"
)

// Keys are the --device myrimx keys beyond socket and name, with their help.
var Keys = map[string]string{
	"endpoints": fmt.Sprintf("endpoints, each with a doorbell page and an MSI-X vector, 1..%d (default %d)", MaxEndpoints, DefaultEndpoints),
	"audit":     "DMA audit mode: off, observe (report, let through) or enforce (report, refuse: DMA_FAULT) (default observe)",
	"nic_id":    "48-bit MX nic id (default: 00:60:dd and three bytes hashed from the name)",
}

// ParseKeys turns the --device keys of a myrimx into a Config (Name, Hub
// and Log are the caller's). Unknown keys are an error.
func ParseKeys(opts map[string]string) (Config, error) {
	cfg := Config{Endpoints: DefaultEndpoints, Audit: dma.AuditObserve}
	for k, v := range opts {
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
				return cfg, fmt.Errorf("audit=%s: %w", v, err)
			}
			cfg.Audit = m
		case "nic_id":
			n, err := strconv.ParseUint(v, 0, 64)
			if err != nil || n == 0 || n >= 1<<48 {
				return cfg, fmt.Errorf("nic_id=%s: want a nonzero 48-bit number", v)
			}
			cfg.NICID = n
		default:
			return cfg, fmt.Errorf("unknown key %q", k)
		}
	}
	return cfg, nil
}
