"""The evidence chain: every answer, provider event, handover of an email and later
change of its status, hash-chained per memo and sealed by signed checkpoints.

Writing is append-only and takes no lock: the request path (an answer, a webhook) and a
send task only insert records, pending. A handover is one record per provider call
(up to a thousand emails, one message id), written by the send with what each email's
row says, a line per email (`handover_payload`); chains from before, with a `delivery`
record per email or a handover listing objects, still verify. One sequencer per memo
(`evidence_seal`, a Celery task started after commit and by beat) takes the pending
records in the order they came, in steps of about SEAL_BATCH emails or other records
(each record's `size`), gives each its place and hash, and signs a checkpoint
(checkpoints.py) in the same transaction: a sequencer killed mid-step leaves the chain
as it was, and a second one waits for the memo's lock (the Celery task gives way and
starts again a second later), then continues where the first stopped (the unique
(memo, seq) is the last guard against a fork).

Each record holds a canonical copy of what it proves (never the email, name or
organisation, so erasure does not break it). `evidence_verify` recomputes the chain,
compares each record with the row it stands for (a handover, each delivery it lists;
the last handover of a delivery sent twice is the one its row must match), checks
every checkpoint's signature and that the chain reaches the newest one;
`evidence_verify_against` checks that the chain still begins with the one an earlier
export recorded.
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
)

log = logging.getLogger(__name__)
K = EvidenceRecord.Kind
PAGE = 2_000  # records (or deliveries in handovers) per query while verifying: memory stays flat
SMALL_PAGE = 20  # records per query where each may be a handover of a thousand emails
# Emails or other records chained per sealing step (one transaction, one checkpoint):
# big enough that a step's own queries (the lock, the head, the checkpoint) cost little
# beside its records (re-sealing a 300,000-email send: 10 ms per 1,000 emails in steps
# of 1,000, 4-7 ms in steps of 5,000), small enough that a step holds the memo's
# sequencer lock for well under a second.
SEAL_BATCH = 5_000
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


# What a handover record proves of a delivery, as read from its row (by the send on
# SQLite, by verification, and by the sequencer for handovers written as ids).
DELIVERY_FIELDS = (
    "id",
    "developer_id",
    "country",
    "language",
    "provider_message_id",
    "sent_at",
    "text_hash",
)


def delivery_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivery": row["id"],
        "developer": row["developer_id"],
        "country": row["country"],
        "language": row["language"],
        "message_id": row["provider_message_id"],
        "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
        "text_hash": row["text_hash"],
    }


def delivery_rows(ids: list[int]) -> dict[int, dict[str, Any]]:
    """The Delivery rows a handover proves, by id, with the fields it proves: one query."""
    if not ids:
        return {}
    return {row["id"]: row for row in Delivery.objects.filter(id__in=in_ids(ids)).values(*DELIVERY_FIELDS)}


# The keys of delivery_payload, in the order a handover's line lists them.
HANDOVER_FIELDS = ("delivery", "developer", "country", "language", "message_id", "sent_at", "text_hash")


def handover_payload(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A handover's payload: its fields, and a line per email (ordered by delivery id),
    each a JSON array of what delivery_payload says in that order. Lines in one string
    rather than a list of objects: for the database to build, the sequencer to hash and
    both to move, a thousand objects a call cost more than the rest of a send's evidence.
    Verification reads each line back as delivery_payload's dict (handover_entries)."""
    lines = (json.dumps([entry[key] for key in HANDOVER_FIELDS], ensure_ascii=False) for entry in entries)
    return {"fields": list(HANDOVER_FIELDS), "lines": "\n".join(lines)}


def record_size(kind: str, payload: Any) -> int:
    """What a record weighs for the sequencer's steps and verification's pages: a
    handover its deliveries (a provider call's, up to a thousand), any other record one."""
    if kind != K.HANDOVER:
        return 1
    if "lines" in payload:
        return max(1, payload["lines"].count("\n") + 1)
    return max(1, len(payload.get("deliveries", ())))


