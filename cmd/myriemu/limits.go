package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/myriemu/myriemu/dma"
	"github.com/myriemu/myriemu/vfiouser"
	"github.com/sirupsen/logrus"
)

// limitsConfig is serve's resource limits (docs/limits.md): per client of
// each device, and the process-wide budget every client is also charged
// to, so that one device's client cannot starve another device.
type limitsConfig struct {
	MaxDataXfer   int        // max_data_xfer_size; messages up to it + 4 KiB
	MaxPendingDMA int        // server DMA requests awaiting a client reply
	Client        dma.Limits // per-client DMA map limits (Budget unset)
	BudgetMmaps   int        // process-wide mmaps of client files
	BudgetBytes   uint64     // process-wide address space of client files
}

// minSize is the smallest byte limit: one page.
const minSize = 4096

// limitFlags are where serve's limit flags land.
type limitFlags struct {
	maxMaps, maxMmaps, maxFiles, maxPending, budgetMmaps intFlag
	maxXfer, maxBytes, budgetBytes                       byteSize
}

// addLimitFlags registers the limit flags on fs; limitsFrom reads them
// back after fs.Parse.
func addLimitFlags(fs *flag.FlagSet) {
	lf := &limitFlags{
		maxMaps:     dma.DefaultMaxMaps,
		maxMmaps:    dma.DefaultMaxMmaps,
		maxFiles:    dma.DefaultMaxFiles,
		maxPending:  vfiouser.DefaultMaxPendingDMA,
		budgetMmaps: intFlag(dma.DefaultBudgetMmaps()),
		maxXfer:     vfiouser.DefaultMaxDataXfer,
		maxBytes:    dma.DefaultMaxBytes,
		budgetBytes: byteSize(dma.DefaultBudgetBytes()),
	}
	for _, f := range []struct {
		v          flag.Value
		name, help string
	}{
		{&lf.maxMaps, "max-dma-maps", "per client: live DMA maps, advertised as max_dma_maps (`N`, 1..65535)"},
		{&lf.maxMmaps, "max-dma-mmaps", "per client: live DMA maps with an fd, one mmap each (`N`)"},
		{&lf.maxBytes, "max-dma-bytes", "per client: address space its DMA maps take, in `SIZE` (bytes, or with a K, M, G or T suffix)"},
		{&lf.maxFiles, "max-dma-files", "per client: distinct files (memory backends) mapped at once (`N`)"},
		{&lf.maxXfer, "max-data-xfer", "per message: largest data count, advertised as max_data_xfer_size, in `SIZE` (4K..64M)"},
		{&lf.maxPending, "max-pending-dma", "per client: server DMA_READ/DMA_WRITE requests awaiting a reply (`N`)"},
		{&lf.budgetMmaps, "budget-mmaps", "per process: mmaps of client files, all devices together (`N`; default half of vm.max_map_count)"},
		{&lf.budgetBytes, "budget-bytes", "per process: address space of client files, all devices together, in `SIZE`"},
	} {
		fs.Var(limitFlag{lf: lf, v: f.v}, f.name, f.help)
	}
}

// limitFlag is one limit flag's value. Through it limitsFrom finds the
// limitFlags again after parsing, so serve's own flag struct needs no
// field for them.
type limitFlag struct {
	lf *limitFlags
	v  flag.Value
}

func (f limitFlag) String() string {
	if f.v == nil { // the zero value flag.PrintDefaults makes
		return ""
	}
	return f.v.String()
}

func (f limitFlag) Set(s string) error { return f.v.Set(s) }

// limitsFrom returns the checked limits of a parsed flag set that
// addLimitFlags registered on.
func limitsFrom(fs *flag.FlagSet) (limitsConfig, error) {
	f := fs.Lookup("max-dma-maps")
	if f == nil {
		return limitsConfig{}, fmt.Errorf("limit flags not registered")
	}
	return f.Value.(limitFlag).lf.config()
}

// intFlag is an int flag value.
type intFlag int

func (i *intFlag) String() string { return strconv.Itoa(int(*i)) }

func (i *intFlag) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not a number", s)
	}
	*i = intFlag(v)
	return nil
}

