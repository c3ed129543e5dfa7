"""The evidence chain: every answer, provider event, handover of an email and later
change of its status, hash-chained per memo and sealed by signed checkpoints.

Writing is append-only and takes no lock: the request path (an answer, a webhook) and a
send task only insert records, pending. One sequencer per memo (`evidence_seal`, a
Celery task started after commit and by beat) takes the pending records in the order
they came, in batches, gives each its place and hash, and signs a checkpoint
(checkpoints.py) in the same transaction: a sequencer killed mid-batch leaves the chain
as it was, and a second one waits for the memo's lock, then continues where the first
stopped (the unique (memo, seq) is the last guard against a fork).

Each record holds a canonical copy of what it proves (never the email, name or
organisation, so erasure does not break it). `evidence_verify` recomputes the chain,
compares each record with the row it stands for, checks every checkpoint's signature
and that the chain reaches the newest one; `evidence_verify_against` checks that the
chain still begins with the one an earlier export recorded.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from memo_service.db import in_ids, row_lock, snapshot
from memo_service.memos.evidence import checkpoints
from memo_service.memos.evidence.checkpoints import GENESIS, record_hash
from memo_service.memos.models import (
    Answer,
    Delivery,
    DeliveryEvent,
    EvidenceCheckpoint,
    EvidenceRecord,
    Memo,
    SentText,
)

log = logging.getLogger(__name__)
K = EvidenceRecord.Kind
PAGE = 2_000  # records per query while verifying: memory stays flat
# Records chained per sealing step (one transaction, one checkpoint): big enough that a
# flood of webhooks costs a checkpoint per thousand events, small enough that a step
# holds the memo's sequencer lock for well under a second.
SEAL_BATCH = 1_000
# A sequencer starts this many seconds after the first pending record a process wrote,
# and takes everything that came in meanwhile: at most one start per memo per second
# from each process, however many events arrive.
SEAL_DELAY_S = 1


def answer_payload(answer: Answer) -> dict[str, Any]:
    payload = {
        "developer": answer.developer.external_id,
        "response": answer.response,
        "comment": answer.comment,
        "country_claimed": str(answer.country_claimed or ""),
        "created_at": answer.created_at.isoformat(),
        "content_hash": answer.content_hash,
        "ip_address": answer.ip_address,
        "user_agent": answer.user_agent,
        "seconds_since_delivery": answer.seconds_since_delivery,
        "suspected_automation": answer.suspected_automation,
        "automation_reasons": answer.automation_reasons,
        "text_hash": answer.text_hash,
    }
    # Only answers from another channel than the email link say which: the records
    # chained before channels existed keep verifying as they were written.
    if answer.channel != Answer.Channel.EMAIL_LINK:
        payload["channel"] = answer.channel
        payload["api_client"] = answer.api_client_id
    return payload


def event_payload(event: DeliveryEvent) -> dict[str, Any]:
    # Not the provider's raw payload: erasure scrubs addresses out of it.
    return {
        "provider": event.provider,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "delivery": event.delivery_id,
        "message_id": event.message_id,
        # In UTC, as the database gives it back: a provider's own offset is not evidence.
        "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat() if event.occurred_at else None,
    }


def status_payload(*, delivery_id: int, status: str) -> dict[str, Any]:
    """A status change's record, but for the key "event": the id of the event that moved
    it, added by whoever stored that event."""
    return {"delivery": delivery_id, "status": status, "at": timezone.now().isoformat()}


# What a handover record proves of a delivery, read by the sequencer from the row.
DELIVERY_FIELDS = (
    "id",
    "developer_id",
    "country",
    "language",
    "provider_message_id",
    "sent_at",
    "sent_text__text_hash",
)


def delivery_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivery": row["id"],
        "developer": row["developer_id"],
        "country": row["country"],
        "language": row["language"],
        "message_id": row["provider_message_id"],
        "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
        "text_hash": row["sent_text__text_hash"] or "",
    }


# --- writing: append-only, no lock ------------------------------------------------------


started_here: dict[int, float] = {}  # memo id -> when this process last started its sequencer (monotonic)


def evidence_seal_soon(memo_id: int) -> None:
    """Start the memo's sequencer after commit, unless this process started one that has
    not begun yet (it will take this record too). Call it after writing pending records
    in SQL of your own (tracking.py); `evidence_append` and the others here already do."""

    def start() -> None:
        # This process's own memory first: under a flood of webhooks the shared cache
        # (a network call with Redis as CACHE_URL) is asked once a second, not per event.
        now = time.monotonic()
        if now - started_here.get(memo_id, -SEAL_DELAY_S) < SEAL_DELAY_S:
            return
        started_here[memo_id] = now
        if cache.add(f"evidence-seal:{memo_id}", 1, SEAL_DELAY_S):
            try:
                current_app.tasks["memos.evidence_seal"].apply_async(args=[memo_id], countdown=SEAL_DELAY_S)
            except Exception as exc:  # noqa: BLE001  (the record is stored; beat's sweep chains it within a minute)
                log.warning("evidence: memo %s: could not start its sequencer (%s)", memo_id, type(exc).__name__)

    transaction.on_commit(start)


def evidence_append(*, memo_id: int, kind: str, object_id: int, payload: dict[str, Any]) -> EvidenceRecord:
    """Add a pending record; call inside the transaction that writes the row it proves.
    It is chained by the memo's sequencer, off the request path."""
    record = EvidenceRecord.objects.create(memo_id=memo_id, kind=kind, object_id=object_id, payload=payload)
    evidence_seal_soon(memo_id)
    return record


