package dma

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrLimit is wrapped (with an errno: ENOSPC for a count, ENOMEM for bytes)
// by an Add refused because a per-client limit or the process budget is
// reached. The client keeps its earlier maps and can keep working within
// the limit.
var ErrLimit = errors.New("DMA map limit reached")

// Limits bound what one client can make the process map. Zero fields take
// the defaults of DefaultLimits.
type Limits struct {
	// MaxMaps is the number of live maps (with or without an fd): what the
	// server advertises as max_dma_maps.
	MaxMaps int
	// MaxMmaps is the number of live maps with an fd: each is one mmap of
	// this process, and the kernel allows vm.max_map_count of them for the
	// whole process (Go's runtime included).
	MaxMmaps int
	// MaxBytes is the address space the client's fd maps take, summed over
	// their page-rounded ranges.
	MaxBytes uint64
	// MaxFiles is the number of distinct files (inodes) mapped at once.
	MaxFiles int
	// Budget, if set, is the process-wide pool every client's mmaps and
	// bytes also come out of, so that clients of other devices keep room.
	Budget *Budget
}

// Defaults. QEMU maps guest RAM with a handful of maps (notes 3.5: about
// five, one or two memfds); the limits leave it two orders of magnitude.
const (
	DefaultMaxMaps  = 65535    // the most QEMU accepts as max_dma_maps
	DefaultMaxMmaps = 4096     // fd maps per client
	DefaultMaxBytes = 1 << 40  // 1 TiB of guest RAM per client
	DefaultMaxFiles = 64       // memory backends per client
	MaxMaxMaps      = 65535    // QEMU rejects a larger max_dma_maps
	defaultBudgetAS = 16 << 40 // 16 TiB: an eighth of x86-64's user space
	fallbackMapMax  = 65530    // vm.max_map_count's usual default
	budgetMmapShare = 2        // the budget takes 1/2 of vm.max_map_count
	minBudgetMmaps  = 1024     // floor when vm.max_map_count is tiny
	maxBudgetMmaps  = 1 << 30  // ceiling for a huge vm.max_map_count
	procMaxMapCount = "/proc/sys/vm/max_map_count"
)

// DefaultLimits returns the per-client defaults, with no budget.
func DefaultLimits() Limits {
	return Limits{MaxMaps: DefaultMaxMaps, MaxMmaps: DefaultMaxMmaps, MaxBytes: DefaultMaxBytes, MaxFiles: DefaultMaxFiles}
}

// withDefaults fills zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxMaps <= 0 {
		l.MaxMaps = d.MaxMaps
	}
	if l.MaxMmaps <= 0 {
		l.MaxMmaps = d.MaxMmaps
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	return l
}

// Budget is the process-wide share of mmaps and address space every
// client's fd maps are charged to. It is safe for concurrent use by the
// maps of every device of the process.
type Budget struct {
	maxMmaps int64
	maxBytes uint64

	mu    sync.Mutex
	mmaps int64
	bytes uint64

	refusals atomic.Uint64
}

// NewBudget returns a budget of maxMmaps mmaps and maxBytes bytes of
// address space; a zero argument takes the default (half of the kernel's
// vm.max_map_count, 16 TiB).
func NewBudget(maxMmaps int, maxBytes uint64) *Budget {
	if maxMmaps <= 0 {
		maxMmaps = DefaultBudgetMmaps()
	}
	if maxBytes == 0 {
		maxBytes = defaultBudgetAS
	}
	return &Budget{maxMmaps: int64(maxMmaps), maxBytes: maxBytes}
}

// DefaultBudgetMmaps is half of vm.max_map_count: the other half stays for
// the Go runtime (heap arenas, thread stacks), the devices' own mappings
// and the dynamic loader. Exhausting the kernel's count does not fail an
// mmap politely: the runtime's next one aborts the process (issue 8).
func DefaultBudgetMmaps() int {
	n := fallbackMapMax
	if b, err := os.ReadFile(procMaxMapCount); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			n = v
		}
	}
	return min(max(n/budgetMmapShare, minBudgetMmaps), maxBudgetMmaps)
}

// DefaultBudgetBytes is the default process-wide address-space budget.
func DefaultBudgetBytes() uint64 { return defaultBudgetAS }

// reserve charges one mmap of n bytes, or says which limit refused it.
func (b *Budget) reserve(n uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mmaps >= b.maxMmaps {
		b.refusals.Add(1)
		return fmt.Errorf("process budget of %d mmaps in use: %w: %w", b.maxMmaps, ErrLimit, unix.ENOSPC)
	}
	if n > b.maxBytes-b.bytes {
		b.refusals.Add(1)
		return fmt.Errorf("process budget of %d mapped bytes: %d in use, %d asked: %w: %w", b.maxBytes, b.bytes, n, ErrLimit, unix.ENOMEM)
	}
	b.mmaps++
	b.bytes += n
	return nil
}

// release returns one mmap of n bytes.
func (b *Budget) release(n uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mmaps--
	b.bytes -= n
}

// BudgetStats is a snapshot of a budget.
type BudgetStats struct {
	Mmaps, MaxMmaps int64
	Bytes, MaxBytes uint64
	Refusals        uint64 // reservations refused since NewBudget
}

// Stats returns the budget's use.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BudgetStats{Mmaps: b.mmaps, MaxMmaps: b.maxMmaps, Bytes: b.bytes, MaxBytes: b.maxBytes, Refusals: b.refusals.Load()}
}
