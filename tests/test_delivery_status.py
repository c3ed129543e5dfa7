"""delivery_status.py, the delivery's state machine, as a table: every transition tried
from every status. An allowed move writes exactly its changes; a refused one leaves the
row as it was, every column; each says so the way it does (True/False, the ids or the
number it moved, or nothing)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from memo_service.developers.models import Developer
from memo_service.memos import delivery_status
from memo_service.memos.delivery_status import (
    EmailText,
    deliveries_cancel_queued,
    deliveries_claim,
    deliveries_record_sent,
    deliveries_record_unknown,
    deliveries_record_unsent,
    deliveries_requeue_unknown,
    delivery_advance,
    delivery_claim,
    delivery_record_failure,
    delivery_record_retry,
    delivery_record_skipped,
)
from memo_service.memos.memo_status import memo_mark_paused
from memo_service.memos.models import Delivery, EvidenceRecord, Memo
from memo_service.memos.send.dispatch import deliveries_create
from tests.conftest import make_developer
from tests.statuses import MOVED_AT, STOPPED_AT, StoppedClock, sending_memo, state_machine_functions, stopped_clock  # noqa: F401  (stopped_clock: a fixture)

pytestmark = pytest.mark.django_db
D = Delivery.Status
RETRY_AT = dt.datetime(2026, 11, 3, 10, 35, tzinfo=dt.UTC)
TEXT = EmailText("zh-hans", ["Wang Wei", "China"], "d" * 64)


def queued_delivery(memo: Memo) -> Delivery:
    """The developer's delivery as dispatch creates it: queued."""
    developer = make_developer("cn-1", "CN", "zh-hans", name="Wang Wei")
    deliveries_create(memo=memo, developers=Developer.objects.filter(pk=developer.pk))
    return Delivery.objects.get(memo=memo)


def _sent(d: Delivery) -> None:
    deliveries_record_sent(delivery_ids=[d.pk], message_id="<first@mg>", texts={d.pk: TEXT})


# How a queued delivery reaches each status: the state machine's own moves, as the send
# and the provider's tracking events make them.
Step = Callable[[Delivery], Any]
CLAIM: Step = lambda d: delivery_claim(delivery_id=d.pk)  # noqa: E731
PATHS: dict[str, list[Step]] = {
    D.QUEUED: [],
    D.SENDING: [CLAIM],
    D.SENT: [CLAIM, _sent],
    D.DELIVERED: [CLAIM, _sent, lambda d: delivery_advance(delivery=d, to=D.DELIVERED)],
    D.BOUNCED: [CLAIM, _sent, lambda d: delivery_advance(delivery=d, to=D.BOUNCED)],
    D.COMPLAINED: [CLAIM, _sent, lambda d: delivery_advance(delivery=d, to=D.COMPLAINED)],
    D.FAILED: [CLAIM, lambda d: delivery_record_failure(delivery_id=d.pk, error="refused: no such mailbox")],
    D.OUTCOME_UNKNOWN: [
        CLAIM,
        lambda d: delivery_record_failure(delivery_id=d.pk, error="the answer was lost", outcome_unknown=True),
    ],
    D.SKIPPED: [CLAIM, lambda d: delivery_record_skipped(delivery_id=d.pk, reason="answered first")],
    D.CANCELLED: [lambda d: deliveries_cancel_queued(memo=d.memo)],
}


def delivery_in_status(status: str, stopped_clock: StoppedClock) -> Delivery:
    stopped_clock.now = STOPPED_AT
    delivery = queued_delivery(sending_memo())
    for step in PATHS[status]:
        step(delivery)
        delivery.refresh_from_db()
    assert delivery.status == status
    stopped_clock.now = MOVED_AT
    return delivery


def row(delivery: Delivery) -> dict[str, Any]:
    return dict(Delivery.objects.filter(pk=delivery.pk).values().get())


@dataclass(frozen=True)
class Transition:
    """A transition as the table tries it: `call` runs it on the delivery; `sources` are
    the statuses it moves a delivery from (written out here, not read from models.py);
    `changes(row)` what it writes to a row it moves; `answers(moved, delivery)` what it
    returns. `recorded_anyway`: written to a row it does not move (all but the status)."""

    call: Callable[[Delivery], Any]
    sources: set[str]
    changes: Callable[[dict[str, Any]], dict[str, Any]]
    answers: Callable[[bool, Delivery], Any] = lambda moved, d: None
    recorded_anyway: bool = False


