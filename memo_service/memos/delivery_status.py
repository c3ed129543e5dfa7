"""The delivery's state machine: every change of Delivery.status is one function here.

    queued ─claim─► sending ─the provider took it─► sent ─tracking events─► delivered / bounced / complained
      ▲               ├─the provider never got it, or try later─► queued
      │               ├─refused─► failed
      │               ├─nobody can know─► outcome_unknown ─a Composer resends─► queued
      │               └─a reminder no longer needed─► skipped
      └─ the memo cancelled: queued ─► cancelled

A delivery is created queued by dispatch and reminders (failed at once, saying why, for
an address that bounced or complained before). Each function moves only rows still
in the status its transition starts from, in the statement that writes them, so a worker,
the sweeper and a tracking event racing for one row cannot both move it. Tracking events
move a delivery only up DELIVERY_RANK. `status_reason` says why a row is where it is (a
retry's error, a failure, a skip), cleared once the provider takes it.

Two writes have a PostgreSQL statement of their own beside the ORM path, each one round
trip with what goes with it: the send's record with its handover's evidence records
(_RECORD_SENT_SQL), and a tracking event's move with the event and its evidence records
(_ADVANCE_BY_EVENT_SQL). `fast=` chooses (the statement, by default, on PostgreSQL);
tests/test_fast_paths.py holds each to its ORM path, column by column.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import Case, Exists, F, OuterRef, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.lib.db import in_ids
from memo_service.memos.evidence.append import (
    EVENT_RECORDS_SQL,
    HANDOVER_RECORDS_SQL,
    HANDOVER_ROW_COLUMNS,
    event_records_params,
    evidence_record_handover,
    evidence_seal_soon,
    handover_records_write,
)
from memo_service.memos.models import DELIVERY_RANK, MEMO_MAY_SEND, Delivery, DeliveryEvent, Memo

DeliveryStatus = Delivery.Status
STATUS_REASON_MAX = 2000


def _claimable(now: dt.datetime) -> Q:
    """Queued, past any retry delay, of a memo whose emails may go out (a paused or
    cancelled memo's cannot be claimed: the check is in the claim's own statement)."""
    memo_out = Exists(Memo.objects.filter(pk=OuterRef("memo_id"), status__in=MEMO_MAY_SEND))
    return Q(status=DeliveryStatus.QUEUED) & (Q(not_before__isnull=True) | Q(not_before__lte=now)) & Q(memo_out)


def delivery_claim(*, delivery_id: int) -> bool:
    """Move one queued delivery to sending; False if someone else already has it, its
    memo is paused or cancelled, or it waits out a retry delay.

    Claiming one row just before its send means a crash leaves at most one call's rows in
    `sending` (one delivery, or with a batching backend the group of its one call), under
    the task's lease: recovery (send/reconcile.py) settles them.
    """
    now = timezone.now()
    # No join: with one, Django writes "UPDATE … WHERE id IN (SELECT …)" and PostgreSQL
    # re-checks only "id IN" after waiting for a concurrent claim, so both would win.
    # Here "status = 'queued'" is on the row itself and is re-checked.
    return bool(
        Delivery.objects.filter(_claimable(now), pk=delivery_id).update(
            status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, status_changed_at=now
        )
    )


def deliveries_claim(*, delivery_ids: list[int]) -> set[int]:
    """delivery_claim for a whole group at once (batching backends send them together
    anyway): rows another worker holds are skipped on PostgreSQL, serialized on SQLite."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(_claimable(now), id__in=in_ids(delivery_ids))
            .values_list("id", flat=True)
        )
        Delivery.objects.filter(id__in=in_ids(ids), status=DeliveryStatus.QUEUED).update(
            status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, status_changed_at=now
        )
    return set(ids)


class EmailText(NamedTuple):
    """What one email said: the language it was in, the developer's values it was
    rendered with as Delivery.rendered_with keeps them (context.stored_values), and
    the SHA-256 of the email as sent (emails.email_text_hash)."""

    language: str
    values: Sequence[Any]
    text_hash: str


