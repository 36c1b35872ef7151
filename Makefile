# Set-up and the two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv, install torch (the CPU build this machine has) and the
# project, and make sure Fashion-MNIST is present.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: with it installed, the project's `torch>=2.1` pulls
# nothing more (no CUDA packages). Override for another build, e.g.
# `make demo TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
STAMP := $(VENV)/.installed
# The data directory reaches longtail only when it is not the default.
DATA_ROOT_ARG := $(if $(filter-out /usr/share/datasets/fashion-mnist,$(FASHION_MNIST_DIR)),data.root=$(FASHION_MNIST_DIR))

.PHONY: install data docs demo test test-fast clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

data:
	@sh scripts/ensure_fashion_mnist.sh "$(FASHION_MNIST_DIR)"

# Generated documentation: the key table of docs/configuration.md comes from the config dataclasses. A build
# step, not a hand step: the demo and the tests (CI runs `make test`) regenerate it first, so adding or changing
# an option changes the page with it.
docs: install
	$(BIN)/python scripts/update_config_docs.py

demo: install data docs
	$(BIN)/longtail demo --out runs/demo $(DATA_ROOT_ARG)

test: install data docs
	$(BIN)/python -m pytest -m "slow or not slow"

test-fast: install data docs
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache src/*.egg-info
