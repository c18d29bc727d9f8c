package myrimx

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/internal/devkey"
)

// Key is a --device key of a myrimx and its help text.
type Key = devkey.Key

// Keys are the keys ParseOptions takes, in the order help lists them.
var Keys = keyTable.Keys()

// keyTable is the myrimx's key table: help text and how each value sets a Config.
var keyTable = devkey.Table[Config]{Kind: "myrimx", Fields: []devkey.Field[Config]{
	{Name: "endpoints", Help: fmt.Sprintf("endpoints, each with a doorbell page and an MSI-X vector, 1..%d (default %d)", MaxEndpoints, DefaultEndpoints),
		Set: devkey.Int(1, MaxEndpoints, fmt.Sprintf("want 1..%d", MaxEndpoints), func(c *Config, n int) { c.Endpoints = n })},
	{Name: "audit", Help: "DMA audit mode: off, observe (report, let through) or enforce (report, refuse: DMA_FAULT) (default observe)",
		Set: setAudit},
	{Name: "nic_id", Help: "48-bit MX nic id, nonzero (default: 00:60:dd and three bytes hashed from the name)",
		Set: setNICID},
}}

func setAudit(c *Config, v string) error {
	m, err := dma.ParseAuditMode(v)
	if err != nil {
		return errors.New("want off, observe or enforce")
	}
	c.Audit = m
	return nil
}

func setNICID(c *Config, v string) error {
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil || n == 0 || n >= 1<<48 {
		return errors.New("want a nonzero 48-bit number")
	}
	c.NICID = n
	return nil
}

// ParseOptions returns the Config of a myrimx from its key=value options
// (see Keys); Name, Hub and Log are the caller's to fill. An unknown key
// or a bad value is an error naming the key and what it takes.
func ParseOptions(opts map[string]string) (Config, error) {
	cfg := Config{Endpoints: DefaultEndpoints, Audit: dma.AuditObserve}
	err := keyTable.Parse(&cfg, opts)
	return cfg, err
}
