"""Loaded by pytest before Django's settings (`-p tests.testenv` in pytest.ini): the
tests get their own var/ folder, so a running `make run` never shares their broker
queue, outbox or database."""

import os
from pathlib import Path

os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# The tests' webhook receiver listens on loopback, which the service refuses by default
# (memo_service/netguard.py); the tests of that refusal turn this back off.
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