def handed_over(kind: str, object_id: int, payload: dict[str, Any]) -> list[int]:
    """The deliveries a pending record hands over: those a handover lists (written whole,
    or, before that, as ids), or the one an old-style per-email `delivery` record names."""
    if kind == K.HANDOVER and "lines" not in payload:
        return [int(e["delivery"] if isinstance(e, dict) else e) for e in payload.get("deliveries", [])]
    return [i for i, _ in handover_entries(kind, object_id, payload) if i is not None]


Entries = list[tuple[int | None, Any]]  # (delivery id, what a handover proves of it), per email


def handover_entries(kind: str, object_id: int, payload: Any) -> Entries:
    """(delivery id, what the record proves of it, as delivery_payload's dict) for a
    handover: read from its lines or, chained before handovers were lines, its list of
    objects; a `delivery` record, chained before handovers were per call, is a handover
    of its one delivery. A line that is not one is (None, the line)."""
    if kind != K.HANDOVER:
        return [(object_id, payload)] if kind == K.DELIVERY else []
    if "lines" not in payload:
        return [(e.get("delivery") if isinstance(e, dict) else None, e) for e in payload.get("deliveries", [])]
    entries: Entries = []
    for line in payload["lines"].split("\n") if payload["lines"] else []:
        try:
            values = json.loads(line)
        except ValueError:
            values = None
        if not isinstance(values, list):
            entries.append((None, line))
            continue
        entry = dict(zip(payload.get("fields", HANDOVER_FIELDS), values, strict=False))
        entries.append((entry.get("delivery"), entry))
    return entries


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


def evidence_append(*, memo_id: int, kind: str, object_id: int, payload: dict[str, Any]) -> EvidenceRecord:
    """Add a pending record; call inside the transaction that writes the row it proves.
    It is chained by the memo's sequencer, off the request path."""
    record = EvidenceRecord.objects.create(memo_id=memo_id, kind=kind, object_id=object_id, payload=payload)
    evidence_seal_soon(memo_id)
    return record


def evidence_record_handover(*, delivery_ids: list[int], written_by: tuple[str, list[Any]] | None = None) -> None:
    """What the provider just accepted in one call: one pending handover record per
    memo listing what each of the call's Delivery rows says (developer, country,
    language, message id, time, text hash: `delivery_payload`), in one statement on
    PostgreSQL. deliveries_record_sent calls it, in the transaction that records the
    rows sent; on PostgreSQL it hands over `written_by`, its UPDATE of the rows (aliased
    d) and that UPDATE's parameters, which then runs inside this statement, and the
    lines are built from the rows it returns rather than read again. One record per
    call, not per email: at a thousand emails a call the chain, the sequencer and the
    verification handle a thousandth of the rows, and the sequencer only hashes it.
    Emails the provider reported taking after their worker died (reconcile.py) are
    recorded the same way, with no text hash: the text sent is not known, and the
    developer's page says nothing it cannot prove."""
    if not delivery_ids:
        return
    if connection.vendor == "postgresql":
        memo_ids = _handover_postgresql(delivery_ids, written_by)
    else:
        memo_ids = _handover(delivery_ids)
    for memo_id in memo_ids:
        evidence_seal_soon(memo_id)


# handover_payload's line in SQL, over a Delivery row `d` (HANDOVER_FIELDS in order):
# sent_at as Python's isoformat of the UTC time the database gives back (no fraction
# when it is zero). A test holds the two to each other (test_evidence.py).
_HANDOVER_LINE_SQL = """json_build_array(
    d.id, d.developer_id, d.country, d.language, d.provider_message_id,
    to_char(d.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE to_char(d.sent_at, 'US') WHEN '000000' THEN '' ELSE to_char(d.sent_at, '.US') END || '+00:00',
    d.text_hash)::text"""
_HANDOVER_COLUMNS = (
    "d.id, d.memo_id, d.developer_id, d.country, d.language, d.provider_message_id, d.sent_at, d.text_hash"
)


