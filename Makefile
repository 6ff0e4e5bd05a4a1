# camagent — see README.md. Targets: build cross demo test bench chaos scale lint fuzz clean.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD_TIME ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
PKG := github.com/camagent/camagent/internal/buildinfo
LDFLAGS := -X $(PKG).version=$(VERSION) -X $(PKG).buildTime=$(BUILD_TIME)
BINS := camagent:./agent/cmd/camagent fleetctl:./tools/fleetctl camview:./tools/camview
# Real parts the tests use, as debian-package:command.
TEST_DEPS := mosquitto:/usr/sbin/mosquitto ffmpeg:/usr/bin/ffprobe chromium:/usr/bin/chromium \
  qemu-user:/usr/bin/qemu-arm dpkg:/usr/bin/dpkg-deb systemd:/usr/bin/systemd-analyze
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 30s

.PHONY: all build cross deb demo test test-deps test-arm bench chaos scale lint fuzz clean

all: build

build:
	@mkdir -p bin
	@for b in $(BINS); do \
	  $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/$${b%%:*} $${b#*:} || exit 1; \
	done
	@echo "built bin/camagent bin/fleetctl bin/camview ($(VERSION))"

# Static, stripped binaries for the cameras (Pi Zero/1: arm v6; Pi 2/3 32-bit: arm v7;
# Pi 3/4/5 64-bit: arm64) and for amd64 hosts.
cross:
	@for t in linux/arm/6 linux/arm/7 linux/arm64/- linux/amd64/-; do \
	  IFS=/ read -r os arch arm <<<"$$t"; \
	  dir=dist/$$os-$$arch$$( [ "$$arm" != - ] && echo v$$arm ); mkdir -p $$dir; \
	  for b in $(BINS); do \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$( [ "$$arm" != - ] && echo $$arm ) \
	      $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $$dir/$${b%%:*} $${b#*:} || exit 1; \
	  done; \
	  echo "$$dir: $$(ls -l $$dir | awk 'NR>1{printf "%s %.1f MiB  ", $$9, $$5/1048576}')"; \
	done

# Debian packages (armhf = the ARMv6 build, so one package runs on every Pi; arm64; amd64),
# from the binaries of make cross. See packaging/README.md.
DEB_ARCHES := armhf:linux-armv6 arm64:linux-arm64 amd64:linux-amd64
deb: cross
	@$(GO) build -o bin/mkdeb ./tools/mkdeb
	@for a in $(DEB_ARCHES); do d=dist/$${a#*:}; \
	  bin/mkdeb --version $(VERSION) --mtime $(BUILD_TIME) --arch $${a%%:*} \
	    --bin $$d/camagent --bin-fleetctl $$d/fleetctl --out dist || exit 1; \
	done

# fleetsim's scenarios at a larger scale than make test's chaos tests (CHAOS_N devices, the
# embedded broker): a breach, a broker restart mid-campaign, and 30% of the devices cut off,
# black-holed and slowed. Each fails if a device does not converge or a command is lost.
CHAOS_N ?= 2000
chaos:
	$(GO) run ./tools/fleetsim --embedded --devices $(CHAOS_N) --scenario breach
	$(GO) run ./tools/fleetsim --embedded --devices $(CHAOS_N) --scenario broker-restart --restart-downtime 2s
	$(GO) run ./tools/fleetsim --embedded --devices $(CHAOS_N) --scenario fault --fault cut
	$(GO) run ./tools/fleetsim --embedded --devices $(CHAOS_N) --scenario fault --fault blackhole --keepalive 10s
	$(GO) run ./tools/fleetsim --embedded --devices $(CHAOS_N) --scenario fault --fault slow

# The 10,000-device runs of docs/scale-out.md, the broker and the signers in processes of their
# own: a breach on Mosquitto, and a restart of fleetctl broker mid-campaign, each device from a
# loopback address of its own (SCALE_N, SCALE_RATE, SCALE_MAX_BACKOFF, SCALE_SOURCES). About 10
# minutes.
scale: build
	@tools/fleetsim/scale.sh

demo: build
	@tools/demo/demo.sh

test-deps:
	@tools/deps.sh $(TEST_DEPS)

# The end-to-end tests run without -race: mochi-mqtt v2.7.9 (the embedded broker) has a data
# race of its own between a wildcard SUBSCRIBE and a retained PUBLISH (topics.go), which the
# detector would report in tests that do both. Everything else runs with -race.
E2E := ./tools/e2e
# The packages of third_party/mochi-server whose camagent patches have tests of their own there
# (the others are tested through transport/mqtt/broker).
PATCHED := github.com/mochi-mqtt/server/v2 github.com/mochi-mqtt/server/v2/hooks/storage/bolt

test: test-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/tools/e2e$$') $(PATCHED)
	$(GO) test -count=1 -timeout 20m $(E2E)
	@$(MAKE) --no-print-directory test-arm
	@$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

# The camera-side unit tests (everything but the operator tools), cross-compiled for the Pis'
# architectures and run under qemu-user, so 32-bit alignment and similar bugs fail here rather
# than on a camera. -short keeps the slowest loops short under emulation.
ARM_TARGETS := arm/6:qemu-arm arm/7:qemu-arm arm64/-:qemu-aarch64
test-arm: test-deps
	@set -eo pipefail; pkgs=$$($(GO) list ./... | grep -v -e '/tools/' -e '/cmd/'); \
	for t in $(ARM_TARGETS); do \
	  IFS=/: read -r arch arm qemu <<<"$$t"; \
	  echo "== unit tests for linux/$$arch$$( [ "$$arm" != - ] && echo " v$$arm" ) under $$qemu"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$( [ "$$arm" != - ] && echo $$arm ) CAMAGENT_TEST_EXEC=$$qemu \
	    $(GO) test -exec $$qemu -short -count=1 -timeout 20m $$pkgs | grep -v '^?' ; \
	done

# Runs every fuzz target for FUZZTIME each (make fuzz FUZZTIME=5m for a real session).
# make test gives each target a count (20000x) rather than a duration: when a duration runs
# out while a worker is busy, the Go fuzzer can fail with "context deadline exceeded" although
# nothing failed. Minimising new inputs is off for the same reason; a failing input is still
# reported and saved under testdata/fuzz.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 0 $$pkg >/tmp/fuzz-$$f.log 2>&1 || { cat /tmp/fuzz-$$f.log; exit 1; }; \
	  done; \
	done

bench: test-deps build
	@tools/bench/bench.sh

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

clean:
	rm -rf bin dist
