"""memo_status.py, the memo's state machine, as a table: every transition tried from
every status. An allowed move writes exactly its changes and says True; a refused one
leaves the row as it was, every column, and says False."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from memo_service.developers.models import Developer
from memo_service.memos import memo_status
from memo_service.memos.delivery_status import delivery_claim, delivery_record_failure
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import deliveries_create
from tests.conftest import make_developer, make_memo
from tests.statuses import MOVED_AT, STOPPED_AT, StoppedClock, state_machine_functions, stopped_clock  # noqa: F401  (stopped_clock: a fixture)

pytestmark = pytest.mark.django_db
S = Memo.Status
SEND_AT = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
HASH = "c" * 64
RULES = {"include_countries": ["CN", "RU"]}


@pytest.fixture
def person(db: None) -> Any:
    return get_user_model().objects.create_user("someone", "someone@example.com", "pw-someone-1")


# Each transition: how the test calls it, the statuses it moves a memo from (as the
# module's diagram draws them, written out here rather than read from models.py), and
# what it writes when it does. `person` is whoever asks or approves.
Call = Callable[[Memo, Any], bool]
TRANSITIONS: dict[str, tuple[Call, set[str], Callable[[Any], dict[str, Any]]]] = {
    "memo_mark_awaiting_approval": (
        lambda memo, person: memo_status.memo_mark_awaiting_approval(memo=memo, requested_by=person),
        {S.DRAFT},
        lambda person: {"status": S.AWAITING_APPROVAL, "requested_by_id": person.pk},
    ),
    "memo_mark_approved": (
        lambda memo, person: memo_status.memo_mark_approved(
            memo=memo, approver=person, content_hash=HASH, approved_rules=RULES
        ),
        {S.AWAITING_APPROVAL},
        lambda person: {
            "status": S.APPROVED,
            "approver_id": person.pk,
            "approved_at": MOVED_AT,
            "content_hash": HASH,
            "approved_rules": RULES,
        },
    ),
    "memo_mark_changes_requested": (
        lambda memo, person: memo_status.memo_mark_changes_requested(memo=memo),
        {S.AWAITING_APPROVAL},
        lambda person: {"status": S.DRAFT},
    ),
    "memo_void_approval": (
        lambda memo, person: memo_status.memo_void_approval(memo=memo),
        {S.AWAITING_APPROVAL, S.APPROVED, S.SCHEDULED},
        lambda person: {
            "status": S.DRAFT,
            "approver_id": None,
            "approved_at": None,
            "content_hash": "",
            "approved_rules": {},
            "scheduled_at": None,
        },
    ),
    "memo_mark_scheduled": (
        lambda memo, person: memo_status.memo_mark_scheduled(memo=memo, at=SEND_AT),
        {S.APPROVED, S.SCHEDULED},
        lambda person: {"status": S.SCHEDULED, "scheduled_at": SEND_AT, "status_reason": ""},
    ),
    "memo_mark_unscheduled": (
        lambda memo, person: memo_status.memo_mark_unscheduled(
            memo=memo, reason="could not start: the audience changed"
        ),
        {S.SCHEDULED},
        lambda person: {
            "status": S.APPROVED,
            "scheduled_at": None,
            "status_reason": "could not start: the audience changed",
        },
    ),
    "memo_mark_sending": (
        lambda memo, person: memo_status.memo_mark_sending(memo=memo),
        {S.APPROVED, S.SCHEDULED},
        lambda person: {"status": S.SENDING, "send_started_at": MOVED_AT, "status_reason": ""},
    ),
    "memo_mark_sent_if_done": (
        lambda memo, person: memo_status.memo_mark_sent_if_done(memo_id=memo.pk),
        {S.SENDING},
        lambda person: {"status": S.SENT},
    ),
    "memo_mark_paused": (
        lambda memo, person: memo_status.memo_mark_paused(memo=memo, reason="paused by an admin"),
        {S.SENDING},
        lambda person: {"status": S.PAUSED, "status_reason": "paused by an admin"},
    ),
    "memo_mark_resumed": (
        lambda memo, person: memo_status.memo_mark_resumed(memo=memo),
        {S.PAUSED},
        lambda person: {"status": S.SENDING, "status_reason": ""},
    ),
    "memo_mark_cancelled": (
        lambda memo, person: memo_status.memo_mark_cancelled(memo=memo),
        {S.DRAFT, S.AWAITING_APPROVAL, S.APPROVED, S.SCHEDULED, S.SENDING, S.PAUSED},
        lambda person: {"status": S.CANCELLED, "scheduled_at": None},
    ),
    "memo_mark_withdrawn": (
        lambda memo, person: memo_status.memo_mark_withdrawn(memo=memo, by=person, reason="the date was wrong"),
        {S.SENDING, S.PAUSED, S.SENT},
        lambda person: {
            "status": S.WITHDRAWN,
            "withdrawn_at": MOVED_AT,
            "withdrawn_by_id": person.pk,
            "withdrawal_reason": "the date was wrong",
            "scheduled_at": None,
        },
    ),
}

# How a new draft reaches each status: the state machine's own moves.
PATHS: dict[str, list[str]] = {
    S.DRAFT: [],
    S.AWAITING_APPROVAL: ["memo_mark_awaiting_approval"],
    S.APPROVED: ["memo_mark_awaiting_approval", "memo_mark_approved"],
    S.SCHEDULED: ["memo_mark_awaiting_approval", "memo_mark_approved", "memo_mark_scheduled"],
    S.SENDING: ["memo_mark_awaiting_approval", "memo_mark_approved", "memo_mark_sending"],
    S.PAUSED: ["memo_mark_awaiting_approval", "memo_mark_approved", "memo_mark_sending", "memo_mark_paused"],
    S.SENT: ["memo_mark_awaiting_approval", "memo_mark_approved", "memo_mark_sending", "memo_mark_sent_if_done"],
    S.CANCELLED: ["memo_mark_cancelled"],
    S.WITHDRAWN: [
        "memo_mark_awaiting_approval",
        "memo_mark_approved",
        "memo_mark_sending",
        "memo_mark_sent_if_done",
        "memo_mark_withdrawn",
    ],
}


def row(memo: Memo) -> Mapping[str, Any]:
    return Memo.objects.filter(pk=memo.pk).values().get()


def memo_in_status(status: str, person: Any, stopped_clock: StoppedClock) -> Memo:
    """A memo brought to `status` by the state machine's moves, at STOPPED_AT. Every memo
    here counts as dispatched (what memo_dispatch writes once every delivery exists), so
    memo_mark_sent_if_done's only guard in the table is the status."""
    stopped_clock.now = STOPPED_AT
    memo = make_memo(slug=f"memo-{status}")
    Memo.objects.filter(pk=memo.pk).update(dispatched_at=STOPPED_AT)
    for step in PATHS[status]:
        assert TRANSITIONS[step][0](memo, person), f"{step} refused on the way to {status}"
    memo.refresh_from_db()
    assert memo.status == status
    stopped_clock.now = MOVED_AT
    return memo


