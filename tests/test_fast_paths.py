"""Each PostgreSQL fast path against its ORM twin, run on the same rows with the clock
stopped, every column of every row either may write compared: the send's record
(deliveries_record_sent), a handover's records (evidence_record_handover) and a tracking
event (delivery_record_event). And dispatch's INSERT … SELECT, one statement on either
database, against the row of each column's own source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from anymail.signals import AnymailTrackingEvent
from django.db import connection, transaction

from memo_service.developers.models import Developer
from memo_service.memos import delivery_status
from memo_service.memos.audience import audience_reasons
from memo_service.memos.delivery_status import (
    EmailText,
    deliveries_record_sent,
    delivery_advance,
    delivery_claim,
)
from memo_service.memos.evidence import append
from memo_service.memos.evidence.append import evidence_record_handover
from memo_service.memos.models import Delivery, DeliveryEvent, EvidenceRecord, Memo
from memo_service.memos.send.dispatch import deliveries_create
from memo_service.memos.tracking import STATUS_FOR_EVENT, delivery_record_event
from tests.conftest import make_developer, make_memo
from tests.statuses import MOVED_AT, STOPPED_AT, StoppedClock, sending_memo, stopped_clock  # noqa: F401  (stopped_clock: a fixture)

pytestmark = pytest.mark.django_db
postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast paths are PostgreSQL's")
D = Delivery.Status
EARLIER, NOW = STOPPED_AT, MOVED_AT  # the rows brought to where they are; the fast path and its twin run


@pytest.fixture
def sequencers_started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The memos whose sequencer each path asks to start, in order."""
    started: list[int] = []
    for module in (append, delivery_status):
        monkeypatch.setattr(module, "evidence_seal_soon", started.append)
    return started


def claimed(memo: Memo, *developers: Developer) -> list[Delivery]:
    """The developers' deliveries as dispatch creates them, each claimed for a send."""
    deliveries_create(memo=memo, developers=Developer.objects.filter(pk__in=[d.pk for d in developers]))
    deliveries = list(Delivery.objects.filter(memo=memo, developer__in=developers).order_by("id"))
    for delivery in deliveries:
        assert delivery_claim(delivery_id=delivery.pk)
    return deliveries


def rows(model: type[Any], **lookup: Any) -> list[dict[str, Any]]:
    return list(model.objects.filter(**lookup).order_by("pk").values())


def state() -> dict[str, Any]:
    """Every row a fast path or its twin may write, every column but the ids a sequence
    hands out (an evidence record's, an event's; an event record names its event by the
    provider's id for it)."""
    events = {e["id"]: (e["provider"], e["event_id"]) for e in rows(DeliveryEvent)}
    records = []
    for record in rows(EvidenceRecord, seq__isnull=True):
        del record["id"]
        if record["kind"] == EvidenceRecord.Kind.EVENT:
            record["object_id"] = events[record["object_id"]]
        records.append(record)
    return {
        "deliveries": rows(Delivery),
        "developers": rows(Developer),
        "events": [{k: v for k, v in e.items() if k != "id"} for e in rows(DeliveryEvent)],
        "records": sorted(records, key=lambda r: (r["memo_id"], r["kind"], str(r["object_id"]))),
    }


def both_ways(run: Callable[[bool], Any], stopped_clock: StoppedClock, started: list[int]) -> tuple[Any, Any]:
    """(the fast path's outcome, the twin's): what `run(fast)` returns and starts and the
    state it leaves, each run on the same rows (the first rolled back) at NOW."""
    outcomes = []
    for fast in (True, False):
        stopped_clock.now = NOW
        started.clear()
        with transaction.atomic():
            result = run(fast)
            outcomes.append((result, list(started), state()))
            transaction.set_rollback(True)
    return outcomes[0], outcomes[1]


TEXTS = [
    EmailText("zh-hans", ["Wang Wei", "中国", {"requests": 12}], "a" * 64),
    EmailText("en", ['O\'Brien "Ola"', "Russia\n", None], "b" * 64),
    EmailText("en", ["John Smith", "United States", []], "c" * 64),
    EmailText("en", ["Kim", "South Korea", [1.5]], "d" * 64),
]