# Delivery's columns for what an email said, by EmailText's field: (the column, how the
# JSON of the send's record gives it). Both paths write them from this.
_TEXT_COLUMNS = {
    "language": ("language", "->>"),
    "values": ("rendered_with", "->"),
    "text_hash": ("text_hash", "->>"),
}
# The ORM path's second statement, a row per email.
_TEXTS_SQL = (
    f"UPDATE {Delivery._meta.db_table} "
    f"SET {', '.join(f'{column} = %({field})s' for field, (column, _) in _TEXT_COLUMNS.items())} WHERE id = %(id)s"
)
# PostgreSQL: the send's record as one statement. The UPDATE takes the texts as one JSON
# parameter of arrays, [id, *EmailText] (psycopg quotes parameters in Python, and a
# thousand placeholders or array elements cost more than the rest), and the handover's
# records are built from the rows it returns (evidence/append.py's HANDOVER_RECORDS_SQL).
_RECORD_SENT_SQL = f"""
WITH d AS (
    UPDATE {Delivery._meta.db_table} d SET
        status = CASE WHEN d.status = %(sending)s THEN %(sent)s ELSE d.status END,
        provider_message_id = coalesce(v.value ->> 4, %(message_id)s), sent_at = coalesce(d.sent_at, %(sent_at)s),
        status_changed_at = %(now)s, status_reason = '',
        {", ".join(f"{_TEXT_COLUMNS[f][0]} = v.value {_TEXT_COLUMNS[f][1]} {n}" for n, f in enumerate(EmailText._fields, 1))}
    FROM jsonb_array_elements(%(texts)s::jsonb) AS v WHERE d.id = (v.value ->> 0)::bigint
    RETURNING {HANDOVER_ROW_COLUMNS}
){HANDOVER_RECORDS_SQL}"""


def deliveries_record_sent(
    *,
    delivery_ids: list[int],
    message_id: str | Mapping[int, str],
    language: str = "",
    accepted_at: dt.datetime | None = None,
    texts: Mapping[int, EmailText] | None = None,
    fast: bool | None = None,
) -> None:
    """Record the provider's acceptance of the emails one API call handed over (at
    `accepted_at` when the provider says when, reconciling a lost answer), what each
    said (`texts`, by delivery id: the send knows; reconciliation does not, and gives
    the `language` they were in), and their handover's evidence record
    (append.evidence_record_handover), together. A tracking event may have moved a
    status on already; the send time and message id are recorded all the same. An
    email sent again keeps the text sent last. `message_id`: the call's, or each
    delivery's own (a provider that gives each recipient an id). `fast`: with `texts`,
    the PostgreSQL statement (the default there) or the ORM path."""
    now = timezone.now()
    if texts and (connection.vendor == "postgresql" if fast is None else fast):
        _record_sent_postgresql(delivery_ids, message_id, accepted_at or now, now, texts)
        return
    with transaction.atomic(savepoint=False):
        Delivery.objects.filter(pk__in=in_ids(delivery_ids)).update(
            status=Case(When(status=DeliveryStatus.SENDING, then=Value(DeliveryStatus.SENT)), default=F("status")),
            provider_message_id=(
                message_id[:255]
                if isinstance(message_id, str)
                else Case(*(When(pk=i, then=Value(message_id[i][:255])) for i in delivery_ids), default=Value(""))
            ),
            language=language,
            sent_at=Coalesce(F("sent_at"), Value(accepted_at or now)),
            status_changed_at=now,
            status_reason="",
        )
        if texts:
            with connection.cursor() as cursor:
                cursor.executemany(_TEXTS_SQL, [{"id": i, **_text_row(texts[i])} for i in delivery_ids])
        evidence_record_handover(delivery_ids=delivery_ids, fast=fast)


def _text_row(text: EmailText) -> dict[str, str]:
    return {**text._asdict(), "values": json.dumps(text.values, ensure_ascii=False)}


def _record_sent_postgresql(
    delivery_ids: list[int],
    message_id: str | Mapping[int, str],
    sent_at: dt.datetime,
    now: dt.datetime,
    texts: Mapping[int, EmailText],
) -> None:
    """_RECORD_SENT_SQL: the rows recorded sent and their handover records written, in
    one statement (evidence/append.py tags the records in its transaction). Each row's
    own message id, if any, rides in its texts element."""
    own = None if isinstance(message_id, str) else message_id
    params: dict[str, Any] = {
        "sending": DeliveryStatus.SENDING,
        "sent": DeliveryStatus.SENT,
        "message_id": message_id[:255] if isinstance(message_id, str) else "",
        "sent_at": sent_at,
        "now": now,
        "texts": json.dumps(
            [[i, *texts[i], own[i][:255]] if own is not None else [i, *texts[i]] for i in delivery_ids],
            ensure_ascii=False,
        ),
    }
    handover_records_write(_RECORD_SENT_SQL, params)


