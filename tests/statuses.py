"""What the state machines' tests share (test_memo_status.py, test_delivery_status.py,
test_fast_paths.py): Django's clock stopped, so every timestamp a transition writes is
known exactly, and a memo brought by memo_status's own moves to where its emails may go
out."""

from __future__ import annotations

import datetime as dt
import inspect
from types import ModuleType

import pytest
from django.utils import timezone

from memo_service.memos.memo_status import memo_mark_approved, memo_mark_awaiting_approval, memo_mark_sending
from memo_service.memos.models import Memo
from tests.conftest import make_memo

# Where the clock stops while a test brings its rows to where they are (a fraction of a
# second in it, as a clock has), and where it is moved to for what is tested (a whole one).
STOPPED_AT = dt.datetime(2026, 11, 2, 9, 0, 0, 250_000, tzinfo=dt.UTC)
MOVED_AT = dt.datetime(2026, 11, 3, 10, 30, tzinfo=dt.UTC)


class StoppedClock:
    """Django's clock (timezone.now), stopped at `now`; a test moves it by setting it."""

    now = STOPPED_AT


@pytest.fixture
def stopped_clock(monkeypatch: pytest.MonkeyPatch) -> StoppedClock:
    stopped_clock = StoppedClock()
    monkeypatch.setattr(timezone, "now", lambda: stopped_clock.now)
    return stopped_clock


def sending_memo(slug: str = "regions-blocked") -> Memo:
    """A memo approved and sending, by memo_status's moves alone."""
    memo = make_memo(slug=slug)
    assert memo_mark_awaiting_approval(memo=memo, requested_by=None)
    assert memo_mark_approved(memo=memo, approver=None, content_hash="c" * 64, approved_rules={})
    assert memo_mark_sending(memo=memo)
    return memo


def state_machine_functions(module: ModuleType) -> set[str]:
    """The transitions a state-machine module offers: its own public functions."""
    return {
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
    }