# (delivery id, the developer's values it was rendered with, SHA-256 of the email as sent)
SentEmail = tuple[int, dict[str, Any], str]
# A delivery sent again (the idempotent backend resends one whose outcome was unknown):
# its text is the last one sent, and it gets a second handover record.
RESENT = (
    "ON CONFLICT (delivery_id) DO UPDATE SET rendered_with = excluded.rendered_with, text_hash = excluded.text_hash"
)


def evidence_record_deliveries(*, sent: list[SentEmail]) -> None:
    """What the provider just accepted: each email's values and text hash (SentText, for
    the developer's page) and a pending handover record for each, whatever the call's
    size in one statement on PostgreSQL (two elsewhere). The sequencer reads what a
    handover proves (developer, country, language, message id, time, text hash) from
    the rows when it chains them."""
    if not sent:
        return
    texts, records = SentText._meta.db_table, EvidenceRecord._meta.db_table
    deliveries = Delivery._meta.db_table
    handover = f"SELECT d.memo_id, d.id, %s, %s, %s, %s, %s FROM {deliveries} d"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The call's rows as one JSON parameter: psycopg quotes parameters in Python,
            # and a thousand placeholders or array elements cost more than the rest.
            cursor.execute(
                "WITH sent AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, rendered_with jsonb, text_hash text)), "
                f"texts AS (INSERT INTO {texts} (delivery_id, rendered_with, text_hash) SELECT * FROM sent {RESENT}), "
                f"handed AS (INSERT INTO {records} (memo_id, object_id, kind, payload, prev_hash, hash, created_at) "
                f"{handover} JOIN sent ON sent.id = d.id RETURNING memo_id) "
                "SELECT DISTINCT memo_id FROM handed",
                [
                    json.dumps(
                        [{"id": s[0], "rendered_with": s[1], "text_hash": s[2]} for s in sent], ensure_ascii=False
                    ),
                    K.DELIVERY,
                    "{}",
                    "",
                    "",
                    timezone.now(),
                ],
            )
        else:
            cursor.executemany(
                f"INSERT INTO {texts} (delivery_id, rendered_with, text_hash) VALUES (%s, %s, %s) {RESENT}",
                [(s[0], json.dumps(s[1], ensure_ascii=False), s[2]) for s in sent],
            )
            ids = ",".join(str(int(s[0])) for s in sent)
            cursor.execute(
                f"INSERT INTO {records} (memo_id, object_id, kind, payload, prev_hash, hash, created_at) "
                f"{handover} WHERE d.id IN ({ids}) RETURNING memo_id",
                [K.DELIVERY, "{}", "", "", timezone.now()],
            )
        memo_ids = {row[0] for row in cursor.fetchall()}
    for memo_id in memo_ids:
        evidence_seal_soon(memo_id)


