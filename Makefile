# MWI's build, test and development targets. make help lists them.

GO ?= go
GOFMT ?= gofmt
# CACHE_DIR is where large, slow builds are cached between runs (such as the
# kube-apiserver that Kubernetes integration tests run). Git ignores .cache/.
CACHE_DIR ?= $(CURDIR)/.cache
# FUZZTIME is how long make fuzz runs each fuzz target; make fuzz-ci runs
# each for FUZZTIME_CI, a count of executions rather than a duration: with
# a duration, Go 1.26's fuzzing coordinator can report its own deadline
# as a failure (golang/go#75804, fixed in Go 1.27) on a loaded machine.
FUZZTIME ?= 15s
FUZZTIME_CI ?= 100000x
# TEST_PARALLEL is how many tests of one package run at once (go test
# -parallel; its default is GOMAXPROCS). The integration tests mostly wait:
# on certificate lifetimes, renewal timers and outages that run on real
# clocks, so more of them at once than there are cores shortens the run
# while the cores stay far from busy. Above 8 the run is no shorter: the
# longest test alone takes most of it.
TEST_PARALLEL ?= 8
# DEV_FLAGS are passed to mwi-dev, such as -issuer-addr 127.0.0.1:7444.
DEV_FLAGS ?=
# KUBE_BIN holds the kube-apiserver and kubectl (v1.32.2) that the
# Kubernetes integration tests run, built from the Go module k8s.io/kubernetes
# by scripts/kube-build.sh: 10 to 17 minutes cold on 2 cores, nothing after.
KUBE_BIN := $(CACHE_DIR)/kube/bin
KUBE_ENV := MWI_KUBE_APISERVER=$(KUBE_BIN)/kube-apiserver MWI_KUBECTL=$(KUBE_BIN)/kubectl

BIN := $(CURDIR)/bin
# MAN_DIR is where make man writes the manual pages (bin/ is git-ignored).
MAN_DIR ?= $(BIN)/man
# VERSION and COMMIT are linked into every program (package
# internal/version), which --version prints. Outside a git checkout they
# are "dev" and "unknown".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/mwi-project/mwi/internal/version.Version=$(VERSION) \
	-X github.com/mwi-project/mwi/internal/version.Commit=$(COMMIT)
# The Go files that ./... covers: not under directories named .*, _* or
# testdata (such as .cache, .git and .mwi-dev).
GO_FILES = $(shell find . -type d \( -name '.?*' -o -name '_*' -o -name testdata \) -prune -o -type f -name '*.go' -print)

.PHONY: help build man dev test bench lint fuzz fuzz-ci clean kube-apiserver kubectl package loadtest

help:
	@echo 'Targets:'
	@echo '  build   build mwi-issuer, mwid, mwictl and mwi-dev into bin/'
	@echo '  man     write the manual pages of mwi-issuer, mwid and mwictl'
	@echo '          into MAN_DIR ($(MAN_DIR)); man -l MAN_DIR/mwictl.1 reads one'
	@echo '  dev     build, then run an issuer and mwid on development defaults'
	@echo '          (state in .mwi-dev/; Ctrl-C stops them; DEV_FLAGS=... for mwi-dev)'
	@echo '  test    build, then run every test, unit and integration, with -race'
	@echo '  package build the mwid and mwi-issuer packages (.deb and .rpm) into PKG_DIR ($(PKG_DIR))'
	@echo '  bench   build, then run the integration benchmarks and the agent destination checks benchmark once'
	@echo '  loadtest build, then measure joins and renewals with mwi-loadgen beside the targets'
	@echo '          (LOADTEST_FLAGS=...; STEPCA_DIR=DIR with step-ca and step v0.30.2 adds the comparison)'
	@echo '  lint    check formatting (gofmt -l) and run go vet'
	@echo '  fuzz    run each fuzz target for FUZZTIME ($(FUZZTIME))'
	@echo '  fuzz-ci run each fuzz target for FUZZTIME_CI ($(FUZZTIME_CI)), as CI does'
	@echo '  clean   remove bin/ (keeps .mwi-dev/, the dev issuer, and CACHE_DIR)'
	@echo '  kube-apiserver, kubectl'
	@echo '          build them into CACHE_DIR/kube/bin for the Kubernetes tests (test and bench do)'
	@echo 'Variables: GO=$(GO) CACHE_DIR=$(CACHE_DIR) (cache of large builds)'

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...
	@# mwictl again, static: kubectl runs it for each credential, and a
	@# static binary starts in about half the time. It needs no cgo.
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/mwictl

# Each program's TestMan writes its pages, from the definitions its help
# comes from, into MWI_MAN_DIR (package internal/cli/man): the renderers
# stay out of the programs themselves.
man:
	rm -rf $(MAN_DIR)
	MWI_MAN_DIR=$(abspath $(MAN_DIR)) $(GO) test -count=1 -ldflags '$(LDFLAGS)' -run '^TestMan$$' ./cmd/mwi-issuer ./cmd/mwid ./cmd/mwictl

