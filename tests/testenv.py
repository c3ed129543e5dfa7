"""Loaded by pytest before Django's settings (`-p tests.testenv` in pytest.ini): the
tests get their own var/ folder and broker queue, so a running `make run` never shares
their queue, outbox or database. Under pytest-xdist (`make test` runs two processes) each
test process has its own as well: its workers consume only its own tasks, on its own
database (pytest-django names that one per process too)."""

import os
from pathlib import Path

_process = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, … or "" without xdist
os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test" / _process))
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", "-".join(filter(None, ["memos-test", _process])))
# A fixed key for the tests' evidence checkpoints (never used outside them): 32 bytes of 0x07.
os.environ.setdefault("EVIDENCE_SIGNING_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
# The tests' webhook receiver listens on loopback, which the service refuses by default
# (memo_service/memos/webhooks/netguard.py); the tests of that refusal turn this back off.
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
# As `make run`: DEBUG on, so settings.py keeps a random SECRET_KEY under VAR_DIR.
os.environ.setdefault("DEBUG", "true")
