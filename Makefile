# myriemu: the two commands are `make test` and `make demo` (see README.md).
# Both provision first (scripts/provision.sh: idempotent, about 1 s when cached).

GO ?= go
# The e2e suites boot several TCG guests; generous on a loaded 2-core machine.
E2E_TIMEOUT ?= 45m

.PHONY: test demo provision fmt vet unit e2e

test: provision fmt vet unit e2e
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

e2e:
	@echo "== end-to-end scenarios (QEMU guests under TCG)"
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./tests/e2e/

demo: provision
	@$(GO) run ./tests/demo
