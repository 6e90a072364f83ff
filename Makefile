# anyscope — the two commands that matter: `make demo` and `make test`.
GO     ?= go
BIN    := bin/anyscope
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build deps test vet demo bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/anyscope

# deps installs what the tests and the demo need on a Debian machine:
# PostgreSQL's server binaries (the tests and the demo start private clusters
# from them; no system service is used) and, as root, the anycast lab's
# packages: bird2 (BGP), nsd (the sites' DNS), dnsutils (dig, used by the lab
# tests), nftables (black holes) and scamper (the reference traceroute).
deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL server binaries (Debian package postgresql)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null || \
		{ echo "could not install postgresql: install it (apt-get install postgresql) and retry" >&2; exit 1; }; \
	fi
	@missing=""; \
	for p in bird:bird2 nsd:nsd dig:dnsutils nft:nftables scamper:scamper tcpdump:tcpdump chromium:chromium; do \
		command -v $${p%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${p%%:*} ] || missing="$$missing $${p#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing the anycast lab's packages:$$missing"; \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
			{ echo "could not install$$missing: install them (apt-get install$$missing) and retry" >&2; exit 1; }; \
		else \
			echo "the anycast lab's tests run as root only; they need:$$missing (apt-get install$$missing)"; \
		fi; \
	fi

vet:
	$(GO) vet ./...

# test: static checks, then every test with the race detector, against real
# PostgreSQL clusters and real DNS servers on loopback.
test: deps vet
	$(GO) test -race -count=1 -timeout 40m ./...

# demo (root): the anycast lab, database, collector, an agent in every vantage
# point, a withdraw and a black hole, the truth check and the report.
demo: deps build
	$(BIN) demo

# bench: ingest throughput of the collector against raw COPY, full and
# incremental analysis of a synthetic RIPE Atlas-scale day against reading the
# same rows, then (as root: it uses the lab) the agent's CPU and RSS against
# the same agent idling, each measured in one run; each ends with a
# machine-readable BENCH line.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./collector/store/ 2>&1 | grep -E '^(Benchmark|ok|FAIL)' || true
	$(BIN) bench ingest
	$(BIN) bench analysis
	$(BIN) bench map
	@if [ "$$(id -u)" -eq 0 ]; then $(BIN) bench agent; \
	else echo "bench: skipping the agent benchmark: it runs the agent in the anycast lab (network namespaces) and needs root; run make bench as root"; fi

clean:
	rm -rf bin
