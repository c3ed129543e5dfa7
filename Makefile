# make run   — set up and run the service on the embedded default (SQLite, Celery's
#              filesystem broker, a local outbox), web + worker + beat; Ctrl-C stops all.
# make test  — run the whole test suite (embedded default unless DATABASE_URL /
#              CELERY_BROKER_URL say otherwise).
# make bench — benchmarks (bench/), not part of the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
SITE_URL ?= http://127.0.0.1:$(PORT)
export SITE_URL

.PHONY: run test bench clean

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
	@echo "  memo-service is starting on $(SITE_URL)"
	@echo "  admin:  $(SITE_URL)/admin/   (login admin / admin; a second admin: approver / approver)"
	@echo "  outbox: $(SITE_URL)/outbox/"
	@echo "  Ctrl-C stops the web server, the worker and beat."
	@echo
	WEB_PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed-dev
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

# Needs this machine's PostgreSQL (and Redis for the send). N sets the size of each
# (default 1,000,000 rows to import, 1,000,000 recipients to send to).
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/import_developers.py
	$(BIN)/python bench/send.py

clean:
	rm -rf $(VENV) var