def evidence_record_handover(*, memo_id: int, delivery_ids: list[int]) -> None:
    """Pending handover records of emails the provider took while nobody kept their text
    (its events said so after the worker that sent them died: reconcile.py). The
    sequencer reads what they prove from the rows, with no text hash: the text sent is
    not known, and the developer's page says nothing it cannot prove."""
    EvidenceRecord.objects.bulk_create(
        [
            EvidenceRecord(memo_id=memo_id, kind=K.DELIVERY, object_id=delivery_id, payload={}, prev_hash="", hash="")
            for delivery_id in delivery_ids
        ]
    )
    evidence_seal_soon(memo_id)


def evidence_record_event(*, event: DeliveryEvent, memo_id: int, status: str | None) -> None:
    """Pending records of a tracking event and, when it moved its delivery on, of the
    status change: one statement, inside the transaction that stored the event."""
    records = [EvidenceRecord(memo_id=memo_id, kind=K.EVENT, object_id=event.pk, payload=event_payload(event))]
    if status is not None:
        assert event.delivery_id is not None  # a status change comes only with the event's delivery (tracking.py)
        payload = {**status_payload(delivery_id=event.delivery_id, status=status), "event": event.pk}
        records.append(EvidenceRecord(memo_id=memo_id, kind=K.STATUS, object_id=event.delivery_id, payload=payload))
    EvidenceRecord.objects.bulk_create(records)
    evidence_seal_soon(memo_id)


# --- the sequencer -------------------------------------------------------------------------


def evidence_seal(*, memo_id: int, batch: int = SEAL_BATCH) -> int:
    """Chain the memo's pending records, a batch per transaction and checkpoint; returns
    how many were chained."""
    total = 0
    while True:
        chained = _seal_step(memo_id, batch)
        total += chained
        if chained < batch:
            return total


def _seal_step(memo_id: int, batch: int) -> int:
    with transaction.atomic():
        row_lock(Memo.objects.filter(pk=memo_id))  # the memo's sequencer lock; only sequencers take it
        last = (
            EvidenceRecord.objects.filter(memo_id=memo_id, seq__isnull=False)
            .order_by("-seq")
            .values_list("seq", "hash")
            .first()
        )
        seq, prev_hash = last or (0, GENESIS)
        assert seq is not None  # `last` is of a record with seq__isnull=False
        pending = list(
            EvidenceRecord.objects.filter(memo_id=memo_id, seq__isnull=True)
            .order_by("id")
            .values_list("id", "kind", "object_id", "payload")[:batch]
        )
        if not pending:
            return 0
        handed_over = [object_id for _, kind, object_id, _ in pending if kind == K.DELIVERY]
        deliveries = {
            row["id"]: row for row in Delivery.objects.filter(id__in=in_ids(handed_over)).values(*DELIVERY_FIELDS)
        }
        updates = []
        for record_id, kind, object_id, payload in pending:
            if kind == K.DELIVERY and object_id in deliveries:
                payload = delivery_payload(deliveries[object_id])
            seq += 1
            this_hash = record_hash(prev_hash, kind, object_id, payload)
            updates.append((record_id, seq, payload, prev_hash, this_hash))
            prev_hash = this_hash
        _chain(updates)
        checkpoint = _checkpoint(memo_id, seq, prev_hash)
    log.info("evidence: memo %s sealed to record %s, head %s, key %s", memo_id, seq, prev_hash, checkpoint.key_id[:16])
    return len(pending)