// config checks the flag values.
func (lf *limitFlags) config() (limitsConfig, error) {
	switch {
	case lf.maxMaps < 1 || lf.maxMaps > dma.MaxMaxMaps:
		return limitsConfig{}, usagef("--max-dma-maps %d: want 1..%d (QEMU rejects more)", lf.maxMaps, dma.MaxMaxMaps)
	case lf.maxMmaps < 1:
		return limitsConfig{}, usagef("--max-dma-mmaps %d: want at least 1", lf.maxMmaps)
	case lf.maxFiles < 1:
		return limitsConfig{}, usagef("--max-dma-files %d: want at least 1", lf.maxFiles)
	case lf.maxBytes < minSize:
		return limitsConfig{}, usagef("--max-dma-bytes %d: want at least 4K", lf.maxBytes)
	case lf.maxXfer < vfiouser.MinMaxDataXfer || lf.maxXfer > vfiouser.MaxMaxDataXfer:
		return limitsConfig{}, usagef("--max-data-xfer %d: want 4K..64M", lf.maxXfer)
	case lf.maxPending < 1:
		return limitsConfig{}, usagef("--max-pending-dma %d: want at least 1", lf.maxPending)
	case lf.budgetMmaps < 1:
		return limitsConfig{}, usagef("--budget-mmaps %d: want at least 1", lf.budgetMmaps)
	case lf.budgetBytes < minSize:
		return limitsConfig{}, usagef("--budget-bytes %d: want at least 4K", lf.budgetBytes)
	}
	return limitsConfig{
		MaxDataXfer:   int(lf.maxXfer),
		MaxPendingDMA: int(lf.maxPending),
		Client:        dma.Limits{MaxMaps: int(lf.maxMaps), MaxMmaps: int(lf.maxMmaps), MaxBytes: uint64(lf.maxBytes), MaxFiles: int(lf.maxFiles)},
		BudgetMmaps:   int(lf.budgetMmaps),
		BudgetBytes:   uint64(lf.budgetBytes),
	}, nil
}

// limiter is a serve run's limits with its one process-wide budget.
type limiter struct {
	cfg    limitsConfig
	budget *dma.Budget
}

// newLimiter creates the budget every device's server shares. A zero cfg
// (tests that build serveConfig by hand) takes every default.
func newLimiter(cfg limitsConfig, log *logrus.Entry) *limiter {
	if cfg.MaxDataXfer == 0 {
		cfg.MaxDataXfer = vfiouser.DefaultMaxDataXfer
	}
	b := dma.NewBudget(cfg.BudgetMmaps, cfg.BudgetBytes)
	st := b.Stats()
	c := cfg.Client
	log.WithFields(logrus.Fields{
		"max_dma_maps": c.MaxMaps, "max_dma_mmaps": c.MaxMmaps, "max_dma_bytes": c.MaxBytes, "max_dma_files": c.MaxFiles,
		"max_data_xfer": cfg.MaxDataXfer, "budget_mmaps": st.MaxMmaps, "budget_bytes": st.MaxBytes,
	}).Debug("resource limits")
	return &limiter{cfg: cfg, budget: b}
}

// apply sets the limits of one device's server configuration.
func (l *limiter) apply(c vfiouser.Config) vfiouser.Config {
	c.MaxDataXfer, c.MaxPendingDMA = l.cfg.MaxDataXfer, l.cfg.MaxPendingDMA
	c.Limits = l.cfg.Client
	c.Limits.Budget = l.budget
	return c
}

// byteSize is a flag value of bytes with an optional K, M, G or T suffix
// (powers of 1024).
type byteSize uint64

func (b *byteSize) String() string {
	v := uint64(*b)
	for _, u := range []struct {
		s     string
		shift uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if v != 0 && v%(1<<u.shift) == 0 {
			return strconv.FormatUint(v>>u.shift, 10) + u.s
		}
	}
	return strconv.FormatUint(v, 10)
}

func (b *byteSize) Set(s string) error {
	shift := uint(0)
	num := strings.TrimSuffix(strings.ToUpper(s), "IB")
	num = strings.TrimSuffix(num, "B")
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift > 0 {
			num = num[:n-1]
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v > (1<<63)>>shift {
		return fmt.Errorf("%q is not a size (a number with an optional K, M, G or T)", s)
	}
	*b = byteSize(v << shift)
	return nil
}