@postgresql_only
@pytest.mark.parametrize("own_ids", [False, True], ids=["the-calls-message-id", "each-recipients-own-id"])
def test_the_send_record_statement_writes_what_the_orm_path_writes(
    own_ids, developers, stopped_clock, sequencers_started
):
    """One call's emails, of two memos: two claimed, one recorded sent before (its
    status and first send time stay; its text is the one sent last) and one a tracking
    event moved on before this record. The call's message id, or (SES, Postmark, …)
    each recipient's own."""
    memo, other = sending_memo("first"), sending_memo("second")
    deliveries = claimed(memo, developers["cn"], developers["ru"]) + claimed(other, developers["us"])
    deliveries += claimed(other, make_developer("kr-1", "KR"))
    recorded_before, moved_on = deliveries[1], deliveries[3]
    deliveries_record_sent(
        delivery_ids=[recorded_before.pk], message_id="<earlier@mg>", texts={recorded_before.pk: TEXTS[1]}
    )
    deliveries_record_sent(delivery_ids=[moved_on.pk], message_id="<earlier@mg>", texts={moved_on.pk: TEXTS[3]})
    assert delivery_advance(delivery=moved_on, to=D.DELIVERED)
    ids = [d.pk for d in deliveries]
    texts = dict(zip(ids, TEXTS, strict=True))
    message_id: str | dict[int, str] = {i: f"<own-{i}@p>" for i in ids} if own_ids else "<call@mg>"

    fast, orm = both_ways(
        lambda fast: deliveries_record_sent(delivery_ids=ids, message_id=message_id, texts=texts, fast=fast),
        stopped_clock,
        sequencers_started,
    )
    assert fast == orm
    _, started, written = fast
    assert sorted(started) == sorted([memo.pk, other.pk])
    assert [d["status"] for d in written["deliveries"]] == [D.SENT, D.SENT, D.SENT, D.DELIVERED]
    assert [d["sent_at"] for d in written["deliveries"]] == [NOW, EARLIER, NOW, EARLIER]
    expected_ids = [f"<own-{i}@p>" for i in ids] if own_ids else ["<call@mg>"] * len(ids)
    assert [d["provider_message_id"] for d in written["deliveries"]] == expected_ids
    assert len([r for r in written["records"] if r["created_at"] == NOW]) == 2  # a handover a memo


@postgresql_only
def test_the_handover_statement_writes_what_the_python_path_writes(developers, stopped_clock, sequencers_started):
    """The records of rows as they are (a reconciled call: no text hash), their times
    with and without a fraction of a second, the reasons' quotes and accents kept."""
    memo = sending_memo("handover")
    deliveries = claimed(memo, developers["cn"], developers["ru"], developers["us"])
    Delivery.objects.filter(pk=deliveries[0].pk).update(reason='CN is in region "Unsupported", café')
    for delivery, at in zip(deliveries, [EARLIER, NOW, NOW.replace(microsecond=7)], strict=True):
        stopped_clock.now = at
        deliveries_record_sent(delivery_ids=[delivery.pk], message_id=f"<{delivery.pk}@mg>", language="en")
    ids = [d.pk for d in deliveries]

    fast, orm = both_ways(
        lambda fast: evidence_record_handover(delivery_ids=ids, fast=fast), stopped_clock, sequencers_started
    )
    assert fast == orm
    assert fast[1] == [memo.pk]


def _delivery_in(status: str, memo: Memo, developer: Developer) -> Delivery:
    (delivery,) = claimed(memo, developer)
    if status != D.SENDING:  # sending: no message id yet, the event's is kept
        deliveries_record_sent(delivery_ids=[delivery.pk], message_id="<call@mg>", texts={delivery.pk: TEXTS[0]})
    if status not in (D.SENDING, D.SENT):
        assert delivery_advance(delivery=delivery, to=status)
    delivery.refresh_from_db()
    assert delivery.status == status
    return delivery


def _event(event_type: str, delivery_id: object, event_id: str = "evt-1") -> AnymailTrackingEvent:
    return AnymailTrackingEvent(
        event_type=event_type,
        event_id=event_id,
        metadata={"delivery_id": str(delivery_id)},
        message_id="<event@mg>",
        timestamp=EARLIER + dt.timedelta(hours=3),
        description="550 5.1.1 mailbox does not exist" if event_type in ("bounced", "rejected", "failed") else None,
        esp_event={"event": event_type, "severity": "permanent", "at": EARLIER},
    )


