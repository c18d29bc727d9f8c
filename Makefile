# myriemu: the two commands are `make test` and `make demo` (see README.md).
# Both provision first (scripts/provision.sh: idempotent, about 1 s when cached).

GO ?= go
# The e2e suites boot several TCG guests; generous on a loaded 2-core machine.
E2E_TIMEOUT ?= 45m

# benchstat, pinned; `go run pkg@version` leaves go.mod alone.
BENCHSTAT ?= $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
BENCH_COUNT ?= 10
# Every benchmark with a raw baseline in the same run, named impl=<baseline|ours>.
BENCH_PKGS = ./vfiouser ./dma ./msi ./wcbar ./fabric ./fabric/link ./fabric/vhostuser ./device/myri10ge ./device/myrimx
BENCH_NAMES = RegionRead4 PostedWrite4 Copy Raise Access SwitchForward LinkStream LinkDgram LinkTAP VhostUser SendTake OnesSum DeviceRate MXSendRecv MXReg AuditChunk
empty :=
space := $(empty) $(empty)
BENCH_RE = ^Benchmark($(subst $(space),|,$(BENCH_NAMES)))$$

.PHONY: test demo provision fmt vet unit soak e2e bench benchstat

test: provision fmt vet unit soak e2e
	@echo "make test: gofmt, vet, unit tests (-race) and every e2e scenario passed"

provision:
	@scripts/provision.sh

fmt:
	@echo "== gofmt"
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	@echo "== go vet"
	$(GO) vet ./...
	$(GO) vet -tags e2e ./tests/...

unit:
	@echo "== unit tests (-race)"
	$(GO) test -race -count=1 ./...

# Issue 8's hostile clients at full size, and a 2-minute hostile-neighbour
# soak (docs/limits.md); without MYRIEMU_SOAK the unit step runs them small.
soak:
	@echo "== hostile clients and the hostile-neighbour soak (2 min)"
	MYRIEMU_SOAK=2m $(GO) test -count=1 -timeout 15m -run '^(TestHostile|TestSoak)' -v ./cmd/myriemu/

e2e:
	@echo "== end-to-end scenarios (QEMU guests under TCG)"
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./tests/e2e/

demo: provision
	@$(GO) run ./tests/demo

# Benchmarks against their raw baselines (socketpair ping-pong, plain copy,
# raw eventfd, naive sum), compared by benchstat column by column.
bench:
	@mkdir -p out
	$(GO) test -run '^$$' -bench '$(BENCH_RE)' -benchmem -count $(BENCH_COUNT) $(BENCH_PKGS) | tee out/bench.txt
	@$(MAKE) --no-print-directory benchstat

# Formats out/bench.txt again (for example one copied from another machine).
benchstat:
	@# One table per benchmark, so that each compares with its own baseline
	@# (the first impl column); out/benchstat-time.txt holds only sec/op.
	@: > out/benchstat.txt; : > out/benchstat-time.txt
	@for n in $(BENCH_NAMES); do \
		$(BENCHSTAT) -filter ".name:$$n -/impl:\"\"" -col /impl out/bench.txt >> out/benchstat.txt || exit 1; \
		$(BENCHSTAT) -filter ".name:$$n .unit:sec/op -/impl:\"\"" -col /impl out/bench.txt | grep -v '^\(goos\|goarch\|cpu\):' >> out/benchstat-time.txt || exit 1; \
		echo >> out/benchstat.txt; echo >> out/benchstat-time.txt; \
	done
	@cat out/benchstat-time.txt
	@echo "full tables (time, B/s, allocations): out/benchstat.txt"