def _chain(updates: list[tuple[int, int, dict[str, Any], str, str]]) -> None:
    """Write (id, seq, payload, prev_hash, hash) onto pending records: on PostgreSQL one
    statement with the batch as one JSON parameter (a round trip per row, or psycopg
    quoting array elements one by one, cost more than the rest of a step)."""
    table = EvidenceRecord._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            rows = [
                {"id": i, "seq": seq, "payload": payload, "prev_hash": prev, "hash": this}
                for i, seq, payload, prev, this in updates
            ]
            cursor.execute(
                f"UPDATE {table} AS r SET seq = v.seq, payload = v.payload, prev_hash = v.prev_hash, hash = v.hash "
                "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, seq integer, payload jsonb, prev_hash text, hash text) "
                "WHERE r.id = v.id",
                [json.dumps(rows, ensure_ascii=False)],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET seq = %s, payload = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [
                    (seq, json.dumps(payload, ensure_ascii=False), prev, this, record_id)
                    for record_id, seq, payload, prev, this in updates
                ],
            )


def checkpoint_dict(checkpoint: EvidenceCheckpoint) -> dict[str, Any]:
    return {
        "memo": checkpoint.memo_id,
        "seq": checkpoint.seq,
        "head": checkpoint.head_hash,
        "count": checkpoint.count,
        "prev": checkpoint.prev,
        "at": checkpoint.at.isoformat(),
        "signature": checkpoint.signature,
        "key_id": checkpoint.key_id,
    }


def _checkpoint(memo_id: int, seq: int, head: str) -> EvidenceCheckpoint:
    previous = EvidenceCheckpoint.objects.filter(memo_id=memo_id).order_by("-seq").first()
    signed: dict[str, Any] = {
        "memo": memo_id,
        "seq": seq,
        "head": head,
        "count": seq,
        "prev": checkpoints.body_hash(checkpoint_dict(previous)) if previous else GENESIS,
        "at": timezone.now().replace(microsecond=0).isoformat(),
    }
    key = settings.EVIDENCE_SIGNING_KEY
    return EvidenceCheckpoint.objects.create(
        memo_id=memo_id,
        seq=seq,
        head_hash=head,
        count=seq,
        prev=signed["prev"],
        at=signed["at"],
        key_id=checkpoints.key_id(checkpoints.public_key_b64(key)),
        signature=checkpoints.sign(key, signed),
    )


def evidence_seal_due() -> int:
    """Beat's sweep: chain whatever a lost or never-started sequencer left pending."""
    memo_ids = set(EvidenceRecord.objects.filter(seq__isnull=True).values_list("memo_id", flat=True).distinct())
    return sum(evidence_seal(memo_id=memo_id) for memo_id in memo_ids)


def public_key() -> str:
    return checkpoints.public_key_b64(settings.EVIDENCE_SIGNING_KEY)


def public_keys() -> dict[str, str]:
    """The keys whose checkpoints verify: the signing key's and the retired ones'
    (EVIDENCE_RETIRED_KEYS, public keys from the environment, never the database)."""
    return checkpoints.keyring([public_key(), *settings.EVIDENCE_RETIRED_KEYS])


# --- verifying -----------------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    records: int
    problem: str = ""
    pending: int = 0
    checkpoints: int = 0
    key_ids: list[str] = field(default_factory=list)  # of the keys that signed them, oldest first

    def summary(self) -> str:
        if not self.ok:
            return f"evidence does NOT verify: {self.problem} ({self.records} records verified before it)"
        sealed = f"sealed by {self.checkpoints} signed checkpoints"
        if self.key_ids:
            sealed += f" (key{'s' if len(self.key_ids) > 1 else ''} {', '.join(k[:16] for k in self.key_ids)})"
        if self.pending:
            # Never "intact" with an unchained tail: nothing yet vouches for it.
            return (
                f"evidence verifies up to record {self.records}, {sealed}; {self.pending} records pending, "
                "not yet chained"
            )
        return f"evidence verifies: {self.records} records, chain intact, {sealed}"


