# Two commands matter: `make demo` and `make test`. Both bootstrap .venv when it is missing;
# `make test` runs the lint (ruff, mypy --strict) first, so CI checks both.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel is cached locally; an unpinned torch pulls GBs of CUDA packages.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check dlnest_ray tests bench
	$(VENV)/bin/ruff format --check dlnest_ray tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(PY) bench/loop_overhead.py
	$(PY) bench/checkpoint.py
	$(PY) bench/policy_scale.py
	$(PY) bench/packing.py
	$(PY) bench/queue_latency.py
	$(PY) bench/analyzer_latency.py
	$(PY) bench/recovery.py
	$(PY) bench/cli_latency.py

clean-venv:
	rm -rf $(VENV)
