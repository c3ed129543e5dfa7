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

from memo_service.lib.db import in_ids
from memo_service.memos.evidence.append import evidence_record_handover
from memo_service.memos.models import DELIVERY_RANK, MEMO_OUT, Delivery, Memo

DeliveryStatus = Delivery.Status
STATUS_REASON_MAX = 2000


def _claimable(now: dt.datetime) -> Q:
    """Queued, past any retry delay, of a memo whose emails may go out (a paused or
    cancelled memo's cannot be claimed: the check is in the claim's own statement)."""
    memo_out = Exists(Memo.objects.filter(pk=OuterRef("memo_id"), status__in=MEMO_OUT))
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


def deliveries_record_sent(
    *,
    delivery_ids: list[int],
    message_id: str,
    language: str = "",
    accepted_at: dt.datetime | None = None,
    texts: Mapping[int, EmailText] | None = None,
) -> None:
    """Record the provider's acceptance of the emails one API call handed over (at
    `accepted_at` when the provider says when, reconciling a lost answer), what each
    said (`texts`, by delivery id: the send knows; reconciliation does not, and gives
    the `language` they were in), and their handover's evidence record
    (chain.evidence_record_handover), together. A tracking event may have moved a
    status on already; the send time and message id are recorded all the same. An
    email sent again keeps the text sent last."""
    now = timezone.now()
    if texts and connection.vendor == "postgresql":
        _record_sent_postgresql(delivery_ids, message_id[:255], accepted_at or now, now, texts)
        return
    with transaction.atomic(savepoint=False):
        Delivery.objects.filter(pk__in=in_ids(delivery_ids)).update(
            status=Case(When(status=DeliveryStatus.SENDING, then=Value(DeliveryStatus.SENT)), default=F("status")),
            provider_message_id=message_id[:255],
            language=language,
            sent_at=Coalesce(F("sent_at"), Value(accepted_at or now)),
            status_changed_at=now,
            status_reason="",
        )
        if texts:
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {Delivery._meta.db_table} SET language = %s, rendered_with = %s, text_hash = %s "
                    "WHERE id = %s",
                    [(*_text_row(texts[i]), i) for i in delivery_ids],
                )
        evidence_record_handover(delivery_ids=delivery_ids)


def _text_row(text: EmailText) -> tuple[str, str, str]:
    return text.language, json.dumps(text.values, ensure_ascii=False), text.text_hash


def _record_sent_postgresql(
    delivery_ids: list[int], message_id: str, sent_at: dt.datetime, now: dt.datetime, texts: Mapping[int, EmailText]
) -> None:
    """The same in one statement: the UPDATE, with the texts as one JSON parameter of
    arrays (psycopg quotes parameters in Python, and a thousand placeholders or array
    elements cost more than the rest), runs inside the handover's INSERT, which builds
    its lines from the rows the UPDATE returns."""
    update = (
        f"UPDATE {Delivery._meta.db_table} d SET "
        "status = CASE WHEN d.status = %s THEN %s ELSE d.status END, provider_message_id = %s, "
        "sent_at = coalesce(d.sent_at, %s), status_changed_at = %s, status_reason = '', "
        "language = v.value ->> 1, rendered_with = v.value -> 2, text_hash = v.value ->> 3 "
        "FROM jsonb_array_elements(%s::jsonb) AS v WHERE d.id = (v.value ->> 0)::bigint"
    )
    rows = json.dumps([[i, *texts[i]] for i in delivery_ids], ensure_ascii=False)
    params = [DeliveryStatus.SENDING, DeliveryStatus.SENT, message_id, sent_at, now, rows]
    evidence_record_handover(delivery_ids=delivery_ids, written_by=(update, params))


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


def deliveries_cancel_queued(*, memo: Memo) -> int:
    """The memo was cancelled: what is still queued will never be sent. Returns how many."""
    return Delivery.objects.filter(memo=memo, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.CANCELLED,
        status_reason="not sent: the memo was cancelled",
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


def delivery_advance_sql(*, delivery: Any, to: str, reason: str = "", message_id: str = "") -> tuple[str, list[Any]]:
    """delivery_advance as the SQL of its UPDATE ("UPDATE … SET … WHERE id = %s AND status
    IN (…)", the same guard) and its parameters, for a caller that runs it inside a
    statement of its own and adds conditions and RETURNING: tracking's one statement per
    event on PostgreSQL, where PostgreSQL re-checks the guard on a row a concurrent event
    just moved."""
    changes = _advance_changes(delivery, to, reason, message_id)
    below = _below(to)
    sql = (
        f"UPDATE {Delivery._meta.db_table} SET {', '.join(f'{column} = %s' for column in changes)} "
        f"WHERE id = %s AND status IN ({', '.join(['%s'] * len(below))})"
    )
    return sql, [*changes.values(), delivery.id, *below]
