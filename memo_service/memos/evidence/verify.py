"""Verifying a memo's evidence in the database.

`evidence_verify` recomputes the chain; checks every record's tag (written by
memo-service, tags.py), every checkpoint's signature and that the chain reaches the
newest one; compares each record with the row it stands for (a handover each delivery it
lists: the last handover of a delivery sent twice is the one its row must match) and the
memo's templates with the approval record; checks that what the rows claim is covered
(every sent delivery handed over, every answer and event recorded, a sent memo approved);
what came after the send (verify_after.py: approvers, cases, the withdrawal); and that
the chain holds every head published outside the database (heads.py).
`evidence_verify_against` checks that the chain still begins with the one an earlier
export recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from memo_service.lib.db import snapshot
from memo_service.memos.compose.sources import memo_content
from memo_service.memos.evidence import checkpoints, heads
from memo_service.memos.evidence.approved import content_mismatch
from memo_service.memos.evidence.checkpoints import GENESIS, canonical, record_hash
from memo_service.memos.evidence.payloads import (
    Entries,
    answer_payload,
    delivery_payload,
    delivery_rows,
    earlier_form,
    event_payload,
    handover_entries,
    record_size,
)
from memo_service.memos.evidence.sequencer import checkpoint_dict, public_keys
from memo_service.memos.evidence.tags import record_authentic
from memo_service.memos.evidence.verify_after import after_send_problem
from memo_service.memos.models import Answer, Delivery, DeliveryEvent, EvidenceCheckpoint, EvidenceRecord, Memo

Kind = EvidenceRecord.Kind
PAGE = 2_000  # records (or deliveries in handovers) per query while verifying: memory stays flat
SMALL_PAGE = 20  # records per query where each may be a handover of a thousand emails
# Memos in these have told someone something: their evidence cannot be empty.
_TOLD = (Memo.Status.SENDING, Memo.Status.PAUSED, Memo.Status.SENT)


@dataclass
class Verification:
    ok: bool
    records: int
    problem: str = ""
    pending: int = 0
    checkpoints: int = 0
    key_ids: list[str] = field(default_factory=list)  # of the keys that signed them, oldest first
    heads: int | None = None  # published heads checked; None: none were given

    def summary(self) -> str:
        if not self.ok:
            return f"evidence does NOT verify: {self.problem} ({self.records} records verified before it)"
        sealed = f"sealed by {self.checkpoints} signed checkpoints"
        if self.key_ids:
            sealed += f" (key{'s' if len(self.key_ids) > 1 else ''} {', '.join(k[:16] for k in self.key_ids)})"
        if self.heads is None:
            sealed += (
                "; no published heads to check against (EVIDENCE_HEADS_PATH or --heads), so a chain cut short "
                "or sealed again in the database could not be ruled out"
            )
        else:
            sealed += f", holding all {self.heads} published heads"
        if self.pending:
            # Never "intact" with an unchained tail: nothing yet vouches for it.
            return (
                f"evidence verifies up to record {self.records}, {sealed}; {self.pending} records pending, "
                "not yet chained"
            )
        return f"evidence verifies: {self.records} records, chain intact, {sealed}"


CHAIN_FIELDS = ("seq", "kind", "object_id", "payload", "prev_hash", "hash")  # as an export carries them
_VERIFIED_FIELDS = (*CHAIN_FIELDS, "memo_id", "created_at", "tag")


def chained_pages(memo: Memo, fields: tuple[str, ...] = CHAIN_FIELDS) -> Iterator[list[dict[str, Any]]]:
    """The memo's chained records in order (dicts of `fields`), a page per query: about
    PAGE records, or fewer when they are handovers, so a page holds about PAGE
    deliveries (`record_size`, never fewer than SMALL_PAGE records). Memory stays flat."""
    records = EvidenceRecord.objects.filter(memo=memo, seq__isnull=False).order_by("seq").values(*fields)
    size, last_seq = SMALL_PAGE, 0
    while page := list(records.filter(seq__gt=last_seq)[:size]):
        yield page
        last_seq = page[-1]["seq"]
        weight = sum(record_size(r["kind"], r["payload"]) for r in page)
        size = max(SMALL_PAGE, min(PAGE, PAGE * len(page) // max(weight, 1)))


def _live(page: list[dict[str, Any]], entries: list[Entries]) -> dict[str, dict[Any, dict[str, Any]]]:
    """The rows a page of records proves, as their records would hold them: answers and
    events by id, deliveries by the ids the handovers list (`entries`, a record's each)."""

    def ids(kind: str) -> list[int]:
        return [r["object_id"] for r in page if r["kind"] == kind]

    handed = [i for record_entries in entries for i, _ in record_entries if i is not None]
    return {
        Kind.ANSWER: {
            a.pk: answer_payload(a) for a in Answer.objects.filter(pk__in=ids(Kind.ANSWER)).select_related("developer")
        },
        Kind.EVENT: {e.pk: event_payload(e) for e in DeliveryEvent.objects.filter(pk__in=ids(Kind.EVENT))},
        Kind.HANDOVER: {i: delivery_payload(row) for i, row in delivery_rows(handed).items()},
    }


def _ids(queryset: Any) -> Iterator[int]:
    last_id = 0
    while ids := list(queryset.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:PAGE]):
        yield from ids
        last_id = ids[-1]


