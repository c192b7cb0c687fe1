# Entry points: `make run` starts the demo, `make test` runs every check CI runs; `make stop`
# stops what `make run` started, `make clean` also deletes its data.
# `run` and `test` create .venv on first use and reinstall only when pyproject.toml changes.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# manage.py checks share the test suite's embedded services instead of starting the demo's.
TEST_DATA_DIR := $(CURDIR)/.data/test
PYTEST_ARGS ?=

.PHONY: venv run stop test lint format check browser clean bench chaos

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m project.dev

# Stops everything `make run` started from this checkout: the web server and the worker (through
# the `make run` process, found by .data/run.pid), then the embedded PostgreSQL and Redis under
# .data. Keeps the data (runs, users, the admin password) for the next `make run`.
stop:
	@if [ -x $(PY) ]; then $(PY) -m project.dev stop; else echo "No $(VENV): nothing to stop."; fi

test: $(STAMP) browser lint check
	scripts/test.sh $(PYTEST_ARGS)

# Every benchmark, side by side with its peers (DBOS, raw Celery, the Temporal SDK), written up
# in bench/results.md with a chart (docs/images/benchmarks.png). About 35 minutes; run it alone
# on the machine. Uses DATABASE_URL / CELERY_BROKER_URL, or the embedded services.
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench,dev]'
	BELUGA_DATA_DIR="$${BELUGA_DATA_DIR:-$(CURDIR)/.data}" $(PY) -m bench

# The chaos test: 300 runs while the workers are killed with kill -9, PostgreSQL and Redis
# restart and the workers' connections are terminated; checks every result, history and
# activity execution, and prints the figures. Owns embedded services under .data/chaos, so it
# restarts nothing anyone else uses. About 2 minutes; `make test` runs a 40-run version.
chaos: $(STAMP)
	$(PY) -m tests.chaos --runs 300

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy beluga_workflows

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# On the test suite's embedded services (unless BELUGA_DATA_DIR names others), which it stops
# again at the end, pass or fail: scripts/test.sh starts and stops its own.
check: $(STAMP)
	@[ -n "$${BELUGA_DATA_DIR:-}" ] || trap '$(PY) -m project.embedded stop --data-dir "$(TEST_DATA_DIR)" >/dev/null' EXIT; \
	set -ex; \
	BELUGA_DATA_DIR="$${BELUGA_DATA_DIR:-$(TEST_DATA_DIR)}" DJANGO_SETTINGS_MODULE=project.settings_test $(PY) manage.py check; \
	BELUGA_DATA_DIR="$${BELUGA_DATA_DIR:-$(TEST_DATA_DIR)}" DJANGO_SETTINGS_MODULE=project.settings_test $(PY) manage.py makemigrations --check --dry-run

# Debian's Chromium for the Playwright admin tests, without the packages it only recommends
# (on a bare Debian 12, 174 packages instead of 324; the tests run it with --no-sandbox, so
# chromium-sandbox is not needed). Never fails the build: without it the browser tests fail
# loudly (they do not skip), which says what is missing.
browser:
	@if [ -x /usr/bin/chromium ]; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "The browser tests (tests/test_browser.py) drive Chromium, and /usr/bin/chromium is missing:"; \
		echo "installing it now with: apt-get install -y --no-install-recommends chromium"; \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium ) \
			|| echo "WARNING: could not install chromium; the browser tests will fail."; \
	else \
		echo "WARNING: /usr/bin/chromium is missing and apt-get (as root) is not available;"; \
		echo "WARNING: install Chromium yourself or the browser tests will fail."; \
	fi

# Stops what `make run`, `make test` and `make chaos` started, then DELETES their data: every
# run and user of the demo, the admin password, the embedded databases. `make stop` keeps it.
clean:
	-@$(PY) -m project.dev stop >/dev/null 2>&1; \
	for dir in .data .data/test .data/chaos; do \
		[ -x $(PY) ] && [ -d "$$dir" ] && $(PY) -m project.embedded stop --data-dir "$$dir"; \
	done; true
	rm -rf .data staticfiles build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
