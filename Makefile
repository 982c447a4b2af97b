# raftka: `make run` starts the cluster, `make test` runs every test.
# Both create .venv and install the project into it first (python3 >= 3.11 and make are all you need).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv run kill test chaos chaos-net bench bench-scale bench-failover bench-replication bench-groups profile proto clean-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "raftka needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The Procfile's entries format the data dirs that have none first (kbroker format --all-missing): on a
# fresh clone every broker as an initial voter of a brand-new cluster; after a lost disk, only the missing
# data dir, as rejoining (it votes once it has caught up). Formatted data dirs are left alone.
# make run BROKERS=5 (1 to 9; VOTERS=3: only brokers 1-3 vote in the metadata quorum, the others observe):
# the cluster file and Procfile are generated as data/cluster-5.toml and data/Procfile-5 (kbroker
# cluster-file), data dirs still data/broker-N. Unset, or BROKERS=3 alone: cluster.toml and the Procfile.
# data/.cluster-shape remembers which cluster data/ holds: the quorum's voters cannot change under
# existing data (a smaller majority could elect a node without the committed metadata): make clean-data.
BROKERS ?= 3
VOTERS  ?=
GENERATED = $(if $(or $(VOTERS),$(filter-out 3,$(BROKERS))),yes)
SHAPE     = brokers=$(BROKERS) voters=$(or $(VOTERS),$(BROKERS))
run: $(STAMP)
ifneq ($(GENERATED),)
	$(BIN)/python -m broker cluster-file --brokers $(BROKERS) $(if $(VOTERS),--voters $(VOTERS)) \
	  --out data/cluster-$(BROKERS).toml --procfile data/Procfile-$(BROKERS)
endif
	@had=$$(cat data/.cluster-shape 2>/dev/null \
	  || { ls -d data/broker-* >/dev/null 2>&1 && echo "brokers=3 voters=3"; }); \
	test -z "$$had" || test "$$had" = "$(SHAPE)" \
	  || { echo "make run: data/ holds a cluster of $$had, not $(SHAPE): make clean-data first" >&2; exit 2; }; \
	mkdir -p data && echo "$(SHAPE)" > data/.cluster-shape
	@echo "raftka: the live cluster page (kclient ui) will be at http://127.0.0.1:8080/"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start$(if $(GENERATED), -f data/Procfile-$(BROKERS))

# make kill BROKER=N: kill -9 broker N of `make run` (the PID the broker wrote to its data dir);
# its supervisor starts it again after the Procfile's --restart-delay.
# The ps check keeps a stale PID file (a broker gone since) from killing another process.
kill:
	@test -n "$(BROKER)" || { echo "make kill: which broker? e.g. make kill BROKER=1" >&2; exit 2; }
	@pidfile=data/broker-$(BROKER)/broker.pid; \
	test -f $$pidfile || { echo "make kill: no $$pidfile: is broker $(BROKER) running (make run)?" >&2; exit 1; }; \
	pid=$$(cat $$pidfile); \
	ps -o args= -p "$$pid" 2>/dev/null | grep -Eq -- "--id $(BROKER)( |$$)" \
	  || { echo "make kill: PID $$pid from $$pidfile is not broker $(BROKER) (stale file?)" >&2; exit 1; }; \
	echo "kill -9 $$pid (broker $(BROKER))"; kill -9 "$$pid"

# Two workers, each running whole test files (pytest-xdist --dist loadfile): most tests wait on real broker
# processes, so two at once take about half the time on 2 cores. `pytest tests/...` alone runs serially.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Chaos soak: ROUNDS seeded faults per seed (kill -9 leader/controller/both/follower, pauses, two at once,
# rolling restart, all at once, topic delete and re-create, preferred elections, faults in sequence, a wiped
# data dir, idle client streams) under idempotent acks=all producers and consumers, each round checked;
# the report (summary per fault kind, timeline) goes to chaos-report/report.md. SEEDS=1,2 to replay;
# BROKERS=5 runs five brokers (topics keep RF 3), VOTERS=3 with only brokers 1-3 in the metadata quorum;
# NEMESES=kill-leader,wipe-data picks the fault kinds.
SEEDS   ?=
ROUNDS  ?= 50
NEMESES ?=
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.runner --rounds $(ROUNDS) --brokers $(BROKERS) --out chaos-report \
	  $(if $(SEEDS),--seeds $(SEEDS)) $(if $(NEMESES),--nemeses $(NEMESES)) $(if $(VOTERS),--voters $(VOTERS))

# Network faults (issue 19): every broker on a host of its own (a Linux network namespace behind one router;
# needs root and iproute2), links cut silently: an isolated leader, a leader or the controller in the minority,
# a bridge, one-way loss, clients cut from a leader, a flapping cut, and each with a kill -9 ("+kill").
# Same seeds, rounds and report as `make chaos`; NEMESES=net-bridge,net-flap picks the kinds.
chaos-net: $(STAMP)
	$(BIN)/python -m tests.chaos.runner --net --rounds $(ROUNDS) --brokers $(BROKERS) --out chaos-net-report \
	  $(if $(SEEDS),--seeds $(SEEDS)) $(if $(NEMESES),--nemeses $(NEMESES)) $(if $(VOTERS),--voters $(VOTERS))

# Performance figures (issue 7): a fresh 3-broker cluster, W1 sync produce, W2 pipelined produce, W3 consume,
# W4 failover, broker RSS and ready time; a table on stdout and bench/results.json.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# Scale figures (issue 20) at 100 to 10,000 partitions, each on a fresh cluster; table and bench/scale_results.json.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# Where the time goes in W2 and W3: py-spy samples of the client and the three brokers (needs py-spy on PATH:
# pip install py-spy; it is a profiler, not a raftka dependency).
profile: $(STAMP)
	$(BIN)/python -m bench.profile

# Metadata-quorum figures (median of 5): time to a ready cluster, kill -9 of a leader to its successor.
bench-failover: $(STAMP)
	$(BIN)/python -m bench.failover --rounds 5

# Replication figures: acks=all latency with 1 in flight (p50/p99), a restarted follower's catch-up rate.
bench-replication: $(STAMP)
	$(BIN)/python -m bench.replication

# Consumer-group figures: fault -> group stable again after a member's kill -9 and after its coordinator's
# kill -9 (5 runs each, min / median / max), with three member processes committing under a producer.
bench-groups: $(STAMP)
	$(BIN)/python -m tests.chaos.group_timings --runs 5

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean-data:
	rm -rf data

clean: clean-data
	rm -rf $(VENV) *.egg-info
