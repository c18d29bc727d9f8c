package main

import (
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/dma"
)

func TestLimitFlags(t *testing.T) {
	kinds := deviceKinds()
	parse := func(args string) (limitsConfig, error) {
		cfg, err := parseServe(strings.Fields(args+" --device testdev,socket=/a"), kinds, io.Discard)
		return cfg.Limits, err
	}
	def, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	want := limitsConfig{
		MaxDataXfer: 1 << 20, MaxPendingDMA: 64,
		Client:      dma.Limits{MaxMaps: 65535, MaxMmaps: 4096, MaxBytes: 1 << 40, MaxFiles: 64},
		BudgetMmaps: dma.DefaultBudgetMmaps(), BudgetBytes: 16 << 40,
	}
	if diff := cmp.Diff(want, def); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	got, err := parse("--max-dma-maps 100 --max-dma-mmaps 10 --max-dma-bytes 2G --max-dma-files 3 --max-data-xfer 64K --max-pending-dma 8 --budget-mmaps 1000 --budget-bytes 1T")
	if err != nil {
		t.Fatal(err)
	}
	want = limitsConfig{
		MaxDataXfer: 64 << 10, MaxPendingDMA: 8,
		Client:      dma.Limits{MaxMaps: 100, MaxMmaps: 10, MaxBytes: 2 << 30, MaxFiles: 3},
		BudgetMmaps: 1000, BudgetBytes: 1 << 40,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("set (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"--max-dma-maps 65536", "--max-dma-maps 0", "--max-dma-mmaps 0", "--max-dma-files 0",
		"--max-dma-bytes 1K", "--max-dma-bytes lots", "--max-data-xfer 128M", "--max-data-xfer 1K",
		"--max-pending-dma 0", "--budget-mmaps 0", "--budget-bytes 0", "--budget-bytes 99999999999T",
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		} else if _, ok := err.(*usageError); !ok {
			t.Errorf("%s: %T %v, want a usage error", bad, err, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]uint64{"4096": 4096, "4K": 4096, "4k": 4096, "1M": 1 << 20, "3G": 3 << 30, "16T": 16 << 40, "2MiB": 2 << 20} {
		var b byteSize
		if err := b.Set(in); err != nil || uint64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	b := byteSize(16 << 40)
	if b.String() != "16T" {
		t.Errorf("String() = %q", b.String())
	}
}