def deliveries_record_unsent(
    *, delivery_ids: list[int], reason: str, claimed_before: dt.datetime | None = None
) -> list[int]:
    """The provider never got these (it said so, or they were never sent): back to
    queued, to be sent again; returns those it moved. `claimed_before`: only rows still
    in the claim that was looked at (one claimed again since is another worker's)."""
    claimed = Q(status_changed_at__lt=claimed_before) if claimed_before else Q()
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update()
            .filter(claimed, id__in=in_ids(delivery_ids), status=DeliveryStatus.SENDING)
            .values_list("id", flat=True)
        )
        Delivery.objects.filter(id__in=in_ids(ids), status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.QUEUED,
            status_reason=reason[:STATUS_REASON_MAX],
            not_before=None,
            status_changed_at=timezone.now(),
        )
    return ids


def deliveries_record_unknown(
    *, delivery_ids: list[int], reason: str, claimed_before: dt.datetime | None = None
) -> int:
    """Nobody can know whether the provider has these: "outcome unknown", with why."""
    claimed = Q(status_changed_at__lt=claimed_before) if claimed_before else Q()
    return Delivery.objects.filter(claimed, id__in=in_ids(delivery_ids), status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.OUTCOME_UNKNOWN,
        status_reason=reason[:STATUS_REASON_MAX],
        status_changed_at=timezone.now(),
    )


def delivery_record_retry(*, delivery_id: int, error: str, not_before: dt.datetime) -> None:
    """A transient failure: back to queued, not to be tried before `not_before`."""
    Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.QUEUED,
        status_reason=error[:STATUS_REASON_MAX],
        not_before=not_before,
        status_changed_at=timezone.now(),
    )


def delivery_record_failure(*, delivery_id: int, error: str, outcome_unknown: bool = False) -> None:
    """A send that failed (the provider refused or never got it), or whose outcome is
    unknown (it may have been accepted: tracking events will tell)."""
    Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.OUTCOME_UNKNOWN if outcome_unknown else DeliveryStatus.FAILED,
        status_reason=error[:STATUS_REASON_MAX],
        status_changed_at=timezone.now(),
    )


def delivery_record_skipped(*, delivery_id: int, reason: str) -> None:
    Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SKIPPED, status_reason=reason[:STATUS_REASON_MAX], status_changed_at=timezone.now()
    )


def deliveries_cancel_queued(*, memo: Memo, withdrawn: bool = False) -> int:
    """The memo was cancelled or withdrawn: what is still queued will never be sent, and
    its reason says which. Returns how many."""
    return Delivery.objects.filter(memo=memo, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.CANCELLED,
        status_reason=f"not sent: the memo was {'withdrawn' if withdrawn else 'cancelled'}",
        status_changed_at=timezone.now(),
    )


def deliveries_requeue_unknown(*, memo: Memo, reason: str) -> list[int]:
    """Every delivery of the memo whose outcome nobody can know, queued to be sent again;
    returns their ids. Call inside a transaction (the rows stay locked until it ends)."""
    ids = list(
        Delivery.objects.select_for_update()
        .filter(memo=memo, status=DeliveryStatus.OUTCOME_UNKNOWN)
        .order_by("id")
        .values_list("id", flat=True)
    )
    Delivery.objects.filter(id__in=ids, status=DeliveryStatus.OUTCOME_UNKNOWN).update(
        status=DeliveryStatus.QUEUED,
        not_before=None,
        status_changed_at=timezone.now(),
        status_reason=reason[:STATUS_REASON_MAX],
    )
    return ids


def _advance_changes(delivery: Any, to: str, reason: str, message_id: str) -> dict[str, Any]:
    changes: dict[str, Any] = {"status": to, "status_changed_at": timezone.now()}
    if to == DeliveryStatus.FAILED and reason:
        changes["status_reason"] = reason[:STATUS_REASON_MAX]
    if message_id and not delivery.provider_message_id:
        changes["provider_message_id"] = message_id[:255]
    return changes


def _below(to: str) -> list[str]:
    return [status for status, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[DeliveryStatus(to)]]