def _recorded_sent(language: str, text: EmailText | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def changes(row: dict[str, Any]) -> dict[str, Any]:
        written = {
            "status": D.SENT,
            "provider_message_id": "<call@mg>",
            "sent_at": row["sent_at"] or MOVED_AT,  # the first send's time stays
            "status_changed_at": MOVED_AT,
            "status_reason": "",
            "language": language,
        }
        if text is not None:
            written |= {"rendered_with": text.values, "text_hash": text.text_hash}
        return written

    return changes


# A tracking event's status moves a delivery only up DELIVERY_RANK; skipped and cancelled
# deliveries have no rank and never move.
RANK_BELOW: dict[str, set[str]] = {
    D.SENT: {D.QUEUED, D.SENDING, D.OUTCOME_UNKNOWN},
    D.FAILED: {D.QUEUED, D.SENDING, D.OUTCOME_UNKNOWN, D.SENT},
    D.DELIVERED: {D.QUEUED, D.SENDING, D.OUTCOME_UNKNOWN, D.SENT, D.FAILED},
    D.BOUNCED: {D.QUEUED, D.SENDING, D.OUTCOME_UNKNOWN, D.SENT, D.FAILED, D.DELIVERED},
    D.COMPLAINED: {D.QUEUED, D.SENDING, D.OUTCOME_UNKNOWN, D.SENT, D.FAILED, D.DELIVERED, D.BOUNCED},
}


def _advance(to: str) -> Transition:
    def changes(row: dict[str, Any]) -> dict[str, Any]:
        written = {"status": to, "status_changed_at": MOVED_AT}
        if to == D.FAILED:
            written["status_reason"] = "mailbox full"
        if not row["provider_message_id"]:
            written["provider_message_id"] = "<event@mg>"
        return written

    return Transition(
        lambda d: delivery_advance(delivery=d, to=to, reason="mailbox full", message_id="<event@mg>"),
        RANK_BELOW[to],
        changes,
        lambda moved, d: moved,
    )


TRANSITIONS: dict[str, Transition] = {
    "delivery_claim": Transition(
        lambda d: delivery_claim(delivery_id=d.pk),
        {D.QUEUED},
        lambda row: {"status": D.SENDING, "attempts": row["attempts"] + 1, "status_changed_at": MOVED_AT},
        lambda moved, d: moved,
    ),
    "deliveries_claim": Transition(
        lambda d: deliveries_claim(delivery_ids=[d.pk]),
        {D.QUEUED},
        lambda row: {"status": D.SENDING, "attempts": row["attempts"] + 1, "status_changed_at": MOVED_AT},
        lambda moved, d: {d.pk} if moved else set(),
    ),
    "deliveries_record_sent": Transition(
        lambda d: deliveries_record_sent(delivery_ids=[d.pk], message_id="<call@mg>", texts={d.pk: TEXT}),
        {D.SENDING},
        _recorded_sent(TEXT.language, TEXT),
        recorded_anyway=True,  # a tracking event may have moved it on already
    ),
    "deliveries_record_sent (reconciled, no text)": Transition(
        lambda d: deliveries_record_sent(delivery_ids=[d.pk], message_id="<call@mg>", language="en"),
        {D.SENDING},
        _recorded_sent("en", None),
        recorded_anyway=True,
    ),
    "deliveries_record_unsent": Transition(
        lambda d: deliveries_record_unsent(delivery_ids=[d.pk], reason="connection refused"),
        {D.SENDING},
        lambda row: {
            "status": D.QUEUED,
            "status_reason": "connection refused",
            "not_before": None,
            "status_changed_at": MOVED_AT,
        },
        lambda moved, d: [d.pk] if moved else [],
    ),
    "deliveries_record_unknown": Transition(
        lambda d: deliveries_record_unknown(delivery_ids=[d.pk], reason="worker died"),
        {D.SENDING},
        lambda row: {"status": D.OUTCOME_UNKNOWN, "status_reason": "worker died", "status_changed_at": MOVED_AT},
        lambda moved, d: int(moved),
    ),
    "delivery_record_retry": Transition(
        lambda d: delivery_record_retry(delivery_id=d.pk, error="429 too many", not_before=RETRY_AT),
        {D.SENDING},
        lambda row: {
            "status": D.QUEUED,
            "status_reason": "429 too many",
            "not_before": RETRY_AT,
            "status_changed_at": MOVED_AT,
        },
    ),
    "delivery_record_failure": Transition(
        lambda d: delivery_record_failure(delivery_id=d.pk, error="550 no such user"),
        {D.SENDING},
        lambda row: {"status": D.FAILED, "status_reason": "550 no such user", "status_changed_at": MOVED_AT},
    ),
    "delivery_record_failure (outcome unknown)": Transition(
        lambda d: delivery_record_failure(delivery_id=d.pk, error="timed out", outcome_unknown=True),
        {D.SENDING},
        lambda row: {"status": D.OUTCOME_UNKNOWN, "status_reason": "timed out", "status_changed_at": MOVED_AT},
    ),
    "delivery_record_skipped": Transition(
        lambda d: delivery_record_skipped(delivery_id=d.pk, reason="answered first"),
        {D.SENDING},
        lambda row: {"status": D.SKIPPED, "status_reason": "answered first", "status_changed_at": MOVED_AT},
    ),
    "deliveries_cancel_queued": Transition(
        lambda d: deliveries_cancel_queued(memo=d.memo),
        {D.QUEUED},
        lambda row: {
            "status": D.CANCELLED,
            "status_reason": "not sent: the memo was cancelled",
            "status_changed_at": MOVED_AT,
        },
        lambda moved, d: int(moved),
    ),
    "deliveries_requeue_unknown": Transition(
        lambda d: deliveries_requeue_unknown(memo=d.memo, reason="resent by a composer"),
        {D.OUTCOME_UNKNOWN},
        lambda row: {
            "status": D.QUEUED,
            "not_before": None,
            "status_changed_at": MOVED_AT,
            "status_reason": "resent by a composer",
        },
        lambda moved, d: [d.pk] if moved else [],
    ),
    **{f"delivery_advance to {to}": _advance(to) for to in RANK_BELOW},
}


def test_the_table_covers_every_status_and_every_transition() -> None:
    assert set(PATHS) == set(D)
    assert set().union(*(t.sources for t in TRANSITIONS.values())) <= set(D)
    in_table = {name.split(" ")[0] for name in TRANSITIONS}
    # delivery_advance_by_event is delivery_advance's one-statement twin: tests/test_fast_paths.py.
    assert state_machine_functions(delivery_status) - {"delivery_advance_by_event"} == in_table


@pytest.mark.parametrize("name", list(TRANSITIONS))
@pytest.mark.parametrize("start", list(D))
def test_each_transition_from_each_status(start: str, name: str, stopped_clock: StoppedClock) -> None:
    transition = TRANSITIONS[name]
    delivery = delivery_in_status(start, stopped_clock)
    before = row(delivery)
    answer = transition.call(delivery)
    moved = start in transition.sources
    assert answer == transition.answers(moved, delivery)
    if moved:
        assert row(delivery) == {**before, **transition.changes(before)}
    elif transition.recorded_anyway:
        assert row(delivery) == {**before, **transition.changes(before), "status": start}
    else:
        assert row(delivery) == before


@pytest.mark.parametrize("start", [D.SENDING, D.DELIVERED])
def test_a_recorded_send_has_its_handover_record_moved_or_not(start: str, stopped_clock: StoppedClock) -> None:
    """The send's record writes its handover's evidence whether or not the status moved
    (a tracking event may have come first): the provider took the email either way."""
    delivery = delivery_in_status(start, stopped_clock)
    handovers = EvidenceRecord.objects.filter(memo=delivery.memo, kind=EvidenceRecord.Kind.HANDOVER)
    before = handovers.count()
    deliveries_record_sent(delivery_ids=[delivery.pk], message_id="<call@mg>", texts={delivery.pk: TEXT})
    assert handovers.count() == before + 1


def test_a_claim_waits_out_a_retry_delay_and_a_paused_memo(stopped_clock: StoppedClock) -> None:
    delivery = delivery_in_status(D.SENDING, stopped_clock)
    delivery_record_retry(delivery_id=delivery.pk, error="429", not_before=MOVED_AT + dt.timedelta(minutes=5))
    before = row(delivery)
    assert delivery_claim(delivery_id=delivery.pk) is False
    assert deliveries_claim(delivery_ids=[delivery.pk]) == set()
    assert row(delivery) == before
    stopped_clock.now = MOVED_AT + dt.timedelta(minutes=5)
    assert memo_mark_paused(memo=delivery.memo, reason="paused")
    assert delivery_claim(delivery_id=delivery.pk) is False
    assert deliveries_claim(delivery_ids=[delivery.pk]) == set()
    assert row(delivery) == before


def test_a_reason_is_cut_to_what_the_column_holds(stopped_clock: StoppedClock) -> None:
    delivery = delivery_in_status(D.SENDING, stopped_clock)
    delivery_record_failure(delivery_id=delivery.pk, error="x" * 3000)
    assert row(delivery)["status_reason"] == "x" * 2000


@pytest.mark.parametrize("record", [deliveries_record_unsent, deliveries_record_unknown])
def test_a_claim_made_again_since_it_was_looked_at_is_another_workers(record: Any, stopped_clock: StoppedClock) -> None:
    """`claimed_before`: a row claimed after the claim that was looked at is left alone."""
    delivery = delivery_in_status(D.SENDING, stopped_clock)  # claimed at STOPPED_AT
    before = row(delivery)
    record(delivery_ids=[delivery.pk], reason="lost", claimed_before=STOPPED_AT)
    assert row(delivery) == before
    record(delivery_ids=[delivery.pk], reason="lost", claimed_before=STOPPED_AT + dt.timedelta(seconds=1))
    assert row(delivery)["status"] != D.SENDING