def test_the_table_covers_every_status_and_every_transition() -> None:
    assert set(PATHS) == set(S)
    assert set().union(*(sources for _, sources, _ in TRANSITIONS.values())) <= set(S)
    assert state_machine_functions(memo_status) == set(TRANSITIONS)  # a new transition joins the table


@pytest.mark.parametrize("name", list(TRANSITIONS))
@pytest.mark.parametrize("start", list(S))
def test_each_transition_from_each_status(start: str, name: str, person: Any, stopped_clock: StoppedClock) -> None:
    call, sources, changes = TRANSITIONS[name]
    memo = memo_in_status(start, person, stopped_clock)
    before = row(memo)
    moved = call(memo, person)
    if start in sources:
        assert moved is True
        assert row(memo) == {**before, **changes(person)}
    else:
        assert moved is False
        assert row(memo) == before


def test_a_reason_is_cut_to_what_the_column_holds(person: Any, stopped_clock: StoppedClock) -> None:
    memo = memo_in_status(S.SENDING, person, stopped_clock)
    assert memo_status.memo_mark_paused(memo=memo, reason="x" * 400)
    assert row(memo)["status_reason"] == "x" * 300
    memo = memo_in_status(S.SCHEDULED, person, stopped_clock)
    assert memo_status.memo_mark_unscheduled(memo=memo, reason="y" * 400)
    assert row(memo)["status_reason"] == "y" * 300


def test_a_memo_is_sent_only_once_dispatched_and_no_email_is_pending(person: Any, stopped_clock: StoppedClock) -> None:
    memo = memo_in_status(S.SENDING, person, stopped_clock)
    Memo.objects.filter(pk=memo.pk).update(dispatched_at=None)  # its dispatch still paging
    assert memo_status.memo_mark_sent_if_done(memo_id=memo.pk) is False
    Memo.objects.filter(pk=memo.pk).update(dispatched_at=MOVED_AT)
    developer = make_developer("cn-9", "CN")
    deliveries_create(memo=memo, developers=Developer.objects.filter(pk=developer.pk))
    delivery = Delivery.objects.get(memo=memo)
    before = row(memo)
    assert memo_status.memo_mark_sent_if_done(memo_id=memo.pk) is False  # queued
    assert delivery_claim(delivery_id=delivery.pk)
    assert memo_status.memo_mark_sent_if_done(memo_id=memo.pk) is False  # sending
    assert row(memo) == before
    delivery_record_failure(delivery_id=delivery.pk, error="refused")
    assert memo_status.memo_mark_sent_if_done(memo_id=memo.pk) is True  # settled: failed
    assert row(memo) == {**before, "status": S.SENT}
