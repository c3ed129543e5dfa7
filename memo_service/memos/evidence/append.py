"""Writing evidence: append-only, no lock, each record tagged by the process that writes
it (tags.py) in the transaction that writes the row it proves.

The request path (an answer, a webhook) and a send task only insert pending records;
the memo's sequencer (sequencer.py, a Celery task started after commit and by beat)
chains them later, off the request path.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

from celery import current_app
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from memo_service.lib.db import in_ids
from memo_service.memos.evidence.payloads import (
    DELIVERY_FIELDS,
    HANDOVER_FIELDS,
    delivery_payload,
    event_payload,
    handover_payload,
    status_payload,
)
from memo_service.memos.evidence.tags import record_tag
from memo_service.memos.models import Delivery, DeliveryEvent, EvidenceRecord

log = logging.getLogger(__name__)
Kind = EvidenceRecord.Kind
# A sequencer starts this many seconds after the first pending record a process wrote,
# and takes everything that came in meanwhile: at most one start per memo per second
# from each process, however many events arrive.
SEAL_DELAY_S = 1

started_here: dict[int, float] = {}  # memo id -> when this process last started its sequencer (monotonic)


def evidence_seal_soon(memo_id: int) -> None:
    """Start the memo's sequencer after commit, unless this process started one that has
    not begun yet (it will take this record too)."""

    def start() -> None:
        # This process's own memory first: under a flood of webhooks the shared cache
        # (a network call with Redis as CACHE_URL) is asked once a second, not per event.
        now = time.monotonic()
        if now - started_here.get(memo_id, -SEAL_DELAY_S) < SEAL_DELAY_S:
            return
        started_here[memo_id] = now
        evidence_seal_later(memo_id)

    transaction.on_commit(start)


def evidence_seal_later(memo_id: int) -> None:
    """Start the memo's sequencer in SEAL_DELAY_S seconds, unless any process started
    one that will begin by then."""
    if cache.add(f"evidence-seal:{memo_id}", 1, SEAL_DELAY_S):
        try:
            current_app.tasks["memos.evidence_seal"].apply_async(args=[memo_id], countdown=SEAL_DELAY_S)
        except Exception as exc:  # noqa: BLE001  (the record is stored; beat's sweep chains it within a minute)
            log.warning("evidence: memo %s: could not start its sequencer (%s)", memo_id, type(exc).__name__)


def pending_record(
    *, memo_id: int, kind: str, object_id: int, payload: dict[str, Any], size: int = 1
) -> EvidenceRecord:
    """A pending record as its writer makes it: created now, and tagged."""
    now = timezone.now()
    tag = record_tag(memo_id=memo_id, kind=kind, object_id=object_id, payload=payload, created_at=now)
    return EvidenceRecord(
        memo_id=memo_id, kind=kind, object_id=object_id, payload=payload, size=size, created_at=now, tag=tag
    )


def evidence_append(*, memo_id: int, kind: str, object_id: int, payload: dict[str, Any]) -> EvidenceRecord:
    """Add a pending record; call inside the transaction that writes the row it proves."""
    record = pending_record(memo_id=memo_id, kind=kind, object_id=object_id, payload=payload)
    record.save(force_insert=True)
    evidence_seal_soon(memo_id)
    return record


def evidence_record_event(*, event: DeliveryEvent, memo_id: int, status: str | None) -> None:
    """Pending records of a tracking event and, when it moved its delivery on, of the
    status change: one statement, inside the transaction that stored the event."""
    EvidenceRecord.objects.bulk_create(event_records(event=event, memo_id=memo_id, status=status))
    evidence_seal_soon(memo_id)


def event_records(*, event: DeliveryEvent, memo_id: int, status: str | None) -> list[EvidenceRecord]:
    """The records of a tracking event (and its status change), tagged before the event
    has a row id: tracking.py's one statement stores them with the event."""
    records = [pending_record(memo_id=memo_id, kind=Kind.EVENT, object_id=event.pk or 0, payload=event_payload(event))]
    if status is not None:
        assert event.delivery_id is not None  # a status change comes only with the event's delivery (tracking.py)
        payload = status_payload(delivery_id=event.delivery_id, status=status, event=event)
        records.append(pending_record(memo_id=memo_id, kind=Kind.STATUS, object_id=event.delivery_id, payload=payload))
    return records


