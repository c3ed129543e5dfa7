"""The parts of the JSON evidence export beside its recipients: the approval (who, when,
the content hash, the hashes of every version approved), the cases (every reply and
decision, each with the chain record that proves it), the withdrawal and the memos it
corrects or that correct it. An auditor reads them with no database, and
`verify_evidence --file` checks them against the chain (export_claims.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model

from memo_service.lib.db import in_ids
from memo_service.memos.evidence.payloads import CARRIED
from memo_service.memos.models import Case, CaseEntry, DisputeResolution, EvidenceRecord, Memo

Kind = EvidenceRecord.Kind
# What a dispute's decision record holds beside its outcome (payloads.case_payload).
DECISION_COUNTRIES = ("previous_country", "new_country", "exempt")
CASES_PAGE = 500  # cases per query, their entries and records with them: memory stays flat
# The entries of a case an export lists: what the developer was told and what decided
# it. Internal notes and assignments stay out (the audit log has them).
LISTED_ENTRIES = (CaseEntry.Kind.REPLY, CaseEntry.Kind.DECISION, CaseEntry.Kind.STATUS)


def _utc(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def _people(ids: set[int | None]) -> dict[int, dict[str, Any]]:
    found = get_user_model().objects.filter(pk__in=[i for i in ids if i is not None]).values_list("pk", "username")
    return {pk: {"id": pk, "username": username} for pk, username in found}


def _person(people: dict[int, dict[str, Any]], user_id: int | None) -> dict[str, Any] | None:
    if user_id is None:
        return None
    return people.get(user_id, {"id": user_id, "username": None})  # a user since deleted


def _chained(memo: Memo, kind: str, object_ids: list[int] | None = None) -> list[dict[str, Any]]:
    records = EvidenceRecord.objects.filter(memo=memo, kind=kind, seq__isnull=False)
    if object_ids is not None:
        records = records.filter(object_id__in=in_ids(object_ids))
    return [dict(r) for r in records.order_by("seq").values("seq", "object_id", "payload")]


def approval_section(memo: Memo) -> dict[str, Any] | None:
    """Who wrote, asked for and gave the approval, when, the content hash, and the
    hashes of every version the approver could see (from the newest approval record,
    where they are kept); as the memo's row says while it is approved, as the record
    says once an edit voided it; None for a memo never approved."""
    newest = (
        EvidenceRecord.objects.filter(memo=memo, kind=Kind.APPROVAL, seq__isnull=False)
        .order_by("-seq")
        .values("seq", "payload")
        .first()
    )
    payload = newest["payload"] if newest is not None and isinstance(newest["payload"], dict) else {}
    approved_at: str | None
    content_hash: str | None
    if memo.approved_at is not None:
        ids = {"author": memo.author_id, "requested_by": memo.requested_by_id, "approver": memo.approver_id}
        approved_at, content_hash = _utc(memo.approved_at), memo.content_hash
    elif newest is not None:
        ids = {role: payload.get(role) for role in ("author", "requested_by", "approver")}
        approved_at, content_hash = payload.get("approved_at"), payload.get("content_hash")
    else:
        return None
    people = _people(set(ids.values()))
    return {
        "record": newest["seq"] if newest is not None else None,
        **{role: _person(people, user_id) for role, user_id in ids.items()},
        "approved_at": approved_at,
        "content_hash": content_hash,
        "versions": payload.get("versions", {}),
        "rendered": payload.get("rendered", []),
    }


def withdrawal_section(memo: Memo) -> dict[str, Any] | None:
    """The memo taken back: when, by whom, why, and the notice sent (its text hash in
    each language, to how many: the withdrawal record's)."""
    if memo.withdrawn_at is None:
        return None
    records = _chained(memo, Kind.WITHDRAWAL)
    newest = records[-1] if records else None
    payload = newest["payload"] if newest and isinstance(newest["payload"], dict) else {}
    return {
        "record": newest["seq"] if newest else None,
        "withdrawn_at": _utc(memo.withdrawn_at),
        "by": _person(_people({memo.withdrawn_by_id}), memo.withdrawn_by_id),
        "reason": memo.withdrawal_reason,
        "notice_hashes": payload.get("notice_hashes", {}),
        "notified": payload.get("notified"),
    }


def links_section(memo: Memo) -> dict[str, Any]:
    """The memo this one corrects (`supersedes`) and those that correct it (`corrections`)."""
    earlier = memo.supersedes
    later = Memo.objects.filter(supersedes=memo).order_by("id").values("id", "slug", "status")
    return {
        "supersedes": {"id": earlier.pk, "slug": earlier.slug} if earlier is not None else None,
        "corrections": list(later),
    }


def _resolution(resolution: DisputeResolution | None) -> dict[str, Any] | None:
    if resolution is None:
        return None
    return {
        "outcome": resolution.outcome,
        "rationale": resolution.note,
        "previous_country": str(resolution.previous_country or ""),
        "new_country": str(resolution.new_country or ""),
        "exempt": resolution.exempt,
        "resolved_by": resolution.resolved_by_id,
        "resolved_at": _utc(resolution.resolved_at),
    }


def _entry(entry: CaseEntry, record: dict[str, Any] | None, people: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """An entry as the export lists it; its outcome, rationale and the case's status
    then are the ones its chain record holds (the case's row holds only the latest)."""
    payload = record["payload"] if record and isinstance(record["payload"], dict) else {}
    notification = entry.notification
    row: dict[str, Any] = {
        "id": entry.pk,
        "kind": entry.kind,
        "record": record["seq"] if record else None,
        "by": _person(people, entry.author_id),
        "at": _utc(entry.created_at),
        "text": entry.text,
    }
    if entry.kind != CaseEntry.Kind.REPLY:
        row |= {
            "status": payload.get("status"),
            "outcome": payload.get("outcome"),
            "rationale": payload.get("rationale"),
        }
        row |= {key: payload[key] for key in DECISION_COUNTRIES if key in payload}
    if notification is not None:
        row["notification"] = {
            "id": notification.pk,
            "text_hash": notification.text_hash,
            "status": notification.status,
            "sent_at": _utc(notification.sent_at),
        }
    return row


def _case(case: Case, entries: list[dict[str, Any]], people: dict[int, dict[str, Any]]) -> dict[str, Any]:
    # A carried dispute is decided on the correction: its resolution is the correction's.
    disputed = case.kind == Case.Kind.DISPUTE and case.outcome != CARRIED
    resolution = getattr(case.answer, "resolution", None) if disputed else None
    return {
        "id": case.pk,
        "kind": case.kind,
        "developer": case.developer.external_id,
        "answer": case.answer_id,
        "status": case.status,
        "assignee": _person(people, case.assignee_id),
        "outcome": case.outcome,
        "rationale": case.rationale,
        "opened_at": _utc(case.opened_at),
        "resolved_at": _utc(case.resolved_at),
        "resolved_by": _person(people, case.resolved_by_id),
        "carried_from": case.carried_from_id,
        "resolution": _resolution(resolution),
        "entries": entries,
    }


def cases_section(memo: Memo) -> Iterator[dict[str, Any]]:
    """Every case of the memo, oldest first, a page of cases per query."""
    cases = Case.objects.filter(memo=memo).select_related("developer", "answer__resolution").order_by("id")
    last_id = 0
    while page := list(cases.filter(id__gt=last_id)[:CASES_PAGE]):
        last_id = page[-1].pk
        entries = list(
            CaseEntry.objects.filter(case_id__in=in_ids([c.pk for c in page]), kind__in=LISTED_ENTRIES)
            .select_related("notification")
            .order_by("created_at", "id")
        )
        records = {r["object_id"]: r for r in _chained(memo, Kind.CASE, [e.pk for e in entries])}
        people = _people(
            {e.author_id for e in entries} | {c.assignee_id for c in page} | {c.resolved_by_id for c in page}
        )
        by_case: dict[int, list[dict[str, Any]]] = {}
        for entry in entries:
            record = records.get(entry.pk)
            if record is None and entry.kind == CaseEntry.Kind.STATUS:
                continue  # a change of status nobody was told of, that decided nothing: not evidence
            by_case.setdefault(entry.case_id, []).append(_entry(entry, record, people))
        for case in page:
            yield _case(case, by_case.get(case.pk, []), people)