def delivery_advance(*, delivery: Any, to: str, reason: str = "", message_id: str = "") -> bool:
    """A tracking event's status, if it is further along DELIVERY_RANK than the row; False
    when the row already is as far or further. `reason` is kept for a failure; the
    provider's `message_id` only where none was recorded. `delivery`: anything with the
    row's `id` and `provider_message_id`."""
    changes = _advance_changes(delivery, to, reason, message_id)
    return bool(Delivery.objects.filter(pk=delivery.id, status__in=_below(to)).update(**changes))


# The columns delivery_advance writes (_advance_changes's keys); the statement below
# leaves one _advance_changes does not give as it is.
_ADVANCE_COLUMNS = ("status", "status_changed_at", "status_reason", "provider_message_id")
# A tracking event's row: its columns, each with its parameter.
_EVENT_VALUES = {
    column: f"%(event_{column})s"
    for column in (
        "provider",
        "event_id",
        "event_type",
        "delivery_id",
        "message_id",
        "description",
        "occurred_at",
        "received_at",
    )
} | {"payload": "%(event_payload)s::jsonb"}
# After a bounce or complaint it moved, the developer's address is marked, so no later
# memo is mailed to it: in the statement of such events alone, since planned into every
# event's statement it made each one's planning a quarter slower.
_MARK_ADDRESS = f"""
), address AS (
    UPDATE {Developer._meta.db_table} SET email_status = %(address)s WHERE id IN (SELECT developer_id FROM moved)"""
# PostgreSQL: a tracking event stored once and applied, in one statement, by whether it
# marks an address: the event (ON CONFLICT DO NOTHING where the ORM path catches the
# IntegrityError); its delivery moved as delivery_advance moves it, only if the event
# is new (PostgreSQL re-checks the guard on a row a concurrent event just moved); the
# address; and the evidence records (evidence/append.py's EVENT_RECORDS_SQL). Each part
# does nothing when its parameters are NULL: no delivery of ours, no status for that
# event.
_ADVANCE_BY_EVENT_SQL = {
    marks_address: f"""
WITH event AS (
    INSERT INTO {DeliveryEvent._meta.db_table} ({", ".join(_EVENT_VALUES)})
    VALUES ({", ".join(_EVENT_VALUES.values())})
    ON CONFLICT (provider, event_id) DO NOTHING RETURNING id
), moved AS (
    UPDATE {Delivery._meta.db_table}
    SET {", ".join(f"{column} = coalesce(%(set_{column})s, {column})" for column in _ADVANCE_COLUMNS)}
    WHERE id = %(delivery_id)s AND status = ANY(%(below)s) AND EXISTS (SELECT FROM event)
    RETURNING developer_id{_MARK_ADDRESS if marks_address else ""}
), records AS ({EVENT_RECORDS_SQL}
)
SELECT id FROM event"""
    for marks_address in (False, True)
}


def delivery_advance_by_event(
    *,
    event: DeliveryEvent,
    delivery: Any | None,
    to: str | None,
    address: str | None = None,
    reason: str = "",
    message_id: str = "",
) -> bool:
    """PostgreSQL: tracking.delivery_record_event's transaction as one statement
    (an _ADVANCE_BY_EVENT_SQL): `event` stored (its pk set) unless it was seen before, its
    `delivery` (anything with the row's id, memo_id and provider_message_id; None: none
    of ours) moved to `to` as delivery_advance moves it, the developer's email status
    set to `address` if it moved, and the evidence records. One round trip for the writes
    instead of five or six (BEGIN, three or four statements, COMMIT), and no ORM to
    compose them: on two cores the ORM and the round trips were most of the webhook's
    cost. False for an event seen before."""
    changes, below = {}, []
    if delivery is not None and to is not None:
        changes, below = _advance_changes(delivery, to, reason, message_id), _below(to)
    assert changes.keys() <= set(_ADVANCE_COLUMNS), changes.keys()
    params = {f"event_{column}": getattr(event, column) for column in _EVENT_VALUES} | {
        "event_payload": json.dumps(event.payload),
        **{f"set_{column}": changes.get(column) for column in _ADVANCE_COLUMNS},
        "delivery_id": delivery.id if delivery is not None else None,
        "below": below,
        "address": address,
        **event_records_params(event=event, memo_id=delivery.memo_id if delivery else None, status=to),
    }
    with connection.cursor() as cursor:
        cursor.execute(_ADVANCE_BY_EVENT_SQL[address is not None], params)
        row = cursor.fetchone()
    if row is None:
        return False  # seen before: the provider retried or replayed it
    event.pk = row[0]
    if delivery is not None:
        evidence_seal_soon(delivery.memo_id)
    return True