def _stored(event: DeliveryEvent | None) -> dict[str, Any] | None:
    """What delivery_record_event returns: the event stored (its id aside), or None."""
    if event is None:
        return None
    assert event.pk is not None
    return {f.attname: getattr(event, f.attname) for f in DeliveryEvent._meta.concrete_fields if f.name != "id"}


@postgresql_only
@pytest.mark.parametrize("start", [D.SENDING, D.SENT, D.DELIVERED, D.BOUNCED])
@pytest.mark.parametrize("event_type", [*STATUS_FOR_EVENT, "opened"])
def test_the_tracking_statement_writes_what_the_orm_path_writes(
    developers, stopped_clock, sequencers_started, event_type, start
):
    """Every event type anymail normalizes to a status, and one with none, on a delivery
    it moves on and on one already as far or further: the event stored, the delivery
    moved (or not), the address marked after a bounce or complaint, the evidence."""
    delivery = _delivery_in(start, sending_memo("tracked"), developers["cn"])
    event = _event(event_type, delivery.pk)

    fast, orm = both_ways(
        lambda fast: _stored(delivery_record_event(event=event, provider="mailgun", fast=fast)),
        stopped_clock,
        sequencers_started,
    )
    assert fast == orm
    assert fast[0] is not None and fast[1] == [delivery.memo_id]


@postgresql_only
def test_the_tracking_statement_stores_an_event_of_no_delivery_of_ours_and_ignores_a_replay(
    developers, stopped_clock, sequencers_started
):
    delivery = _delivery_in(D.SENT, sending_memo("tracked"), developers["cn"])
    stranger = _event("delivered", 10**9, event_id="evt-stranger")
    fast, orm = both_ways(
        lambda fast: _stored(delivery_record_event(event=stranger, provider="mailgun", fast=fast)),
        stopped_clock,
        sequencers_started,
    )
    assert fast == orm
    assert fast[0]["delivery_id"] is None and fast[1] == []
    assert {r["kind"] for r in fast[2]["records"]} == {EvidenceRecord.Kind.HANDOVER}  # the send's, before

    replayed = _event("bounced", delivery.pk)
    delivery_record_event(event=replayed, provider="mailgun", fast=False)
    fast, orm = both_ways(
        lambda fast: _stored(delivery_record_event(event=replayed, provider="mailgun", fast=fast)),
        stopped_clock,
        sequencers_started,
    )
    assert fast == orm
    assert fast[0] is None and fast[1] == []


def test_dispatch_writes_each_column_from_its_own_source(developers, stopped_clock):
    """deliveries_create's INSERT … SELECT (one statement on either database), against
    the row each column's source gives: a developer's own language and country, the
    rules' reason, and for an address that bounced, failed at once and why."""
    memo = make_memo()
    bounced = make_developer("cn-2", "CN", "zh-hans", email_status=Developer.EmailStatus.BOUNCED)
    everyone = Developer.objects.filter(country__in=["CN", "RU"])
    deliveries_create(memo=memo, developers=everyone)
    reasons = audience_reasons(memo)

    def expected(developer: Developer) -> dict[str, Any]:
        ok = developer.pk != bounced.pk
        return {
            "memo_id": memo.pk,
            "developer_id": developer.pk,
            "kind": Delivery.Kind.INITIAL,
            "sequence": 0,
            "status": D.QUEUED if ok else D.FAILED,
            "language": developer.language,
            "country": developer.country.code,
            "reason": reasons[developer.country.code],
            "provider_message_id": "",
            "attempts": 0,
            "not_before": None,
            "status_reason": "" if ok else "suppressed: the address bounced on an earlier email",
            "created_at": EARLIER,
            "sent_at": None,
            "status_changed_at": None if ok else EARLIER,
            "rendered_with": None,
            "text_hash": "",
        }

    written = {row.pop("developer_id"): row for row in rows(Delivery)}
    for row in written.values():
        del row["id"]
    assert written == {d.pk: {k: v for k, v in expected(d).items() if k != "developer_id"} for d in everyone}
    assert len(written) == 3