def _handover_postgresql(delivery_ids: list[int], written_by: tuple[str, list[Any]] | None) -> set[int]:
    """The handover's lines are built by the database from the rows, in the statement
    that stores them (and, given the UPDATE that records them sent, that writes them):
    no round trip to read them."""
    records, deliveries = EvidenceRecord._meta.db_table, Delivery._meta.db_table
    if written_by is None:  # the rows as they are now (the ids as in_ids passes them)
        rows = f"SELECT {_HANDOVER_COLUMNS} FROM {deliveries} d WHERE d.id IN (SELECT unnest(%s::bigint[]))"
        params: list[Any] = [delivery_ids]
    else:
        rows, params = f"{written_by[0]} RETURNING {_HANDOVER_COLUMNS}", written_by[1]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH d AS ({rows}) "
            f"INSERT INTO {records} (memo_id, object_id, kind, payload, size, prev_hash, hash, created_at) "
            "SELECT d.memo_id, min(d.id), %s, "
            f"jsonb_build_object('fields', %s::jsonb, 'lines', string_agg({_HANDOVER_LINE_SQL}, E'\\n' ORDER BY d.id)), "
            "count(*), '', '', %s FROM d GROUP BY d.memo_id RETURNING memo_id",
            [*params, K.HANDOVER, json.dumps(HANDOVER_FIELDS), timezone.now()],
        )
        return {row[0] for row in cursor.fetchall()}


def _handover(delivery_ids: list[int]) -> set[int]:
    """The same, from the rows read back (SQLite, the tests' database): returns the memos."""
    by_memo: dict[int, list[dict[str, Any]]] = {}
    rows = Delivery.objects.filter(id__in=in_ids(delivery_ids)).order_by("id").values("memo_id", *DELIVERY_FIELDS)
    for row in rows:
        by_memo.setdefault(row["memo_id"], []).append(delivery_payload(row))
    EvidenceRecord.objects.bulk_create(
        EvidenceRecord(
            memo_id=memo_id,
            kind=K.HANDOVER,
            object_id=entries[0]["delivery"],
            payload=handover_payload(entries),
            size=len(entries),
            prev_hash="",
            hash="",
        )
        for memo_id, entries in by_memo.items()
    )
    return set(by_memo)


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


def evidence_seal(*, memo_id: int, batch: int = SEAL_BATCH, wait: bool = True) -> int | None:
    """Chain the memo's pending records, a step per transaction and checkpoint; returns
    how many were chained. With wait=False (the Celery task) it does not wait for
    another sequencer of the memo, which would hold a worker process idle for as long
    as that one runs: None when it met one (then whatever that one does not take is
    still to be chained: start again later)."""
    total = 0
    while True:
        step = _seal_step(memo_id, batch, wait)
        if step is None:
            return None
        chained, full = step
        total += chained
        if not full:
            return total


def _seal_step(memo_id: int, batch: int, wait: bool = True) -> tuple[int, bool] | None:
    """Chain the next step's records (`_pending`); returns how many, and whether the
    step was full (more may be pending); None when another sequencer holds the memo
    and `wait` is False."""
    with transaction.atomic():
        # The memo's sequencer lock; only sequencers take it.
        if not row_lock(Memo.objects.filter(pk=memo_id), wait=wait):
            return None
        last = (
            EvidenceRecord.objects.filter(memo_id=memo_id, seq__isnull=False)
            .order_by("-seq")
            .values_list("seq", "hash")
            .first()
        )
        seq, prev_hash = last or (0, GENESIS)
        assert seq is not None  # `last` is of a record with seq__isnull=False
        pending, full = _pending(memo_id, batch)
        if not pending:
            return 0, False
        rows = delivery_rows([i for record in pending if _unfilled(*record[1:]) for i in handed_over(*record[1:])])
        updates = []
        for record_id, kind, object_id, payload in pending:
            filled = _filled_payload(kind, object_id, payload, rows) if _unfilled(kind, object_id, payload) else None
            seq += 1
            this_hash = record_hash(prev_hash, kind, object_id, payload if filled is None else filled)
            updates.append((record_id, seq, filled, prev_hash, this_hash))
            prev_hash = this_hash
        _chain(updates)
        checkpoint = _checkpoint(memo_id, seq, prev_hash)
    log.info("evidence: memo %s sealed to record %s, head %s, key %s", memo_id, seq, prev_hash, checkpoint.key_id[:16])
    return len(pending), full


PendingRecord = tuple[int, str, int, dict[str, Any]]  # (id, kind, object_id, payload)