def published_heads(memo_id: int, path: Path | None = None) -> list[dict[str, Any]] | None:
    """The heads published for the memo in `path` (default EVIDENCE_HEADS_PATH), or None
    when there is no such file to read. Raises OSError or ValueError (a line that is not
    a head) for a file that cannot be read."""
    if path is None:
        path = Path(settings.EVIDENCE_HEADS_PATH) if settings.EVIDENCE_HEADS_PATH else None
        if path is None or not path.exists():
            return None
    return heads.heads_read(path, memo_id)


def evidence_verify_published(memo: Memo) -> Verification:
    """evidence_verify against the heads in EVIDENCE_HEADS_PATH, as the admin and an export do."""
    try:
        published = published_heads(memo.pk)
    except (OSError, ValueError) as exc:
        return Verification(False, 0, problem=f"the published heads cannot be read: {exc}")
    return evidence_verify(memo, published)


def evidence_verify(memo: Memo, published: list[dict[str, Any]] | None = None) -> Verification:
    """The chain, its checkpoints, the rows they prove and, when given, the heads
    published for the memo, read as of one moment: what the sequencer chains and the
    webhooks add while it runs is neither a gap nor a row "added behind its back"."""
    with snapshot():
        return _verify(memo, published)


def _verify(memo: Memo, published: list[dict[str, Any]] | None) -> Verification:
    stored = [checkpoint_dict(c) for c in EvidenceCheckpoint.objects.filter(memo=memo).order_by("seq")]
    result = Verification(False, 0, key_ids=list(dict.fromkeys(c["key_id"] for c in stored)))
    result.pending = EvidenceRecord.objects.filter(memo=memo, seq__isnull=True, refused=False).count()
    problem, result.checkpoints = checkpoints.checkpoints_problem(public_keys(), stored)
    if problem:
        result.problem = problem
        return result
    walk = _Walk(heads={c["seq"]: c for c in stored}, wanted={h["seq"] for h in published or []})
    problem = _chain_problem(memo, walk) or _after_chain_problem(memo, walk, stored, published)
    result.heads = None if published is None else len(published)
    result.records, result.problem, result.ok = walk.records, problem, not problem
    return result


def _chain_problem(memo: Memo, walk: _Walk) -> str:
    """The first problem along the memo's chain, walked a page at a time."""
    for page in chained_pages(memo, _VERIFIED_FIELDS):
        if problem := walk.page(page):
            return problem
    return ""


def _after_chain_problem(
    memo: Memo, walk: _Walk, stored: list[dict[str, Any]], published: list[dict[str, Any]] | None
) -> str:
    """Once the whole chain is walked, in this order: every delivery matches its last
    handover and the newest checkpoint covers the chain (walk.end), the pending records
    are memo-service's, the chain holds the published heads, the approval holds, and
    every row is in the chain."""
    return (
        walk.end(stored[-1] if stored else None)
        or _forged_pending(memo)
        or _heads_problem(published, walk)
        or _approval_problem(memo, walk.approval)
        or _unchained(memo, walk.seen, walk.final_status)
        or after_send_problem(memo)
    )