# A tracking event's pending records as a statement's CTE over `event` (the stored
# event's id; no row for an event seen before) and `moved` (a row when the event moved
# its delivery on): the event's record, and the status change's when it moved. Tagged
# before the event has its row id (tags.py): an event's record names it by the
# provider's id for it. No records for an event of no delivery of ours. Its parameters
# are event_records_params's.
EVENT_RECORDS_SQL = f"""
INSERT INTO {EvidenceRecord._meta.db_table}
    (memo_id, kind, object_id, payload, size, prev_hash, hash, created_at, tag, refused)
SELECT %(records_memo_id)s::bigint, %(event_record_kind)s, event.id, %(event_record_payload)s::jsonb,
       1, '', '', %(event_record_created_at)s::timestamptz, %(event_record_tag)s, false
FROM event WHERE %(records_memo_id)s::bigint IS NOT NULL
UNION ALL
SELECT %(records_memo_id)s::bigint, %(status_record_kind)s, %(status_record_object_id)s::bigint,
       %(status_record_payload)s::jsonb, 1, '', '', %(status_record_created_at)s::timestamptz,
       %(status_record_tag)s, false
FROM event, moved"""


def event_records_params(*, event: DeliveryEvent, memo_id: int | None, status: str | None) -> dict[str, Any]:
    """EVENT_RECORDS_SQL's parameters: the records event_records makes of the event of
    a delivery of memo `memo_id` (None: no delivery of ours), and of its move to
    `status` (None: no status for that event)."""
    records = event_records(event=event, memo_id=memo_id, status=status) if memo_id is not None else []
    params: dict[str, Any] = {"records_memo_id": memo_id}
    for prefix, record in zip(("event_record", "status_record"), [*records, None, None], strict=False):
        params |= _record_params(prefix, record)
    return params


def _record_params(prefix: str, record: EvidenceRecord | None) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(("kind", "object_id", "payload", "created_at", "tag"))
    if record is not None:
        values = {
            "kind": record.kind,
            "object_id": record.object_id,
            "payload": json.dumps(record.payload),
            "created_at": record.created_at,
            "tag": record.tag,
        }
    return {f"{prefix}_{name}": value for name, value in values.items()}


def evidence_record_handover(*, delivery_ids: list[int], fast: bool | None = None) -> None:
    """What the provider just accepted in one call: one pending handover record per
    memo listing what each of the call's Delivery rows says (developer, country,
    language, message id, time, text hash, why they were told: `delivery_payload`), as
    the rows are now. deliveries_record_sent calls it in the transaction that records the
    rows sent, when it has no statement of its own that writes the records (it has one
    on PostgreSQL: HANDOVER_RECORDS_SQL). One record per call, not per email: at a
    thousand emails a call the chain, the sequencer and the verification handle a
    thousandth of the rows. Emails the provider reported taking after their worker died
    (reconcile.py) are recorded the same way, with no text hash: the text sent is not
    known, and the developer's page says nothing it cannot prove. `fast`: the
    PostgreSQL statement (the default there) or the Python path."""
    if not delivery_ids:
        return
    if connection.vendor == "postgresql" if fast is None else fast:
        handover_records_write(_HANDOVER_OF_ROWS_SQL, {"delivery_ids": delivery_ids})
        return
    for memo_id in _handover(delivery_ids):
        evidence_seal_soon(memo_id)


# handover_payload's line in SQL, over a Delivery row `d` (HANDOVER_FIELDS in order):
# sent_at as Python's isoformat of the UTC time the database gives back (no fraction
# when it is zero). A test holds the two to each other (test_fast_paths.py).
_HANDOVER_LINE_SQL = """json_build_array(
    d.id, d.developer_id, d.country, d.language, d.provider_message_id,
    to_char(d.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE to_char(d.sent_at, 'US') WHEN '000000' THEN '' ELSE to_char(d.sent_at, '.US') END || '+00:00',
    d.text_hash, d.reason)::text"""