def _pending(memo_id: int, batch: int) -> tuple[list[PendingRecord], bool]:
    """A step's records: the pending ones in the order they came until they weigh
    `batch` (their `size`: a handover weighs its emails, any other record one, so one
    call of a thousand emails fills a step as a thousand events do), at least one; and
    whether the step is full. A step's work is in the deliveries it reads and hashes,
    not in its records. Measured out by size alone (no more than `batch` records can be
    needed), then only the payloads of those taken are read: a handover's is a
    thousand emails'."""
    taken: list[int] = []
    weight = 0
    queue = EvidenceRecord.objects.filter(memo_id=memo_id, seq__isnull=True).order_by("id")
    for record_id, size in queue.values_list("id", "size")[:batch]:
        taken.append(record_id)
        weight += size
        if weight >= batch:
            break
    records = EvidenceRecord.objects.filter(id__in=in_ids(taken)).order_by("id")
    return list(records.values_list("id", "kind", "object_id", "payload")), weight >= batch


def _page_size(wanted: int, records: int, weight: int) -> int:
    """How many records to read next for about `wanted` in weight, judging by the
    `records` read so far weighing `weight`: between SMALL_PAGE and PAGE."""
    return max(SMALL_PAGE, min(PAGE, wanted * records // max(weight, 1)))


def _unfilled(kind: str, object_id: int, payload: Any) -> bool:
    """A pending record that names its deliveries without what their rows say: an
    old-style `delivery` record, or a handover listing ids, written before handovers
    were written whole. Every other record is chained as it was written."""
    if kind == K.HANDOVER:
        return "lines" not in payload and any(not isinstance(e, dict) for e in payload.get("deliveries", []))
    return kind == K.DELIVERY


def _filled_payload(kind: str, object_id: int, payload: dict[str, Any], rows: dict[int, dict[str, Any]]) -> Any:
    """An unfilled record as chained: what its deliveries' rows say now, ordered by id (a
    row gone before it was chained keeps only its id: verification then says it no
    longer exists)."""
    if kind == K.HANDOVER:
        ids = sorted(handed_over(kind, object_id, payload))
        return {"deliveries": [delivery_payload(rows[i]) if i in rows else {"delivery": i} for i in ids]}
    return delivery_payload(rows[object_id]) if object_id in rows else payload


def _chain(updates: list[tuple[int, int, dict[str, Any] | None, str, str]]) -> None:
    """Write (id, seq, payload, prev_hash, hash) onto pending records, the payload only
    where it was filled in (None: as written; a handover's is a thousand emails'): on
    PostgreSQL one statement with the batch as one JSON parameter (a round trip per
    row, or psycopg quoting array elements one by one, cost more than the rest of a
    step)."""
    table = EvidenceRecord._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            rows = [
                {"id": i, "seq": seq, "payload": payload, "prev_hash": prev, "hash": this}
                for i, seq, payload, prev, this in updates
            ]
            cursor.execute(
                f"UPDATE {table} AS r SET seq = v.seq, payload = coalesce(v.payload, r.payload), "
                "prev_hash = v.prev_hash, hash = v.hash "
                "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, seq integer, payload jsonb, prev_hash text, hash text) "
                "WHERE r.id = v.id",
                [json.dumps(rows, ensure_ascii=False)],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET seq = %s, payload = coalesce(%s, payload), prev_hash = %s, hash = %s WHERE id = %s",
                [
                    (seq, None if payload is None else json.dumps(payload, ensure_ascii=False), prev, this, record_id)
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
        key_id=checkpoints.key_id(public_key()),
        signature=checkpoints.sign(key, signed),
    )


def evidence_seal_due() -> int:
    """Beat's sweep: chain whatever a lost or never-started sequencer left pending."""
    memo_ids = set(EvidenceRecord.objects.filter(seq__isnull=True).values_list("memo_id", flat=True).distinct())
    return sum(evidence_seal(memo_id=memo_id) or 0 for memo_id in memo_ids)


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


CHAIN_FIELDS = ("seq", "kind", "object_id", "payload", "prev_hash", "hash")


def chained_pages(memo: Memo) -> Iterator[list[dict[str, Any]]]:
    """The memo's chained records in order (dicts of CHAIN_FIELDS), a page per query: about
    PAGE records, or fewer when they are handovers, so a page holds about PAGE
    deliveries (`record_size`, never fewer than SMALL_PAGE records). Memory stays flat."""
    records = EvidenceRecord.objects.filter(memo=memo, seq__isnull=False).order_by("seq").values(*CHAIN_FIELDS)
    size, last_seq = SMALL_PAGE, 0
    while page := list(records.filter(seq__gt=last_seq)[:size]):
        yield page
        last_seq = page[-1]["seq"]
        size = _page_size(PAGE, len(page), sum(record_size(r["kind"], r["payload"]) for r in page))


def _live(page: list[dict[str, Any]], entries: list[Entries]) -> dict[str, dict[Any, dict[str, Any]]]:
    """The rows a page of records proves, as their records would hold them: answers and
    events by id, deliveries by the ids the handovers list (`entries`, a record's each)."""

    def ids(kind: str) -> list[int]:
        return [r["object_id"] for r in page if r["kind"] == kind]

    handed = [i for record_entries in entries for i, _ in record_entries if i is not None]
    return {
        K.ANSWER: {
            a.pk: answer_payload(a) for a in Answer.objects.filter(pk__in=ids(K.ANSWER)).select_related("developer")
        },
        K.EVENT: {e.pk: event_payload(e) for e in DeliveryEvent.objects.filter(pk__in=ids(K.EVENT))},
        K.DELIVERY: {i: delivery_payload(row) for i, row in delivery_rows(handed).items()},
    }


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
    walk = _Walk(heads={c["seq"]: c for c in stored})
    for page in chained_pages(memo):
        if problem := walk.page(page):
            break
    else:
        problem = walk.end(stored[-1] if stored else None) or _unchained(memo, walk.seen, walk.final_status)
    result.records, result.problem, result.ok = walk.records, problem, not problem
    return result


@dataclass
class _Walk:
    """Verification along the chain, a page at a time: each record follows the one
    before it, matches its hash, the signed heads and the rows it proves."""

    heads: dict[int, dict[str, Any]]  # the signed checkpoints by the record they end at
    records: int = 0  # verified so far
    prev_hash: str = GENESIS
    last_good: int = 0  # the last record a signed head matched
    first_since_good: dict[str, Any] | None = None
    seen: dict[str, set[int]] = field(default_factory=lambda: {K.ANSWER: set(), K.EVENT: set(), K.DELIVERY: set()})
    final_status: dict[int, str] = field(default_factory=dict)  # delivery -> the status its last chained change says
    # Delivery -> how its last handover so far differs from its row. A delivery sent
    # twice has two handovers and the row is what the last one says: a difference is
    # reported at the end unless a later handover of the same delivery matches.
    altered: dict[int, str] = field(default_factory=dict)

    def page(self, page: list[dict[str, Any]]) -> str:
        # A handover's lines are read once: for the rows to fetch, then to compare.
        entries = [handover_entries(r["kind"], r["object_id"], r["payload"]) for r in page]
        live = _live(page, entries)
        for record, handed in zip(page, entries, strict=True):
            if problem := self.record(record, live, handed):
                return problem
        return ""

    def record(self, record: dict[str, Any], live: dict[str, dict[Any, dict[str, Any]]], handed: Entries) -> str:
        seq, kind, object_id, payload = record["seq"], record["kind"], record["object_id"], record["payload"]
        where = f"record {seq} ({kind} {object_id})"
        if seq != self.records + 1:
            return f"record {self.records + 1} is missing (next is {seq})"
        if record["prev_hash"] != self.prev_hash:
            return f"{where}: does not follow the record before it"
        if record_hash(self.prev_hash, kind, object_id, payload) != record["hash"]:
            return f"{where}: its hash does not match its content (the record was altered)"
        if problem := self.proves(where, record, live, handed):
            return problem
        if kind == K.STATUS:
            self.final_status[object_id] = payload.get("status", "")
        self.first_since_good = self.first_since_good or {"seq": seq, "kind": kind, "object_id": object_id}
        checkpoint = self.heads.get(seq)
        if checkpoint is not None:
            if checkpoint["head"] != record["hash"]:
                return checkpoints.rewritten(self.last_good, checkpoint, self.first_since_good)
            self.last_good, self.first_since_good = seq, None
        self.prev_hash, self.records = record["hash"], self.records + 1
        return ""

    def proves(
        self, where: str, record: dict[str, Any], live: dict[str, dict[Any, dict[str, Any]]], handed: Entries
    ) -> str:
        """The record matches the rows it proves: an answer or event its row, a handover
        each of its deliveries' rows (a difference waits for a later handover)."""
        kind, object_id, payload = record["kind"], record["object_id"], record["payload"]
        if kind in (K.ANSWER, K.EVENT):
            current = live[kind].get(object_id)
            if current is None:
                return f"{where}: the {kind} it proves no longer exists"
            if current != payload:
                return f"{where}: the {kind} was altered after it was recorded ({_changed(current, payload)})"
            self.seen[kind].add(object_id)
        for delivery_id, proved in handed:
            current = live[K.DELIVERY].get(delivery_id)
            if current is None or delivery_id is None:
                return f"{where}: delivery {delivery_id} it proves no longer exists"
            if current == proved:
                self.altered.pop(delivery_id, None)
            else:
                self.altered[delivery_id] = (
                    f"{where}: delivery {delivery_id} was altered after it was recorded ({_changed(current, proved)})"
                )
            self.seen[K.DELIVERY].add(delivery_id)
            self.final_status.setdefault(delivery_id, Delivery.Status.SENT)
        return ""

    def end(self, newest: dict[str, Any] | None) -> str:
        """After the last record: a delivery its last handover does not match, or
        records the newest checkpoint does not cover."""
        if self.altered:
            return next(iter(self.altered.values()))
        return checkpoints.coverage_problem(self.records, newest)


def _changed(current: dict[str, Any], recorded: Any) -> str:
    recorded = recorded if isinstance(recorded, dict) else {}
    return ", ".join(sorted(k for k in current if current.get(k) != recorded.get(k)))


def _unchained(memo: Memo, seen: dict[str, set[int]], final_status: dict[int, str]) -> str:
    """Rows the chain does not know (added behind its back), or whose status moved
    without a chained change."""
    pending = _pending_ids(memo)
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


def _pending_ids(memo: Memo) -> dict[str, set[int]]:
    """What the memo's pending records are of, by kind: answers, events and status
    changes by id, deliveries by the ids pending handovers list."""
    pending: dict[str, set[int]] = {K.ANSWER: set(), K.EVENT: set(), K.DELIVERY: set(), K.STATUS: set()}
    queue = EvidenceRecord.objects.filter(memo=memo, seq__isnull=True)
    for kind, object_id, payload in queue.values_list("kind", "object_id", "payload"):
        if kind in (K.HANDOVER, K.DELIVERY):
            pending[K.DELIVERY].update(handed_over(kind, object_id, payload))
        else:
            pending[kind].add(object_id)
    return pending


def evidence_verify_against(memo: Memo, exported_memo: Any, chain: Iterable[dict[str, Any]]) -> str:
    """The database's chain must begin with the chain an earlier export recorded: a
    history rewritten and sealed again is caught even if every checkpoint was replaced.
    The export's chain is read once, a page at a time."""
    if exported_memo != memo.slug:
        return f"the export is of memo {exported_memo!r}, not {memo.slug!r}"
    records = iter(chain)
    while page := list(itertools.islice(records, PAGE)):
        stored = EvidenceRecord.objects.filter(memo=memo, seq__in=[r["seq"] for r in page])
        by_seq = {seq: rest for seq, *rest in stored.values_list("seq", "kind", "object_id", "hash")}  # no payloads
        for kept in page:
            where = f"record {kept['seq']} ({kept['kind']} {kept['object_id']})"
            current = by_seq.get(kept["seq"])
            if current is None:
                return f"{where}: in the export, gone from the database"
            if current != [kept["kind"], kept["object_id"], kept["hash"]]:
                return f"{where}: the database's record differs from the one the export recorded (history rewritten)"
    return ""