def _heads_problem(published: list[dict[str, Any]] | None, walk: _Walk) -> str:
    if published is None:
        return ""
    return heads.heads_problem(public_keys(), published, walk.hashes.get, walk.records)


def _where(record: dict[str, Any]) -> str:
    return f"record {record['seq']} ({record['kind']} {record['object_id']})"


def _forged_pending(memo: Memo) -> str:
    """A pending or refused record whose tag does not hold: someone else wrote it."""
    queue = EvidenceRecord.objects.filter(memo=memo, seq__isnull=True).order_by("id")
    fields = ("id", "memo_id", "kind", "object_id", "payload", "created_at", "tag")
    last_id = 0
    while page := list(queue.filter(id__gt=last_id).values(*fields)[:SMALL_PAGE]):
        last_id = page[-1]["id"]
        for record in page:
            if not record_authentic(record):
                return f"pending record {record['id']} ({record['kind']} {record['object_id']}): not written by memo-service"
    return ""


def _approval_problem(memo: Memo, approval: dict[str, Any] | None) -> str:
    """A memo that told anyone anything was approved, and its templates are what the
    chain's newest approval record holds."""
    told = memo.status in _TOLD or Delivery.objects.filter(memo=memo).exists()
    if approval is None:
        pending = EvidenceRecord.objects.filter(memo=memo, kind=Kind.APPROVAL, seq__isnull=True, refused=False)
        if told and not pending.exists():
            return f"memo {memo.slug} is {memo.status} but its chain holds no approval record (its evidence is gone)"
        return ""
    current = memo_content(Memo.objects.prefetch_related("translations").get(pk=memo.pk))
    if mismatch := content_mismatch(approval["payload"], current, memo.content_hash):
        return f"{_where(approval)}: {mismatch} (altered after approval)"
    return ""


