"""The evidence chain: every answer and provider event of a memo, hash-chained.

Each record holds a canonical copy of what it proves (never the email, name or
organisation, so erasure does not break it) and a SHA-256 over that copy and the
previous record's hash. `evidence_verify` recomputes the chain and compares each record
with the row it stands for: an edited answer, an edited record, a deleted or inserted
record all show up, at the first place they break the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from memo_service.memos.models import Acknowledgement, DeliveryEvent, EvidenceRecord, Memo

GENESIS = "0" * 64
PAGE = 2_000  # records per query while verifying: memory stays flat


def answer_payload(answer: Acknowledgement) -> dict[str, Any]:
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
    }
    # Only answers from another channel than the email link say which: the records
    # chained before channels existed keep verifying as they were written.
    if answer.channel != Acknowledgement.Channel.EMAIL_LINK:
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
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
    }


def _hash(prev_hash: str, kind: str, object_id: int, payload: dict[str, Any]) -> str:
    body = json.dumps(
        {"kind": kind, "object_id": object_id, "payload": payload},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def evidence_append(*, memo_id: int, kind: str, object_id: int, payload: dict[str, Any]) -> EvidenceRecord:
    """Append a record; call inside the transaction that writes the row it proves."""
    # One writer per memo's chain at a time (SQLite's IMMEDIATE transactions already are).
    Memo.objects.select_for_update().filter(pk=memo_id).values_list("pk", flat=True).get()
    last = EvidenceRecord.objects.filter(memo_id=memo_id).order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    return EvidenceRecord.objects.create(
        memo_id=memo_id, seq=seq, kind=kind, object_id=object_id, payload=payload,
        prev_hash=prev_hash, hash=_hash(prev_hash, kind, object_id, payload),
    )


@dataclass
class Verification:
    ok: bool
    records: int
    problem: str = ""


def _records(memo: Memo) -> Iterator[EvidenceRecord]:
    last_seq = 0
    while page := list(EvidenceRecord.objects.filter(memo=memo, seq__gt=last_seq).order_by("seq")[:PAGE]):
        yield from page
        last_seq = page[-1].seq


def _live(kind: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    if kind == EvidenceRecord.Kind.ANSWER:
        return {a.pk: answer_payload(a) for a in Acknowledgement.objects.filter(pk__in=ids).select_related("developer")}
    return {e.pk: event_payload(e) for e in DeliveryEvent.objects.filter(pk__in=ids)}


def _ids(queryset: Any) -> Iterator[int]:
    last_id = 0
    while ids := list(queryset.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:PAGE]):
        yield from ids
        last_id = ids[-1]


def evidence_verify(memo: Memo) -> Verification:
    prev_hash, expected_seq, count = GENESIS, 1, 0
    seen = {EvidenceRecord.Kind.ANSWER: set(), EvidenceRecord.Kind.EVENT: set()}
    batch: list[EvidenceRecord] = []

    def check(batch: list[EvidenceRecord]) -> str:
        nonlocal prev_hash, expected_seq, count
        live = {kind: _live(kind, [r.object_id for r in batch if r.kind == kind]) for kind in seen}
        for record in batch:
            where = f"record {record.seq} ({record.kind} {record.object_id})"
            if record.seq != expected_seq:
                return f"record {expected_seq} is missing (next is {record.seq})"
            if record.prev_hash != prev_hash:
                return f"{where}: does not follow the record before it"
            if _hash(prev_hash, record.kind, record.object_id, record.payload) != record.hash:
                return f"{where}: its hash does not match its content (the record was altered)"
            current = live[record.kind].get(record.object_id)
            if current is None:
                return f"{where}: the {record.kind} it proves no longer exists"
            if current != record.payload:
                changed = sorted(k for k in current if current.get(k) != record.payload.get(k))
                return f"{where}: the {record.kind} was altered after it was recorded ({', '.join(changed)})"
            seen[record.kind].add(record.object_id)
            prev_hash, expected_seq, count = record.hash, expected_seq + 1, count + 1
        return ""

    for record in _records(memo):
        batch.append(record)
        if len(batch) == PAGE:
            if problem := check(batch):
                return Verification(False, count, problem)
            batch = []
    if problem := check(batch):
        return Verification(False, count, problem)
    rows = {
        EvidenceRecord.Kind.ANSWER: Acknowledgement.objects.filter(memo=memo),
        EvidenceRecord.Kind.EVENT: DeliveryEvent.objects.filter(delivery__memo=memo),
    }
    for kind, queryset in rows.items():
        for object_id in _ids(queryset):
            if object_id not in seen[kind]:
                return Verification(False, count, f"{kind} {object_id} is not in the chain (added behind its back)")
    return Verification(True, count)
