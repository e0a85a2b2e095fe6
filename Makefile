# amibus — build, run, test, bench. Everything is installed by the repo itself
# (Go modules through the module proxy), so a fresh clone with Go works.
GO       ?= go
BIN      := bin
PKGS     := ./...

.PHONY: all build run test test-unit test-integration fmt-check vet lint bench chart-check clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

## run: the whole pipeline on this machine (embedded NATS, simulated PBX fleet, ingest, actor)
run: build
	$(BIN)/amidemo

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

lint: fmt-check vet

## test: formatting, vet, the whole suite with the race detector
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/amiwire/

clean:
	rm -rf $(BIN)