def _records(memo: Memo) -> Iterator[EvidenceRecord]:
    last_seq = 0
    while page := list(EvidenceRecord.objects.filter(memo=memo, seq__gt=last_seq).order_by("seq")[:PAGE]):
        yield from page
        last_seq = page[-1].seq or 0


def _live(kind: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    if kind == K.ANSWER:
        return {a.pk: answer_payload(a) for a in Answer.objects.filter(pk__in=ids).select_related("developer")}
    if kind == K.EVENT:
        return {e.pk: event_payload(e) for e in DeliveryEvent.objects.filter(pk__in=ids)}
    if kind == K.DELIVERY:
        return {
            row["id"]: delivery_payload(row) for row in Delivery.objects.filter(pk__in=ids).values(*DELIVERY_FIELDS)
        }
    return {}


def _ids(queryset: Any) -> Iterator[int]:
    last_id = 0
    while ids := list(queryset.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:PAGE]):
        yield from ids
        last_id = ids[-1]


def evidence_verify(memo: Memo) -> Verification:
    """The chain, its checkpoints and the rows they prove, read as of one moment: what
    the sequencer chains and the webhooks add while it runs (minutes at a million) is
    neither a gap nor a row "added behind its back"."""
    with snapshot():
        return _verify(memo)


def _verify(memo: Memo) -> Verification:
    stored = [checkpoint_dict(c) for c in EvidenceCheckpoint.objects.filter(memo=memo).order_by("seq")]
    result = Verification(False, 0, key_ids=list(dict.fromkeys(c["key_id"] for c in stored)))
    result.pending = EvidenceRecord.objects.filter(memo=memo, seq__isnull=True).count()
    problem, result.checkpoints = checkpoints.checkpoints_problem(public_keys(), stored)
    if problem:
        result.problem = problem
        return result
    heads = {c["seq"]: c for c in stored}
    # A delivery sent twice has two handovers: the row is what the last one says.
    last_handover = dict(
        EvidenceRecord.objects.filter(memo=memo, kind=K.DELIVERY, seq__isnull=False)
        .values("object_id")
        .annotate(n=Count("id"), last=Max("seq"))
        .filter(n__gt=1)
        .values_list("object_id", "last")
    )
    seen: dict[str, set[int]] = {K.ANSWER: set(), K.EVENT: set(), K.DELIVERY: set()}
    final_status: dict[int, str] = {}  # delivery -> the status its last chained change says
    prev_hash, expected_seq, last_good = GENESIS, 1, 0
    first_since_good: dict[str, Any] | None = None  # the first record after the last head that matched

    def check(batch: list[EvidenceRecord]) -> str:
        nonlocal prev_hash, expected_seq, last_good, first_since_good
        live = {kind: _live(kind, [r.object_id for r in batch if r.kind == kind]) for kind in seen}
        for record in batch:
            where = f"record {record.seq} ({record.kind} {record.object_id})"
            if record.seq != expected_seq:
                return f"record {expected_seq} is missing (next is {record.seq})"
            if record.prev_hash != prev_hash:
                return f"{where}: does not follow the record before it"
            if record_hash(prev_hash, record.kind, record.object_id, record.payload) != record.hash:
                return f"{where}: its hash does not match its content (the record was altered)"
            if record.kind in seen:
                current = live[record.kind].get(record.object_id)
                if record.kind == K.DELIVERY and last_handover.get(record.object_id, record.seq) != record.seq:
                    current = record.payload  # superseded by its later handover
                if current is None:
                    return f"{where}: the {record.kind} it proves no longer exists"
                if current != record.payload:
                    changed = sorted(k for k in current if current.get(k) != record.payload.get(k))
                    return f"{where}: the {record.kind} was altered after it was recorded ({', '.join(changed)})"
                seen[record.kind].add(record.object_id)
                if record.kind == K.DELIVERY:
                    final_status.setdefault(record.object_id, Delivery.Status.SENT)
            if record.kind == K.STATUS:
                final_status[record.object_id] = record.payload.get("status", "")
            first_since_good = first_since_good or {
                "seq": record.seq,
                "kind": record.kind,
                "object_id": record.object_id,
            }
            checkpoint = heads.get(record.seq)
            if checkpoint is not None:
                if checkpoint["head"] != record.hash:
                    return checkpoints.rewritten(last_good, checkpoint, first_since_good)
                last_good, first_since_good = record.seq, None
            prev_hash, expected_seq, result.records = record.hash, expected_seq + 1, result.records + 1
        return ""

    batch: list[EvidenceRecord] = []
    for record in _records(memo):
        batch.append(record)
        if len(batch) == PAGE:
            if problem := check(batch):
                result.problem = problem
                return result
            batch = []
    if problem := check(batch) or checkpoints.coverage_problem(result.records, stored[-1] if stored else None):
        result.problem = problem
        return result
    if problem := _unchained(memo, seen, final_status):
        result.problem = problem
        return result
    result.ok = True
    return result


