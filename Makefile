# transportd. `make run` brings up a local deployment, `make test` runs every
# test against real servers. Go is pinned to 1.26.9 (1.26.8 has GO-2026-6608
# in mime/multipart and net/textproto): the go command fetches that
# toolchain through the module proxy.
export GOTOOLCHAIN := go1.26.9
export GOFLAGS := -buildvcs=false
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X transportd/core.Version=$(VERSION)
FUZZTIME ?= 60s

.PHONY: all build vet test unit run bench fuzz soak testenv-up testenv-down clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/transportd ./cmd/transportd

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Unit tests only (no servers needed; integration tests skip without them).
unit:
	$(GO) test -count=1 ./...

# Everything: vet, unit and integration tests against real servers started
# by scripts/testenv.sh (installed with apt-get when missing): Prosody, and
# ejabberd as the second XMPP server, Dovecot and OpenSMTPD for e-mail,
# InspIRCd and ngIRCd for IRC, and a second InspIRCd with Atheme services
# for SASL. One package at a time (-p 1): several packages' tests stop and
# restart the shared servers (Prosody, Dovecot, the MTA, InspIRCd), which
# would pull them from under another package's tests running meanwhile.
# Under the race detector: the whole run takes some 40 s longer with it.
test: vet
	scripts/testenv.sh up prosody ejabberd dovecot smtpd inspircd ngircd atheme
	@set -e; trap 'scripts/testenv.sh down' EXIT; \
	eval "$$(scripts/testenv.sh env)"; \
	$(GO) test -race -p 1 -count=1 -timeout 25m ./...

run: build
	scripts/run.sh

# One table per transport: latency each way, messages/s, RSS per idle
# session (scripts/bench.sh: its own Prosody and Dovecot; BENCH_IRC=1 adds
# InspIRCd and the IRC rows).
bench:
	scripts/bench.sh

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# kill -9 of a running transportd while traffic flows both ways through the
# e-mail and SMS transports; prints what was sent, acknowledged, lost and
# duplicated (SOAK_DURATION, default 5m; its own Prosody and Dovecot).
soak: build
	scripts/soak.sh

testenv-up:
	scripts/testenv.sh up

testenv-down:
	scripts/testenv.sh down

clean:
	rm -rf bin .run