@dataclass
class _Walk:
    """Verification along the chain, a page at a time: each record follows the one
    before it, matches its hash and tag, the signed heads and the rows it proves."""

    heads: dict[int, dict[str, Any]]  # the signed checkpoints by the record they end at
    wanted: set[int] = field(default_factory=set)  # seqs of published heads: their hashes are kept
    hashes: dict[int, str] = field(default_factory=dict)
    records: int = 0  # verified so far
    prev_hash: str = GENESIS
    last_good: int = 0  # the last record a signed head matched
    first_since_good: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None  # the newest approval record
    seen: dict[str, set[int]] = field(
        default_factory=lambda: {Kind.ANSWER: set(), Kind.EVENT: set(), Kind.HANDOVER: set()}
    )
    final_status: dict[int, str] = field(default_factory=dict)  # delivery -> the status its last chained change says
    # Delivery -> how its last handover so far differs from its row. A delivery sent
    # twice has two handovers and the row is what the last one says: a difference is
    # reported at the end unless a later handover of the same delivery matches.
    altered: dict[int, str] = field(default_factory=dict)

    def page(self, page: list[dict[str, Any]]) -> str:
        # A handover's lines are read once: for the rows to fetch, then to compare.
        entries = [handover_entries(r["kind"], r["payload"]) for r in page]
        live = _live(page, entries)
        for record, handed in zip(page, entries, strict=True):
            if problem := self.record(record, live, handed):
                return problem
        return ""

    def record(self, record: dict[str, Any], live: dict[str, dict[Any, dict[str, Any]]], handed: Entries) -> str:
        seq, kind, object_id, payload = record["seq"], record["kind"], record["object_id"], record["payload"]
        where = _where(record)
        if seq != self.records + 1:
            return f"record {self.records + 1} is missing (next is {seq})"
        if record["prev_hash"] != self.prev_hash:
            return f"{where}: does not follow the record before it"
        payload_json = canonical(payload)  # once, for the hash and the tag
        if record_hash(self.prev_hash, kind, object_id, payload, payload_json) != record["hash"]:
            return f"{where}: its hash does not match its content (the record was altered)"
        if earlier_form(kind, payload):
            return f"{where}: written in an earlier form of the evidence that this version does not trust"
        if record_authentic(record, payload_json) is False:
            return f"{where}: not written by memo-service (its tag does not hold)"
        if problem := self.proves(where, record, live, handed):
            return problem
        if kind == Kind.STATUS:
            self.final_status[object_id] = payload.get("status", "")
        elif kind == Kind.APPROVAL:
            self.approval = record
        self.first_since_good = self.first_since_good or {"seq": seq, "kind": kind, "object_id": object_id}
        checkpoint = self.heads.get(seq)
        if checkpoint is not None:
            if checkpoint["head"] != record["hash"]:
                return checkpoints.rewritten(self.last_good, checkpoint, self.first_since_good)
            self.last_good, self.first_since_good = seq, None
        if seq in self.wanted:
            self.hashes[seq] = record["hash"]
        self.prev_hash, self.records = record["hash"], self.records + 1
        return ""

    def proves(
        self, where: str, record: dict[str, Any], live: dict[str, dict[Any, dict[str, Any]]], handed: Entries
    ) -> str:
        """The record matches the rows it proves: an answer or event its row (once), a
        handover each of its deliveries' rows (a difference waits for a later handover)."""
        kind, object_id, payload = record["kind"], record["object_id"], record["payload"]
        if kind in (Kind.ANSWER, Kind.EVENT):
            current = live[kind].get(object_id)
            if current is None:
                return f"{where}: the {kind} it proves no longer exists"
            if current != payload:
                return f"{where}: the {kind} was altered after it was recorded ({_changed(current, payload)})"
            if object_id in self.seen[kind]:
                return f"{where}: the {kind} is recorded twice (a record replayed)"
            self.seen[kind].add(object_id)
        for delivery_id, proved in handed:
            current = live[Kind.HANDOVER].get(delivery_id)
            if current is None or delivery_id is None:
                return f"{where}: delivery {delivery_id} it proves no longer exists"
            # Against the fields the record lists (its tag covers the list): a field the
            # row has and the record does not list is not compared.
            listed = {k: current[k] for k in proved if k in current} if isinstance(proved, dict) else None
            if listed == proved:
                self.altered.pop(delivery_id, None)
            else:
                self.altered[delivery_id] = (
                    f"{where}: delivery {delivery_id} was altered after it was recorded ({_changed(current, proved)})"
                )
            self.seen[Kind.HANDOVER].add(delivery_id)
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
        Kind.ANSWER: Answer.objects.filter(memo=memo),
        Kind.EVENT: DeliveryEvent.objects.filter(delivery__memo=memo),
        Kind.HANDOVER: Delivery.objects.filter(memo=memo, sent_at__isnull=False),
    }
    names = {Kind.ANSWER: "answer", Kind.EVENT: "event", Kind.HANDOVER: "delivery"}
    for kind, queryset in rows.items():
        for object_id in _ids(queryset):
            if object_id not in seen[kind] and object_id not in pending[kind]:
                return f"{names[kind]} {object_id} is not in the chain (added behind its back)"
    last_id = 0
    deliveries = Delivery.objects.filter(memo=memo).order_by("pk").values_list("pk", "status")
    while page := list(deliveries.filter(pk__gt=last_id)[:PAGE]):
        last_id = page[-1][0]
        for delivery_id, status in page:
            expected = final_status.get(delivery_id)
            changing = delivery_id in pending[Kind.HANDOVER] or delivery_id in pending[Kind.STATUS]
            if expected is not None and status != expected and not changing:
                return (
                    f"delivery {delivery_id}: its status is {status}, the chain's last word on it is {expected} "
                    "(altered after it was recorded)"
                )
    return ""


def _pending_ids(memo: Memo) -> dict[str, set[int]]:
    """What the memo's pending records (those the sequencer will chain) are of, by kind:
    answers, events and status changes by id, deliveries by the ids handovers list."""
    pending: dict[str, set[int]] = {Kind.ANSWER: set(), Kind.EVENT: set(), Kind.HANDOVER: set(), Kind.STATUS: set()}
    queue = EvidenceRecord.objects.filter(memo=memo, seq__isnull=True, refused=False)
    for kind, object_id, payload in queue.values_list("kind", "object_id", "payload"):
        if kind == Kind.HANDOVER:
            pending[kind].update(i for i, _ in handover_entries(kind, payload) if i is not None)
        elif kind in pending:
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