def _unchained(memo: Memo, seen: dict[str, set[int]], final_status: dict[int, str]) -> str:
    """Rows the chain does not know (added behind its back), or whose status moved
    without a chained change."""
    pending = {
        kind: set(
            EvidenceRecord.objects.filter(memo=memo, seq__isnull=True, kind=kind).values_list("object_id", flat=True)
        )
        for kind in [*seen, K.STATUS]
    }
    rows = {
        K.ANSWER: Answer.objects.filter(memo=memo),
        K.EVENT: DeliveryEvent.objects.filter(delivery__memo=memo),
        K.DELIVERY: Delivery.objects.filter(memo=memo, sent_at__isnull=False),
    }
    for kind, queryset in rows.items():
        for object_id in _ids(queryset):
            if object_id not in seen[kind] and object_id not in pending[kind]:
                return f"{kind} {object_id} is not in the chain (added behind its back)"
    last_id = 0
    deliveries = Delivery.objects.filter(memo=memo).order_by("pk").values_list("pk", "status")
    while page := list(deliveries.filter(pk__gt=last_id)[:PAGE]):
        last_id = page[-1][0]
        for delivery_id, status in page:
            expected = final_status.get(delivery_id)
            changing = delivery_id in pending[K.DELIVERY] or delivery_id in pending[K.STATUS]
            if expected is not None and status != expected and not changing:
                return (
                    f"delivery {delivery_id}: its status is {status}, the chain's last word on it is {expected} "
                    "(altered after it was recorded)"
                )
    return ""


def evidence_verify_against(memo: Memo, exported_memo: Any, chain: Iterable[dict[str, Any]]) -> str:
    """The database's chain must begin with the chain an earlier export recorded: a
    history rewritten and sealed again is caught even if every checkpoint was replaced.
    The export's chain is read once, a page at a time."""
    if exported_memo != memo.slug:
        return f"the export is of memo {exported_memo!r}, not {memo.slug!r}"
    records = iter(chain)
    while page := list(itertools.islice(records, PAGE)):
        by_seq = {r.seq: r for r in EvidenceRecord.objects.filter(memo=memo, seq__in=[r["seq"] for r in page])}
        for kept in page:
            where = f"record {kept['seq']} ({kept['kind']} {kept['object_id']})"
            current = by_seq.get(kept["seq"])
            if current is None:
                return f"{where}: in the export, gone from the database"
            if (current.kind, current.object_id, current.hash) != (kept["kind"], kept["object_id"], kept["hash"]):
                return f"{where}: the database's record differs from the one the export recorded (history rewritten)"
    return ""
