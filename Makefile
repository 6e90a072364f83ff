# anyscope — the two commands that matter: `make demo` and `make test`.
GO     ?= go
BIN    := bin/anyscope
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Fuzz targets, as package directory:FuzzFunction.
FUZZ_TARGETS := collector:FuzzIngest analysis/atlas:FuzzParse
# FUZZ_SHORT is how long make test runs each fuzz target; FUZZTIME how long
# make fuzz does; SOAK_FUZZTIME how long make soak does.
FUZZ_SHORT    ?= 20s
FUZZTIME      ?= 5m
SOAK_FUZZTIME ?= 2m

.PHONY: all build deps deps-ops test vet demo bench clean fuzz fuzz-run soak

all: build

build:
	$(GO) build -o $(BIN) ./cmd/anyscope

# deps installs what the tests and the demo need on a Debian machine:
# PostgreSQL's server binaries (the tests and the demo start private clusters
# from them; no system service is used) and, as root, the anycast lab's
# packages: bird2 (BGP), nsd (the sites' DNS), dnsutils (dig, used by the lab
# tests), nftables (black holes) and scamper (the reference traceroute),
# tcpdump (the allow-list capture), chromium (the browser test), curl and
# systemd-analyze (the agent's install script and unit).
deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL server binaries (Debian package postgresql)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null || \
		{ echo "could not install postgresql: install it (apt-get install postgresql) and retry" >&2; exit 1; }; \
	fi
	@missing=""; \
	for p in bird:bird2 nsd:nsd dig:dnsutils nft:nftables scamper:scamper tcpdump:tcpdump chromium:chromium curl:curl systemd-analyze:systemd; do \
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

# deps-ops installs the tools three deployment checks use when present and
# skip (saying so) when not: cloud-init (its schema check of the rendered
# user data), docker-compose (`config` on the compose files) and prometheus
# (promtool on the Grafana dashboard's queries). They are not in deps
# because installing them has effects on a real machine (cloud-init runs at
# the next boot, prometheus starts a service).
deps-ops:
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends cloud-init docker-compose prometheus >/dev/null

vet:
	$(GO) vet ./...

# test: static checks, then every test with the race detector, against real
# PostgreSQL clusters and real DNS servers on loopback (the fault tests in
# their short form), then each fuzz target for FUZZ_SHORT.
test: deps vet
	$(GO) test -race -count=1 -timeout 40m ./...
	@$(MAKE) --no-print-directory fuzz-run FUZZ_RUN_TIME=$(FUZZ_SHORT)

# fuzz-run runs every fuzz target for FUZZ_RUN_TIME, all at once (one worker
# each), and prints the end of each one's log, or all of it when one failed.
# What they find interesting stays in Go's fuzz cache (`go env
# GOCACHE`/fuzz), where the next run starts from; an input that fails is
# written to the package's testdata/fuzz/<target>/ (commit it with the fix).
fuzz-run:
	@logs=$$(mktemp -d); pids=""; \
	for t in $(FUZZ_TARGETS); do \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZ_RUN_TIME) -fuzzminimizetime 2s -parallel 1 ./$${t%%:*}/ \
			>$$logs/$${t#*:}.log 2>&1 & pids="$$pids $$!"; \
	done; \
	fail=0; for p in $$pids; do wait $$p || fail=1; done; \
	for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}, $(FUZZ_RUN_TIME)):"; \
		if [ $$fail = 0 ]; then tail -n 3 $$logs/$${t#*:}.log; else cat $$logs/$${t#*:}.log; fi; \
	done; \
	rm -rf $$logs; exit $$fail

# fuzz runs each fuzz target for FUZZTIME (default 5m), one after the other
# with every core, then keeps its corpus: the inputs the fuzzer found
# interesting (in Go's fuzz cache) that the package's testdata/fuzz/<target>/
# lacks are copied there, to be committed, so that every later run, CI's
# too, starts from them.
fuzz:
	@cache=$$($(GO) env GOCACHE)/fuzz/$$($(GO) list -m); \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; dir=$$pkg/testdata/fuzz/$$name; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) ./$$pkg/ || exit 1; \
		mkdir -p $$dir; n=0; \
		for f in $$cache/$$pkg/$$name/*; do \
			[ -f "$$f" ] && [ ! -e "$$dir/$${f##*/}" ] && [ $$(wc -c <"$$f") -le 65536 ] || continue; \
			cp "$$f" "$$dir/" && n=$$((n+1)); \
		done; \
		echo "fuzz $$name: kept $$n new inputs in $$dir"; \
	done

# soak: the long forms of the fault suite (root for the lab parts): the
# fault tests with ANYSCOPE_SOAK=1 (40 collector kills and 8 PostgreSQL
# restarts, 60 agent kills), the demo with its collector down for 2 minutes
# while 8 lab agents probe, each fuzz target for SOAK_FUZZTIME, and 200
# agents posting to one collector for 5 minutes. It takes the lab's lock
# (/tmp/anyscope-lab.lock) for the demo itself: do not run it under flock.
soak: deps build
	ANYSCOPE_SOAK=1 $(GO) test -race -count=1 -timeout 60m -v -run '^(TestCollectorKilledDuringIngest|TestAgentKilledAndRestarted)$$' ./cmd/anyscope/
	@if [ "$$(id -u)" -eq 0 ]; then flock /tmp/anyscope-lab.lock $(BIN) demo --collector-outage 2m; \
	else echo "soak: skipping the demo's collector outage: the anycast lab needs root; run make soak as root"; fi
	@$(MAKE) --no-print-directory fuzz-run FUZZ_RUN_TIME=$(SOAK_FUZZTIME)
	$(BIN) bench load --agents 200 --duration 5m

# demo (root): the anycast lab, database, collector, an agent in every vantage
# point, a withdraw and a black hole, a collector outage, the truth and
# delivery checks and the report.
demo: deps build
	$(BIN) demo --collector-outage 20s

# bench: ingest throughput of the collector against raw COPY, full and
# incremental analysis of a synthetic RIPE Atlas-scale day against reading the
# same rows, the map, 200 simulated agents posting to one collector for 5
# minutes against one client alone, then (as root: it uses the lab) the
# agent's CPU and RSS against the same agent idling, each measured in one
# run; each ends with a machine-readable BENCH line.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./collector/store/ 2>&1 | grep -E '^(Benchmark|ok|FAIL)' || true
	$(BIN) bench ingest
	$(BIN) bench analysis
	$(BIN) bench map
	$(BIN) bench load --agents 200 --duration 5m
	@if [ "$$(id -u)" -eq 0 ]; then flock /tmp/anyscope-lab.lock $(BIN) bench agent; \
	else echo "bench: skipping the agent benchmark: it runs the agent in the anycast lab (network namespaces) and needs root; run make bench as root"; fi

clean:
	rm -rf bin
