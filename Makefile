# Sluice. Run as root for demo and test: they attach eBPF programs to a
# cgroup they create, start a private PostgreSQL, and clean up after.

# sudo resets PATH; fall back to the standard Go install location.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)
BIN     ?= bin
PKGS    ?= ./...
DIST    ?= dist
# The package version: the nearest tag, commits since and the commit
# (packaging.DebVersion turns it into a Debian version).
# Read once (:=), so the binaries and the package always carry the same one.
ifeq ($(origin DESCRIBE),undefined)
DESCRIBE := $(shell git describe --tags --always --dirty 2>/dev/null)
endif
# Both binaries print it (--version), as the package's Debian version.
LDFLAGS ?= -X github.com/sluicehq/sluice/internal/version.Describe=$(DESCRIBE)

.PHONY: all build deps generate check-generate lint test test-unit test-race demo demo-fleet bench bench-fleet package clean

all: build

## deps: install the Debian packages and Go modules the build, tests and demo need
deps:
	./scripts/install-deps.sh

## build: build sluiced and sluice into ./bin (needs gcc for pg_query_go's cgo)
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/sluiced ./cmd/sluice

## generate: rebuild the eBPF objects from bpf/*.c with clang and bpf2go
generate:
	$(GO) generate ./bpf/

## check-generate: fail when the committed eBPF objects do not match bpf/*.c
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: committed objects are stale: run make generate and commit"; exit 1; }

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## test: install what is needed, then run every test (privileged ones need root)
test: deps
	$(GO) test -count=1 -timeout 20m $(PKGS)

## test-unit: the tests that need neither root nor servers
test-unit:
	$(GO) test -count=1 -short $(PKGS)

## test-race: the unit tests (no root, no servers: -short) under the race detector
test-race:
	$(GO) test -race -short -count=1 -timeout 15m $(PKGS)

## demo: build, start a private PostgreSQL, a private MariaDB, a private dockerd and sluiced on private cgroups, show intercepted psql, mariadb and a container job
demo: deps build
	./scripts/demo.sh

## demo-fleet: build, start one NATS server, one S3-compatible server and a private PostgreSQL, and two sluiced "VMs" sharing them: events, approvals, pulled rulesets and recordings across the fleet
demo-fleet: deps build
	./scripts/demo-fleet.sh

## bench: Sluice vs direct vs PgBouncer (and MySQL and SSH vs direct), every mode, as ratios from one run (about 22 minutes)
bench: deps build
	./bench/suite.sh

## bench-fleet: the fleet paths with N = 1, 4 and 16 sluiced daemons sharing one NATS, one S3-compatible server and one PostgreSQL (about 3 minutes)
bench-fleet: build
	./bench/fleet.sh

## package: build dist/sluice_<version>_<arch>.deb (binaries, systemd unit and slice, default config, man pages, shell completions)
# mkdeb refuses binaries that print another version than the package's.
package: build
	$(GO) run ./packaging/mkdeb --describe "$(DESCRIBE)" --arch "$$($(GO) env GOARCH)" --bin $(BIN) --out $(DIST)

clean:
	rm -rf $(BIN) $(DIST)
