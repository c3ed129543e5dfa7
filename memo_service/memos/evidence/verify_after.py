"""Verifying in the database what happened after the send, once the chain itself holds
(verify.py walks it first): the memo's row says who approved it, when, as its newest
approval record does; each case record matches the case entry it proves; a case's
status, outcome and rationale, and a dispute's decision, are what its last deciding
record says, and no case or dispute is decided without one (but those decided before
cases were kept: docs/evidence.md); every reply and decision is in the chain; each
email to a developer outside the send still has the text its record names; a memo's row
says what its withdrawal record does (withdrawn, when, by whom, why).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from memo_service.memos.evidence.payloads import CARRIED, case_payload
from memo_service.memos.evidence.tags import record_authentic
from memo_service.memos.models import Case, CaseEntry, DisputeResolution, EvidenceRecord, Memo, Notification
from memo_service.memos.notify.notifications import notification_hash

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
    if memo.status != Memo.Status.WITHDRAWN:
        return f"{_where(record, Kind.WITHDRAWAL)}: the memo is {memo.status}, and this record withdrew it (altered after it)"
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


def _pending_decided(memo: Memo) -> dict[int, dict[str, Any]]:
    """Case id -> its newest pending deciding record (authentic: verify.py checked every
    pending record's tag first), which the sequencer will chain."""
    pending: dict[int, dict[str, Any]] = {}
    queue = EvidenceRecord.objects.filter(memo=memo, kind=Kind.CASE, seq__isnull=True, refused=False).order_by("id")
    for record_id, object_id, payload in queue.values_list("id", "object_id", "payload"):
        if isinstance(payload, dict) and payload.get("entry") != CaseEntry.Kind.REPLY:
            pending[payload.get("case", 0)] = {"where": f"pending record {record_id} (case {object_id})", **payload}
    return pending


def cases_problem(memo: Memo) -> str:
    """Each case record matches its entry; each case (and its dispute's decision) ended
    as its last deciding record says, and none ended without one; no reply, decision or
    dispute's decision is missing from the chain."""
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
    decided |= _pending_decided(memo)
    return (
        _decisions_problem(memo, decided)
        or _unchained_entries(memo, chained)
        or _resolutions_problem(memo)
        or notifications_problem(memo)
    )


def _decisions_problem(memo: Memo, decided: dict[int, dict[str, Any]]) -> str:
    """A case with a deciding record ended as the last one says (resolved with its
    outcome and rationale, or not resolved); a case without one is open, unless it is a
    dispute decided before cases were kept (_backfilled)."""
    cases = Case.objects.filter(memo=memo).values_list("pk", "status", "outcome", "rationale", "kind", "answer_id")
    for case_id, status, outcome, rationale, kind, answer_id in cases.iterator():
        last = decided.get(case_id)
        resolved = status == Case.Status.RESOLVED
        if last is None:
            if (resolved or outcome) and not _backfilled(case_id, kind, answer_id, outcome, rationale):
                return f"case {case_id} says it was decided ({outcome or status}) and no record of the chain decides it"
            continue
        if differ := [n for n, v in (("outcome", outcome), ("rationale", rationale)) if last.get(n) != v]:
            return f"{last['where']}: case {case_id}'s {_named(differ)} from it (altered after it was recorded)"
        if resolved != (last.get("status") == Case.Status.RESOLVED):
            return (
                f"{last['where']}: case {case_id}'s status ({status}) differs from it (altered after it was recorded)"
            )
        if kind != Case.Kind.DISPUTE or outcome == CARRIED or last.get("entry") != CaseEntry.Kind.DECISION:
            continue  # a carried dispute is decided, and proven, on the correction
        resolution = DisputeResolution.objects.filter(answer_id=answer_id).values_list("outcome", "note").first()
        if resolution is None:
            return f"{last['where']}: the decision on case {case_id}'s dispute is gone (removed after it was recorded)"
        if differ := [n for n, v in zip(("outcome", "rationale"), resolution, strict=True) if last.get(n) != v]:
            return (
                f"{last['where']}: the decision on case {case_id}'s dispute has another {', '.join(differ)} "
                "(altered after it was recorded)"
            )
    return ""


def _decision_records(answer_id: int) -> list[dict[str, Any]]:
    """The authentic records, chained or pending, of the decisions on the cases (of any
    memo: a carried dispute is decided on its correction) of the answer `answer_id`."""
    entries = dict(
        CaseEntry.objects.filter(case__answer_id=answer_id, kind=CaseEntry.Kind.DECISION).values_list(
            "pk", "case__memo_id"
        )
    )
    records = EvidenceRecord.objects.filter(kind=Kind.CASE, object_id__in=list(entries), refused=False).values(
        "memo_id", "kind", "object_id", "payload", "created_at", "tag"
    )
    return [dict(r) for r in records if entries.get(r["object_id"]) == r["memo_id"] and record_authentic(r)]


def _resolutions_problem(memo: Memo) -> str:
    """Every decision on a dispute of the memo's answers is a case's decision in a chain
    (an exemption written by hand would stop the developer's reminders)."""
    resolutions = DisputeResolution.objects.filter(answer__memo=memo).values_list("answer_id", "outcome")
    for answer_id, outcome in resolutions.iterator():
        if any(_dict(r["payload"]).get("outcome") == outcome for r in _decision_records(answer_id)):
            continue
        case = Case.objects.filter(answer_id=answer_id, memo=memo).values_list("pk", "outcome", "rationale").first()
        if case is None or not _backfilled(case[0], Case.Kind.DISPUTE, answer_id, case[1], case[2]):
            return f"the decision ({outcome}) on answer {answer_id}'s dispute is in no record of the chain (added behind its back)"
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _backfilled(case_id: int, kind: str, answer_id: int, outcome: str, rationale: str) -> bool:
    """A dispute decided before memo-service kept cases (migration 0023 made its case
    resolved, with no record): its case says what its decision says, nothing records a
    decision on it, and its answer's record and its decision are both older than the
    first case record memo-service ever chained. An answer given since cannot pass."""
    if (
        kind != Case.Kind.DISPUTE
        or CaseEntry.objects.filter(case__answer_id=answer_id, kind=CaseEntry.Kind.DECISION).exists()
    ):
        return False
    resolution = DisputeResolution.objects.filter(answer_id=answer_id).values_list("outcome", "note", "resolved_at")
    answered = EvidenceRecord.objects.filter(kind=Kind.ANSWER, object_id=answer_id, seq__isnull=False).values(
        "memo_id", "kind", "object_id", "payload", "created_at", "tag"
    )
    decision, answer = resolution.first(), answered.first()
    if decision is None or decision[:2] != (outcome, rationale) or answer is None or not record_authentic(answer):
        return False
    first = _first_case_record()
    return first is None or (answer["created_at"] < first and decision[2] < first)


def _first_case_record() -> dt.datetime | None:
    """When memo-service first chained a case record (its writer's time, under its tag)."""
    records = EvidenceRecord.objects.filter(kind=Kind.CASE, seq__isnull=False).order_by("created_at")
    for record in records.values("memo_id", "kind", "object_id", "payload", "created_at", "tag")[:PAGE]:
        if record_authentic(record):
            return record["created_at"]
    return None


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


def notifications_problem(memo: Memo) -> str:
    """Each email to a developer outside the send says what its hash says (a text edited
    in its row is named); a reply's or decision's hash is proven by its case record, a
    withdrawal notice's by the withdrawal record, a receipt's by its notice record."""
    withdrawal = _newest(memo, Kind.WITHDRAWAL)
    notice_hashes = _dict(_dict(withdrawal["payload"]).get("notice_hashes")) if withdrawal else {}
    rows = Notification.objects.filter(memo=memo, developer__isnull=False).order_by("pk")
    fields = ("pk", "kind", "language", "subject", "text", "text_hash")
    last_id = 0
    while page := list(rows.filter(pk__gt=last_id).values(*fields)[:PAGE]):
        last_id = page[-1]["pk"]
        notices = _notice_records(memo, [n["pk"] for n in page if n["kind"] == Notification.Kind.RECEIPT])
        for row in page:
            where = f"notification {row['pk']} ({row['kind']})"
            if notification_hash(row["subject"], row["text"]) != row["text_hash"]:
                return f"{where}: its subject or text was altered after it was made (its hash no longer matches)"
            if row["kind"] == Notification.Kind.WITHDRAWAL and row["text_hash"] not in _named_notices(
                notice_hashes, row
            ):
                return f"{where}: the withdrawal record names no such notice in {row['language'] or 'its language'}"
            if row["kind"] == Notification.Kind.RECEIPT and (problem := _receipt_problem(where, row, notices)):
                return problem
    return ""


def _named_notices(notice_hashes: dict[str, Any], row: dict[str, Any]) -> set[Any]:
    """The hashes the withdrawal record names for a notice in the row's language (one
    with no language is in the default one)."""
    return {notice_hashes.get(row["language"]), notice_hashes.get(row["language"] or settings.LANGUAGE_CODE)} - {None}


def _notice_records(memo: Memo, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The notice records (chained, or pending and not refused) of notifications `ids`."""
    if not ids:
        return {}
    records = EvidenceRecord.objects.filter(memo=memo, kind=Kind.NOTICE, object_id__in=ids, refused=False)
    return {r["object_id"]: dict(r) for r in records.order_by("id").values("seq", "object_id", "payload")}


def _receipt_problem(where: str, row: dict[str, Any], notices: dict[int, dict[str, Any]]) -> str:
    record = notices.get(row["pk"])
    if record is None:
        return f"{where}: no record of the chain names it (added behind its back)"
    recorded = _dict(record["payload"])
    if differ := [n for n in ("kind", "language", "text_hash") if recorded.get(n) != row[n]]:
        at = _where(record, Kind.NOTICE) if record["seq"] is not None else "its pending notice record"
        return f"{at}: {where}'s {_named(differ)} from it (altered after it was recorded)"
    return ""


def after_send_problem(memo: Memo) -> str:
    return approvers_problem(memo) or cases_problem(memo) or withdrawal_problem(memo)
