"""Loaded by pytest before Django's settings (`-p tests.testenv` in pytest.ini): the
tests get their own var/ folder, so a running `make run` never shares their broker
queue, outbox or database."""

import os
from pathlib import Path

# As `make run`: DEBUG on, so settings.py keeps a random SECRET_KEY under VAR_DIR.
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
