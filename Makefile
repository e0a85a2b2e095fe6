# amibus: build, run, test, bench. Everything the targets need is installed by
# the repo itself (Go modules through the module proxy), so a fresh clone with
# only Go works.
GO      ?= go
BIN     := bin
VERSION ?= 0.1.0
IMAGE   ?= amibus:$(VERSION)
# Benchmarks: -benchtime and -count are overridable (make bench BENCHCOUNT=5).
BENCHTIME  ?= 1s
BENCHCOUNT ?= 3

.PHONY: all build run test fmt-check vet lint bench chart-check image clean

all: build

## build: static binaries in bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

## run: the whole pipeline on this machine (embedded NATS, simulated PBX fleet, ingest, actor, state)
run: build
	$(BIN)/amidemo --bin $(BIN)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# go vet builds the test files too, so a non-test file that needs one (and
# breaks `go build ./...`) passes it: build first.
vet:
	$(GO) build ./...
	$(GO) vet ./...

lint: fmt-check vet

## test: formatting, vet, the whole suite with the race detector (the container
## suite in test/integration runs when a Docker engine answers), and the chart checks
test: fmt-check vet
	@docker info >/dev/null 2>&1 || echo '*** no Docker engine answers (docker info): the container suite in test/integration skips itself ***'
	TESTCONTAINERS_RYUK_DISABLED=true $(GO) test -race -count=1 -timeout 30m ./...
	@docker info >/dev/null 2>&1 || echo '*** reminder: the container suite (test/integration) was skipped: no Docker engine ***'
	$(MAKE) chart-check

## chart-check: helm lint, helm template, strict decode of every manifest (own Go module)
chart-check:
	cd deploy/chartcheck && $(GO) vet ./... && $(GO) test -count=1 ./...

## bench: the benchmarks recorded in BENCHMARKS.md
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) \
		-timeout 60m ./pkg/amiwire/ ./pkg/session/ ./pkg/amisim/ ./internal/logging/ ./pkg/publish/ ./pkg/command/ ./internal/actor/ ./internal/state/ ./pkg/eventlog/ ./test/bench/

## image: static binaries on the host, then a FROM scratch image (nothing is pulled)
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/ami-ingest ./cmd/ami-actor ./cmd/ami-state ./cmd/amisim
	tar -c Dockerfile $(BIN)/ami-ingest $(BIN)/ami-actor $(BIN)/ami-state $(BIN)/amisim | docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) -

clean:
	rm -rf $(BIN)