# What HANDOVER_RECORDS_SQL reads of each row `d`: a statement that writes the rows
# returns these (RETURNING), or one that reads them selects them.
HANDOVER_ROW_COLUMNS = (
    "d.id, d.memo_id, d.developer_id, d.country, d.language, d.provider_message_id, d.sent_at, d.text_hash, d.reason"
)
# The handover records of the Delivery rows `d` (a statement's CTE): one a memo, its
# lines built by the database from the rows, not read back to build them. Its RETURNING
# rows are tagged, and its parameters given, by handover_records_write.
HANDOVER_RECORDS_SQL = f"""
INSERT INTO {EvidenceRecord._meta.db_table}
    (memo_id, object_id, kind, payload, size, prev_hash, hash, created_at, tag, refused)
SELECT d.memo_id, min(d.id), %(handover_kind)s,
       jsonb_build_object('fields', %(handover_fields)s::jsonb,
                          'lines', string_agg({_HANDOVER_LINE_SQL}, E'\\n' ORDER BY d.id)),
       count(*), '', '', %(handover_created_at)s, '', false
FROM d GROUP BY d.memo_id
RETURNING id, memo_id, object_id, payload ->> 'lines'"""
# The handovers of the rows as they are now (the ids as in_ids passes them).
_HANDOVER_OF_ROWS_SQL = f"""
WITH d AS (
    SELECT {HANDOVER_ROW_COLUMNS} FROM {Delivery._meta.db_table} d
    WHERE d.id IN (SELECT unnest(%(delivery_ids)s::bigint[]))
){HANDOVER_RECORDS_SQL}"""


def handover_records_write(sql: str, params: dict[str, Any]) -> None:
    """Run `sql`, a statement ending in HANDOVER_RECORDS_SQL, with `params`; tag the
    records it wrote and start their memos' sequencers. One transaction (a send's record
    runs in autocommit): a sequencer must never see a record before its tag, or it would
    refuse a genuine handover."""
    created_at = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            sql,
            params
            | {
                "handover_kind": Kind.HANDOVER,
                "handover_fields": json.dumps(HANDOVER_FIELDS),
                "handover_created_at": created_at,
            },
        )
        memo_ids = _handover_records_tag(cursor, cursor.fetchall(), created_at)
    for memo_id in memo_ids:
        evidence_seal_soon(memo_id)


def _handover_records_tag(cursor: Any, written: list[tuple[Any, ...]], created_at: dt.datetime) -> set[int]:
    """Tag the records HANDOVER_RECORDS_SQL wrote (`written`, the rows it returned), in
    its transaction: the database built their lines, the worker tags them, so the
    database never holds the tag's key. Returns their memos."""
    tags = [
        {
            "id": record_id,
            "tag": record_tag(
                memo_id=memo_id,
                kind=Kind.HANDOVER,
                object_id=object_id,
                payload={"fields": list(HANDOVER_FIELDS), "lines": lines},
                created_at=created_at,
            ),
        }
        for record_id, memo_id, object_id, lines in written
    ]
    cursor.executemany(f"UPDATE {EvidenceRecord._meta.db_table} SET tag = %(tag)s WHERE id = %(id)s", tags)
    return {row[1] for row in written}


def _handover(delivery_ids: list[int]) -> set[int]:
    """The same, from the rows read back (SQLite, the tests' database): returns the memos."""
    by_memo: dict[int, list[dict[str, Any]]] = {}
    rows = Delivery.objects.filter(id__in=in_ids(delivery_ids)).order_by("id").values("memo_id", *DELIVERY_FIELDS)
    for row in rows:
        by_memo.setdefault(row["memo_id"], []).append(delivery_payload(row))
    EvidenceRecord.objects.bulk_create(
        pending_record(
            memo_id=memo_id,
            kind=Kind.HANDOVER,
            object_id=entries[0]["delivery"],
            payload=handover_payload(entries),
            size=len(entries),
        )
        for memo_id, entries in by_memo.items()
    )
    return set(by_memo)
