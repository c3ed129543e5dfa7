"""The sequencer: one per memo, it chains the memo's pending records whose tag holds, in
the order they came, and seals each step with a signed checkpoint that it also
publishes outside the database (heads.py).

A step is one transaction, of about SEAL_BATCH emails or other records (each record's
`size`): a sequencer killed mid-step leaves the chain as it was, and a second one waits
for the memo's lock (the Celery task gives way and starts again a second later), then
continues where the first stopped (the unique (memo, seq) is the last guard against a
fork). A pending record whose tag does not hold is marked refused and never chained:
the payload chained is always what its writer wrote.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from memo_service.lib.db import in_ids, row_lock
from memo_service.memos.evidence import checkpoints, heads
from memo_service.memos.evidence.checkpoints import GENESIS, canonical, record_hash
from memo_service.memos.evidence.tags import record_authentic
from memo_service.memos.models import EvidenceCheckpoint, EvidenceRecord, Memo
from memo_service.memos.webhooks.messages import webhooks_enqueue

log = logging.getLogger(__name__)
# Emails or other records chained per sealing step (one transaction, one checkpoint):
# big enough that a step's own queries (the lock, the head, the checkpoint) cost little
# beside its records, small enough that a step holds the memo's sequencer lock for well
# under a second.
SEAL_BATCH = 5_000


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


PendingRecord = dict[str, Any]  # id, memo_id, kind, object_id, payload, created_at, tag


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
        updates, refused = [], []
        for record in pending:
            record_id, kind, object_id, payload = record["id"], record["kind"], record["object_id"], record["payload"]
            payload_json = canonical(payload)  # once, for the tag and the hash
            if not record_authentic(record, payload_json):
                refused.append(record_id)
                continue
            seq += 1
            this_hash = record_hash(prev_hash, kind, object_id, payload, payload_json)
            updates.append((record_id, seq, prev_hash, this_hash))
            prev_hash = this_hash
        if refused:
            EvidenceRecord.objects.filter(id__in=in_ids(refused)).update(refused=True)
            log.warning("evidence: memo %s: records %s were not written by memo-service: not chained", memo_id, refused)
        if not updates:
            return 0, full
        _chain(updates)
        signed = _checkpoint(memo_id, seq, prev_hash)
        # After commit: a head published for a step rolled back would fail every verification.
        transaction.on_commit(lambda: heads_publish(signed))
    log.info("evidence: memo %s sealed to record %s, head %s, key %s", memo_id, seq, prev_hash, signed["key_id"][:16])
    return len(updates), full


def heads_publish(signed: dict[str, Any]) -> None:
    """Publish a checkpoint just committed: to the heads file and the webhooks that ask
    for it. A head that could not be written is logged; the next step's covers it."""
    line = json.dumps(signed, sort_keys=True, separators=(",", ":")) + "\n"
    if settings.EVIDENCE_HEADS_PATH:
        try:
            heads.append_line(Path(settings.EVIDENCE_HEADS_PATH), line)
        except OSError as exc:
            log.error("evidence: memo %s: head at record %s not published: %s", signed["memo"], signed["seq"], exc)
    webhooks_enqueue(heads.EVENT, [signed])


def _pending(memo_id: int, batch: int) -> tuple[list[PendingRecord], bool]:
    """A step's records: the pending ones in the order they came until they weigh
    `batch` (their `size`: a handover weighs its emails, any other record one, so one
    call of a thousand emails fills a step as a thousand events do), at least one; and
    whether the step is full. Measured out by size alone, then only the payloads of
    those taken are read: a handover's is a thousand emails'."""
    taken: list[int] = []
    weight = 0
    queue = EvidenceRecord.objects.filter(memo_id=memo_id, seq__isnull=True, refused=False).order_by("id")
    for record_id, size in queue.values_list("id", "size")[:batch]:
        taken.append(record_id)
        weight += size
        if weight >= batch:
            break
    records = EvidenceRecord.objects.filter(id__in=in_ids(taken)).order_by("id")
    fields = ("id", "memo_id", "kind", "object_id", "payload", "created_at", "tag")
    return list(records.values(*fields)), weight >= batch


def _chain(updates: list[tuple[int, int, str, str]]) -> None:
    """Write (id, seq, prev_hash, hash) onto pending records: on PostgreSQL one
    statement with the batch as one JSON parameter (a round trip per row cost more than
    the rest of a step)."""
    table = EvidenceRecord._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            rows = [{"id": i, "seq": seq, "prev_hash": prev, "hash": this} for i, seq, prev, this in updates]
            cursor.execute(
                f"UPDATE {table} AS r SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "
                "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, seq integer, prev_hash text, hash text) "
                "WHERE r.id = v.id",
                [json.dumps(rows)],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [(seq, prev, this, record_id) for record_id, seq, prev, this in updates],
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


def _checkpoint(memo_id: int, seq: int, head: str) -> dict[str, Any]:
    """Sign and store the step's checkpoint; returns it as checkpoint_dict gives it."""
    previous = EvidenceCheckpoint.objects.filter(memo_id=memo_id).order_by("-seq").first()
    signed: dict[str, Any] = {
        "memo": memo_id,
        "seq": seq,
        "head": head,
        "count": seq,
        "prev": checkpoints.body_hash(checkpoint_dict(previous)) if previous else GENESIS,
        "at": timezone.now().replace(microsecond=0).isoformat(),
    }
    signed["key_id"] = checkpoints.key_id(public_key())
    signed["signature"] = checkpoints.sign(settings.EVIDENCE_SIGNING_KEY, signed)
    EvidenceCheckpoint.objects.create(
        memo_id=memo_id,
        seq=seq,
        head_hash=head,
        count=seq,
        prev=signed["prev"],
        at=signed["at"],
        key_id=signed["key_id"],
        signature=signed["signature"],
    )
    return signed


def evidence_seal_due() -> int:
    """Beat's sweep: chain whatever a lost or never-started sequencer left pending."""
    pending = EvidenceRecord.objects.filter(seq__isnull=True, refused=False)
    memo_ids = set(pending.values_list("memo_id", flat=True).distinct())
    return sum(evidence_seal(memo_id=memo_id) or 0 for memo_id in memo_ids)


def public_key() -> str:
    return checkpoints.public_key_b64(settings.EVIDENCE_SIGNING_KEY)


def public_keys() -> dict[str, str]:
    """The keys whose checkpoints verify: the signing key's and the retired ones'
    (EVIDENCE_RETIRED_KEYS, public keys from the environment, never the database)."""
    return checkpoints.keyring([public_key(), *settings.EVIDENCE_RETIRED_KEYS])
