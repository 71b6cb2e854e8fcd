# MWI's build, test and development targets. make help lists them.

GO ?= go
GOFMT ?= gofmt
# CACHE_DIR is where large, slow builds are cached between runs (such as the
# kube-apiserver that Kubernetes integration tests run). Git ignores .cache/.
CACHE_DIR ?= $(CURDIR)/.cache
# FUZZTIME is how long make fuzz runs each fuzz target.
FUZZTIME ?= 15s
# DEV_FLAGS are passed to mwi-dev, such as -issuer-addr 127.0.0.1:7444.
DEV_FLAGS ?=

BIN := $(CURDIR)/bin
# The Go files that ./... covers: not under directories named .*, _* or
# testdata (such as .cache, .git and .mwi-dev).
GO_FILES = $(shell find . -type d \( -name '.?*' -o -name '_*' -o -name testdata \) -prune -o -type f -name '*.go' -print)

.PHONY: help build dev test bench lint fuzz clean

help:
	@echo 'Targets:'
	@echo '  build   build mwi-issuer, mwid, mwictl and mwi-dev into bin/'
	@echo '  dev     build, then run an issuer and mwid on development defaults'
	@echo '          (state in .mwi-dev/; Ctrl-C stops them; DEV_FLAGS=... for mwi-dev)'
	@echo '  test    build, then run every test, unit and integration, with -race'
	@echo '  bench   build, then run the integration benchmarks once'
	@echo '  lint    check formatting (gofmt -l) and run go vet'
	@echo '  fuzz    run each fuzz target for FUZZTIME ($(FUZZTIME))'
	@echo '  clean   remove bin/ (keeps .mwi-dev/, the dev issuer, and CACHE_DIR)'
	@echo 'Variables: GO=$(GO) CACHE_DIR=$(CACHE_DIR) (cache of large builds)'

build:
	$(GO) build -o bin/ ./cmd/...

dev: build
	$(BIN)/mwi-dev $(DEV_FLAGS)

test: build
	MWI_BIN_DIR=$(BIN) $(GO) test -race -count=1 -timeout 30m ./...

bench: build
	MWI_BIN_DIR=$(BIN) $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./integration/

lint:
	@out="$$($(GOFMT) -l $(GO_FILES))"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./daemon/config/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./issuer/resource/

clean:
	rm -rf bin/
