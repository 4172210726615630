# Two commands do everything on a fresh machine: `make run` (the whole stack) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test test-fast test-under-load typecheck bench venv broker broker-stop clean docs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

run: venv
	@infra/ensure-rabbitmq.sh
	@infra/run-stack.sh

test: venv
	@infra/ensure-rabbitmq.sh
	@infra/test.sh $(PYTEST_ARGS)

# `make test` TEST_RUNS times in a row (5) beside a CPU-bound load on every core: the suite must not flake.
test-under-load: venv
	@infra/ensure-rabbitmq.sh
	@infra/test-under-load.sh $(or $(TEST_RUNS),5) $(PYTEST_ARGS)

# The fast tier alone (no broker, no worker process, SQLite): pipelines run in the test process.
test-fast: venv
	@infra/test-fast.sh $(PYTEST_ARGS)

# mypy --strict on the public API ([tool.mypy] in pyproject.toml); tests/test_typing.py runs it in `make test`.
typecheck: venv
	$(PY) -m mypy

bench: venv
	@infra/ensure-rabbitmq.sh
	@infra/bench.sh $(BENCH_ARGS)

broker: venv
	@infra/ensure-rabbitmq.sh
	infra/rabbitmq.sh start

# --- docs (issue 13): the MkDocs site from docs/ into site/, offline; any warning fails it ---
docs: venv
	$(VENV)/bin/mkdocs build --strict
# --- end docs ---

broker-stop:
	infra/rabbitmq.sh stop

clean:
	-infra/rabbitmq.sh stop
	rm -rf var
