"""Loaded by pytest before Django's settings (`-p tests.testenv` in pytest.ini): the
tests get their own var/ folder, so a running `make run` never shares their broker
queue, outbox or database."""

import os
from pathlib import Path

os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# A fixed key for the tests' evidence checkpoints (never used outside them): 32 bytes of 0x07.
os.environ.setdefault("EVIDENCE_SIGNING_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
