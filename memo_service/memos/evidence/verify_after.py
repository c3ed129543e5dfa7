"""Verifying in the database what happened after the send, once the chain itself holds
(verify.py walks it first): the memo's row says who approved it, when, as its newest
approval record does; each case record matches the case entry it proves; a case's
outcome and rationale, and a dispute's decision, are what its last deciding record
says; every reply and decision is in the chain; a withdrawn memo's row says what its
withdrawal record does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import QuerySet

from memo_service.memos.evidence.payloads import case_payload
from memo_service.memos.models import Case, CaseEntry, DisputeResolution, EvidenceRecord, Memo

Kind = EvidenceRecord.Kind
PAGE = 500  # case records per query: memory stays flat but for a case's last decision
# What a case record proves of its entry for good (the case's status, outcome and
# rationale move on after it: the last deciding record is compared with those).
ENTRY_FIELDS = (
    "case",
    "answer",
    "developer",
    "case_kind",
    "entry",
    "text",
    "by",
    "at",
    "notification",
    "notification_hash",
    "carried_from",
    # A dispute's decision: the countries before and after, and whether it exempts them.
    "previous_country",
    "new_country",
    "exempt",
)
_CHAINED_ENTRIES = (CaseEntry.Kind.REPLY, CaseEntry.Kind.DECISION)


def _newest(memo: Memo, kind: str) -> dict[str, Any] | None:
    newest = (
        EvidenceRecord.objects.filter(memo=memo, kind=kind, seq__isnull=False)
        .order_by("-seq")
        .values("seq", "object_id", "payload")
        .first()
    )
    return dict(newest) if newest is not None else None


def _utc(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def _named(names: list[str]) -> str:
    return f"{', '.join(names)} {'differs' if len(names) == 1 else 'differ'}"


def _where(record: dict[str, Any], kind: str) -> str:
    return f"record {record['seq']} ({kind} {record['object_id']})"


def approvers_problem(memo: Memo) -> str:
    """The memo's row names the approvers and the time its newest approval record does."""
    record = _newest(memo, Kind.APPROVAL)
    if record is None or memo.approved_at is None or not isinstance(record["payload"], dict):
        return ""
    payload = record["payload"]
    row = {
        "author": memo.author_id,
        "requested_by": memo.requested_by_id,
        "approver": memo.approver_id,
        "approved_at": _utc(memo.approved_at),
    }
    if differ := [name for name, value in row.items() if payload.get(name) != value]:
        return f"{_where(record, Kind.APPROVAL)}: the memo's {_named(differ)} from it (altered after approval)"
    return ""


def withdrawal_problem(memo: Memo) -> str:
    """A withdrawn memo's row says when, by whom and why as its withdrawal record does."""
    record = _newest(memo, Kind.WITHDRAWAL)
    withdrawn = memo.status == Memo.Status.WITHDRAWN or memo.withdrawn_at is not None
    if record is None:
        pending = EvidenceRecord.objects.filter(memo=memo, kind=Kind.WITHDRAWAL, seq__isnull=True, refused=False)
        if withdrawn and not pending.exists():
            return f"memo {memo.slug} is withdrawn but its chain holds no withdrawal record"
        return ""
    payload = record["payload"] if isinstance(record["payload"], dict) else {}
    row = {
        "withdrawn_at": _utc(memo.withdrawn_at),
        "by": memo.withdrawn_by_id,
        "reason": memo.withdrawal_reason,
    }
    if differ := [name for name, value in row.items() if payload.get(name) != value]:
        return f"{_where(record, Kind.WITHDRAWAL)}: the memo's {_named(differ)} from it (altered after it)"
    return ""


def _page(records: QuerySet[EvidenceRecord]) -> list[dict[str, Any]]:
    return [dict(r) for r in records.values("seq", "object_id", "payload")[:PAGE]]


def cases_problem(memo: Memo) -> str:
    """Each case record matches its entry; each case (and its dispute's decision) ended
    as its last deciding record says; no reply or decision is missing from the chain."""
    records = EvidenceRecord.objects.filter(memo=memo, kind=Kind.CASE, seq__isnull=False).order_by("seq")
    decided: dict[int, dict[str, Any]] = {}  # case id -> its last deciding record's payload, and where it is
    chained: set[int] = set()
    last_seq = 0
    while page := _page(records.filter(seq__gt=last_seq)):
        last_seq = page[-1]["seq"]
        entries = CaseEntry.objects.filter(pk__in=[r["object_id"] for r in page]).select_related(
            "case__developer", "notification"
        )
        by_id: dict[Any, CaseEntry] = {e.pk: e for e in entries}
        for record in page:
            where, payload = _where(record, Kind.CASE), record["payload"]
            entry = by_id.get(record["object_id"])
            if entry is None or entry.case.memo_id != memo.pk:
                return f"{where}: the case entry it proves no longer exists"
            now = case_payload(entry)
            recorded = payload if isinstance(payload, dict) else {}
            if differ := [k for k in ENTRY_FIELDS if now.get(k) != recorded.get(k)]:
                return f"{where}: case {entry.case_id}'s {entry.kind} was altered after it was recorded ({', '.join(differ)})"
            chained.add(entry.pk)
            if recorded.get("entry") != CaseEntry.Kind.REPLY:
                decided[entry.case_id] = {"where": where, **recorded}
    return _decisions_problem(memo, decided) or _unchained_entries(memo, chained)


def _decisions_problem(memo: Memo, decided: dict[int, dict[str, Any]]) -> str:
    cases = Case.objects.filter(memo=memo).values_list("pk", "status", "outcome", "rationale", "kind", "answer_id")
    for case_id, status, outcome, rationale, kind, answer_id in cases.iterator():
        last = decided.get(case_id)
        if last is None or not (status == Case.Status.RESOLVED or outcome):
            continue
        if differ := [n for n, v in (("outcome", outcome), ("rationale", rationale)) if last.get(n) != v]:
            return f"{last['where']}: case {case_id}'s {_named(differ)} from it (altered after it was recorded)"
        if kind != Case.Kind.DISPUTE:
            continue
        resolution = DisputeResolution.objects.filter(answer_id=answer_id).values_list("outcome", "note").first()
        if resolution is not None and last.get("entry") == CaseEntry.Kind.DECISION:
            if differ := [n for n, v in zip(("outcome", "rationale"), resolution, strict=True) if last.get(n) != v]:
                return (
                    f"{last['where']}: the decision on case {case_id}'s dispute has another {', '.join(differ)} "
                    "(altered after it was recorded)"
                )
    return ""


def _unchained_entries(memo: Memo, chained: set[int]) -> str:
    pending = set(
        EvidenceRecord.objects.filter(memo=memo, kind=Kind.CASE, seq__isnull=True, refused=False).values_list(
            "object_id", flat=True
        )
    )
    entries = CaseEntry.objects.filter(case__memo=memo, kind__in=_CHAINED_ENTRIES).values_list("pk", "case_id", "kind")
    for entry_id, case_id, kind in entries.iterator():
        if entry_id not in chained and entry_id not in pending:
            return f"case {case_id}'s {kind} {entry_id} is not in the chain (added behind its back)"
    return ""


def after_send_problem(memo: Memo) -> str:
    return approvers_problem(memo) or cases_problem(memo) or withdrawal_problem(memo)
