# One entry point for everything. `make demo` and `make test` work as the very first command on a
# fresh Debian machine with Python: each installs what it needs first.
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

.PHONY: install system-deps lock test test-fast test-compose env demo demo-local up down status logs airflow task-logs bench help
.DEFAULT_GOAL := help

help:
	@echo "make install   system packages + .venv from requirements.lock"
	@echo "make demo      bring the stack up and run the ML pipeline end to end"
	@echo "make test      the whole test suite (unit, data, model, DAGs, running stack)"
	@echo "make test-fast everything that needs no running stack (unit, data, model, docs, DAGs, observability, import contracts)"
	@echo "make test-compose   docker-compose.celery.yml built, brought up and driven on a Docker engine"
	@echo "make env       write .env with generated secrets (for compose users; needs only python3)"
	@echo "make up|down|status|logs   the native stack"
	@echo "make airflow ARGS=\"dags list\"   the airflow CLI against the running native stack (= bin/airflow)"
	@echo "make task-logs DAG=... TASK=... [RUN=...]   a task's log through the REST API"
	@echo "make bench     benchmark scripts (print JSON)"

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): requirements.lock pyproject.toml
	@bash scripts/system-deps.sh
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements.lock
	@$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

install: $(STAMP)

# Re-resolve the lock from requirements.in (needs the registries).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile requirements.in -o requirements.lock --python-version 3.11 --no-header

test: install
	$(PY) -m pytest

# Everything that needs no running stack: a change to the ML core, the DAGs or the observability
# files checked in minutes, without tests/stack and tests/faults (`make test` runs those too).
FAST_TESTS := tests/unit tests/data tests/model tests/docs tests/dags tests/observability
test-fast: install
	$(PY) -m pytest $(FAST_TESTS) -m "not stack"

# The production path for real: a Docker engine (an existing one, or the project's own dockerd),
# stand-in base images when no registry answers, the project image, `up`, the checks, `down -v`.
# Prints each phase's duration. See tests/compose/conftest.py and docs/production.md.
# (docker.io and mmdebstrap are installed when needed, inside the timed phases.)
test-compose: install
	$(PY) -m pytest tests/compose -o timeout=1800

# A filled .env for `docker compose -f docker-compose.celery.yml up` (no .venv, no native stack):
# generated secrets, existing values never changed, variables new in .env.example appended.
env:
	@$(PY_BOOT) -m stack.envfile

# The native stack (stack/, supervisord). Settings and generated secrets: .env (from .env.example).
up: install
	@$(PY) -m stack.ctl up

down: install
	@$(PY) -m stack.ctl down

status: install
	@$(PY) -m stack.ctl status

# make logs [C=worker-heavy1] [F=1 to follow] [N=50 lines]
logs: install
	@$(PY) -m stack.ctl logs $(C) -n $(or $(N),20) $(if $(F),-f)

# The airflow CLI against the running stack, as its scheduler runs (= bin/airflow ARGS, from any
# directory): make airflow ARGS="dags list". `airflow` is also a folder here: the target is phony.
airflow: install
	@$(PY) -m stack.ctl airflow -- $(ARGS)

# A task's log through the REST API (Airflow 3 has no `airflow tasks logs`):
# make task-logs DAG=ml_pipeline_dag TASK=train [RUN=<run id>] [TRY=2] [MAP=0] [F=1 to follow]
task-logs: install
	@$(PY) -m stack.ctl task-logs $(DAG) $(TASK) $(RUN) $(if $(TRY),--try $(TRY)) $(if $(MAP),--map-index $(MAP)) $(if $(F),-f)

# make demo [DEMO_UNTIL=2013-W08] [DEMO_DRIFT_WEEK=2013-W17]
demo: install
	@$(PY) -m stack.demo

# The ML lifecycle without Airflow: replay, validate, preprocess, train, evaluate, drift, deploy.
demo-local: install
	@$(VENV)/bin/mlops demo --until 2013-W10 --first-until 2013-W08

# Benchmarks: each prints one JSON object (the stack benchmarks bring up stacks of their own;
# stack_latency.py restarts the one of .env).
bench: install
	$(PY) benchmarks/ml_core.py
	$(PY) benchmarks/stack_latency.py
	$(PY) benchmarks/pipeline_overhead.py
	$(PY) benchmarks/load.py
	$(PY) benchmarks/lifecycle.py
	$(PY) benchmarks/faults.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/soak.py