# make package: the .deb and .rpm of mwid (with mwictl) and mwi-issuer,
# made by nfpm at a pinned version (NFPM_VERSION), which go install builds
# from the module proxy once into CACHE_DIR: a fixed version makes the same
# package from the same tree on every machine, and nothing is added to
# go.mod.
# The programs are built for packages: -trimpath (no build paths),
# position-independent (-buildmode=pie, as Debian's hardening asks),
# stripped (-s -w), every symbol bound at start so that the relocations
# are read-only after it (-bindnow), with the version and commit linked in
# as make build does. mwid and mwi-issuer use cgo, as make build's do (user and group
# names through NSS), so their libc6 dependency is the newest C library
# symbol version they need; mwictl is static, as in make build.
NFPM_VERSION := v2.45.2
NFPM := $(CACHE_DIR)/nfpm-$(NFPM_VERSION)/nfpm
PKG_DIR ?= $(BIN)/package
PKG_STAGE := $(BIN)/package/stage
PKG_VERSION = $(shell packaging/version.sh '$(VERSION)')
PKG_GOARCH = $(shell $(GO) env GOARCH)
PKG_BUILD := $(GO) build -trimpath -buildmode=pie -ldflags '-s -w -bindnow $(LDFLAGS)'
# The package tests (integration/package_test.go) look for the packages
# here; make test builds them first.
export MWI_PACKAGE_DIR := $(PKG_DIR)
test: package

$(NFPM):
	GOBIN=$(dir $(NFPM)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package: $(NFPM)
	rm -rf $(PKG_DIR) && mkdir -p $(PKG_STAGE)/completion
	$(PKG_BUILD) -o $(PKG_STAGE)/ ./cmd/mwid ./cmd/mwi-issuer
	CGO_ENABLED=0 $(PKG_BUILD) -o $(PKG_STAGE)/ ./cmd/mwictl
	$(MAKE) --no-print-directory man MAN_DIR=$(PKG_STAGE)/man
	gzip -9n $(PKG_STAGE)/man/*.1
	for p in mwictl mwi-issuer; do for sh in bash zsh fish; do \
		$(PKG_STAGE)/$$p completion $$sh > $(PKG_STAGE)/completion/$$p.$$sh || exit 1; \
	done; done
	libc=$$(packaging/libc-version.sh $(PKG_STAGE)/mwid $(PKG_STAGE)/mwi-issuer) && \
	for p in mwid mwi-issuer; do for f in deb rpm; do \
		GOARCH=$(PKG_GOARCH) MWI_PKG_VERSION='$(PKG_VERSION)' MWI_LIBC_VERSION=$$libc \
			$(NFPM) package --config packaging/nfpm-$$p.yaml --packager $$f --target $(PKG_DIR)/ || exit 1; \
	done; done
	$(PKG_STAGE)/mwid --version > $(PKG_DIR)/VERSION
	@ls -l $(PKG_DIR)/*.deb $(PKG_DIR)/*.rpm

dev: build
	$(BIN)/mwi-dev $(DEV_FLAGS)

test: build kube-apiserver kubectl
	MWI_BIN_DIR=$(BIN) $(KUBE_ENV) $(GO) test -race -count=1 -parallel $(TEST_PARALLEL) -timeout 30m ./...

bench: build kube-apiserver kubectl
	MWI_BIN_DIR=$(BIN) $(KUBE_ENV) $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./integration/
	$(GO) test -run '^$$' -bench BenchmarkDestinationChecks -benchtime 1x -timeout 5m ./daemon/agent/

# LOADTEST_FLAGS are mwi-loadgen's flags for make loadtest: by default a
# million instances in a bbolt store (seeded in bulk), 1,000 bots joined
# through tokens, the issuer on CPU 0 and the generator on CPU 1, and the
# store's size at three fleet sizes. -store postgres measures PostgreSQL.
LOADTEST_FLAGS ?= -pin -instances 1000000 -joins 1000 -renewals 20000 -sizes 1000,100000,1000000
# STEPCA_DIR, if set, holds step-ca and step v0.30.2, built outside the
# repository; make loadtest then runs the same load against step-ca.
STEPCA_DIR ?=

loadtest: build
	$(BIN)/mwi-loadgen $(if $(STEPCA_DIR),-stepca $(STEPCA_DIR)) $(LOADTEST_FLAGS)

# The tests use this kubectl rather than one on PATH: a kubectl of a known
# version that reads its kubeconfig once, so that
# kubectl --kubeconfig <(mwictl kubeconfig) works (gcloud's kubectl
# dispatcher reads it twice).
kube-apiserver kubectl:
	scripts/kube-build.sh $(CACHE_DIR) $@

lint:
	@out="$$($(GOFMT) -l $(GO_FILES))"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Each fuzz target's seed corpus is checked in under its package's
# testdata/fuzz/NAME; go test -fuzz takes one target at a time.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./daemon/config/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./issuer/resource/
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime $(FUZZTIME) ./issuer/resource/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/httpjson/
	$(GO) test -run '^$$' -fuzz '^FuzzSessionBind$$' -fuzztime $(FUZZTIME) ./daemon/agent/
	$(GO) test -run '^$$' -fuzz '^FuzzServeAgent$$' -fuzztime $(FUZZTIME) ./daemon/agent/
	$(GO) test -run '^$$' -fuzz '^FuzzSessionSign$$' -fuzztime $(FUZZTIME) ./daemon/agent/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/yamlfile/

fuzz-ci:
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME_CI)

clean:
	rm -rf bin/
