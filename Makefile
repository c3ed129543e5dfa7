# make run   — set up and run the service on the embedded default (SQLite, Celery's
#              filesystem broker, a local outbox), web + worker + beat; Ctrl-C stops all.
# make test  — run the whole test suite (embedded default unless DATABASE_URL /
#              CELERY_BROKER_URL say otherwise).
# make test-pg — the same suite on this machine's PostgreSQL and Redis (make test-pg
#              DATABASE_URL=… CELERY_BROKER_URL=… points it at others).
# make test-fast — everything but the tests that start real processes (workers, beat,
#              a browser, manage.py, gunicorn), in parallel: the quick check while you work.
# make bench — benchmarks (bench/), not part of the tests.
# make bench-evidence — what a send's evidence costs: the send with it and without it, in turns.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
SITE_URL ?= http://127.0.0.1:$(PORT)
export SITE_URL

.PHONY: run test test-pg test-fast lint bench bench-evidence clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("memo-service needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# DEBUG is off unless set; the development server turns it on (and settings.py then
# makes a random SECRET_KEY under var/ on the first run).
run: export DEBUG ?= true
run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "  memo-service is starting on $(SITE_URL); its addresses follow once the web server and a worker answer."
	@echo "  Ctrl-C stops the web server, the worker and beat."
	@echo
	WEB_PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

# The tests that start no processes run in one test process per core (pytest-xdist);
# those that start workers, beat or a browser (marker e2e) run after them one at a
# time, since their timing is what they test. Exit code 5 is "no test selected" (a
# PYTEST_ARGS naming only one kind).
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto -m "not e2e" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The suite on the database and broker production runs on: what SQLite and the
# filesystem broker cannot show (concurrent writers, row locks, snapshots) is tested
# only here. Set in the Makefile, not taken from the environment, so an exported
# DATABASE_URL does not quietly turn it into `make test`; the command line overrides.
test-pg: export DATABASE_URL = postgres://postgres@127.0.0.1:5432/memo_service
test-pg: export CELERY_BROKER_URL = redis://127.0.0.1:6379/0
test-pg: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto -m "not e2e" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS) || [ $$? -eq 5 ]

# ruff (lint and format) and mypy with django-stubs, over the service and its tests;
# configured in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=true $(BIN)/mypy memo_service tests  # the plugin loads the settings: the development ones

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto -m "not e2e and not process" $(PYTEST_ARGS)

$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed-dev
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

# Needs this machine's PostgreSQL (and Redis for the send and tracking). N sets the size
# of each (default 1,000,000 rows to import, 1,000,000 recipients to send to, 100,000
# tracking events, 1,000,000 developers whose notices are read).
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/import_developers.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/sink.py
	$(BIN)/python bench/tracking.py
	$(BIN)/python bench/notices.py
	$(BIN)/python bench/verify_export.py
	$(BIN)/python bench/traffic.py

# PAIRS (default 5) runs each way of bench/send.py's pipeline at N (default 300,000).
bench-evidence: $(VENV)/.installed-bench
	$(BIN)/python bench/evidence_cost.py

clean:
	rm -rf $(VENV) var
