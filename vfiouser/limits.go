package vfiouser

import "github.com/myriemu/myriemu/dma"

// Resource limits of a client (docs/limits.md). They are resolved where
// they are used, so a zero Config, whichever constructor took it, means
// the defaults.

// DefaultMaxPendingDMA is the default of Config.MaxPendingDMA.
const DefaultMaxPendingDMA = 64

// dmaLimits is the limits each client's map gets: zero fields take the dma
// defaults, and MaxMaps is at most what QEMU accepts as max_dma_maps.
func (cfg *Config) dmaLimits() dma.Limits {
	l := cfg.Limits
	if l.MaxMaps <= 0 {
		l.MaxMaps = dma.DefaultMaxMaps
	}
	l.MaxMaps = min(l.MaxMaps, dma.MaxMaxMaps)
	return l
}

// maxPendingDMA is Config.MaxPendingDMA or its default.
func (cfg *Config) maxPendingDMA() int {
	if cfg.MaxPendingDMA > 0 {
		return cfg.MaxPendingDMA
	}
	return DefaultMaxPendingDMA
}
