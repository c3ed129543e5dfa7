"""What each evidence record holds: a canonical copy of what it proves, never the
email, name or organisation (erasure does not break it).

- approval: the approved content (every language's templates, the dates), its hash,
  the audience rules and who wrote, asked for and gave the approval;
- answer: the answer as recorded; event: the provider's event (not its raw payload);
- status: a delivery's change of status, naming the event that moved it;
- handover: one provider call, a line per email (handover_payload);
- case: a step of a case that the developer is told of or that decides it: a reply, a
  decision, its resolution (internal notes and assignments stay out: the audit log has them);
- withdrawal: the memo taken back, by whom, why, and the notice's text hash per language;
- notice: an email to one developer outside the send (a receipt), by its text hash.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.utils import timezone

from memo_service.lib.db import in_ids
from memo_service.memos.models import (
    CASE_CARRIED,
    Answer,
    Case,
    CaseEntry,
    Delivery,
    DeliveryEvent,
    DisputeResolution,
    EvidenceRecord,
    Memo,
    Notification,
)

Kind = EvidenceRecord.Kind
CARRIED = CASE_CARRIED


def approval_payload(
    memo: Memo,
    *,
    content: dict[str, Any],
    content_hash: str,
    rules: dict[str, Any],
    versions: dict[str, list[str]] | None = None,
    rendered: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`memo` as approved, its approver and approval time set; `versions`: for each
    condition on developer values, the versions its approver could preview (the send
    sends no other: compose/version_check.py); `rendered`: those versions' hashes, in
    each language (compose/rendered_versions.py)."""
    assert memo.approved_at is not None  # written in the transaction that approves it
    # A correction names the memo it corrects (correction.py).
    supersedes = {"supersedes": {"id": memo.supersedes.pk, "slug": memo.supersedes.slug}} if memo.supersedes else {}
    return {
        **supersedes,
        "content_hash": content_hash,
        "content": content,
        "rules": rules,
        "versions": versions or {},
        "rendered": rendered or [],
        "author": memo.author_id,
        "requested_by": memo.requested_by_id,
        "approver": memo.approver_id,
        # The names the export shows beside those ids (export_sections.approval_section).
        "usernames": {
            role: user.username
            for role, user in [
                ("author", memo.author),
                ("requested_by", memo.requested_by),
                ("approver", memo.approver),
            ]
            if user is not None
        },
        "approved_at": memo.approved_at.astimezone(dt.UTC).isoformat(),
    }


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
        "channel": answer.channel,
        "api_client": answer.api_client_id,
    }
    # What the page said the click means, and the page itself (answer/statement.py);
    # absent from the records of answers given before pages kept them.
    if answer.statement_hash or answer.page_hash:
        payload |= {"statement_hash": answer.statement_hash, "page_hash": answer.page_hash}
    if answer.statement:
        payload["statement"] = answer.statement
    return payload


def _utc(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def case_payload(entry: CaseEntry) -> dict[str, Any]:
    """A case's reply, decision or resolution (`entry`, its case loaded with its
    developer); the email that told the developer is named by its text hash. A dispute's
    decision also holds the countries before and after and whether it exempts them
    (not a carried one's: the decision on the correction has them)."""
    case = entry.case
    notification = entry.notification
    payload = {
        "case": case.pk,
        "answer": case.answer_id,
        "developer": case.developer.external_id,
        "case_kind": case.kind,
        "entry": entry.kind,
        "status": case.status,
        "outcome": case.outcome,
        "rationale": case.rationale if entry.kind != CaseEntry.Kind.REPLY else "",
        "text": entry.text,
        "by": entry.author_id,
        "at": _utc(entry.created_at),
        "notification": notification.pk if notification is not None else None,
        "notification_hash": notification.text_hash if notification is not None else "",
        "carried_from": case.carried_from_id,
    }
    if entry.kind == CaseEntry.Kind.DECISION and case.kind == Case.Kind.DISPUTE and case.outcome != CARRIED:
        resolution = DisputeResolution.objects.filter(answer_id=case.answer_id).first()
        if resolution is not None:
            payload |= {
                "previous_country": str(resolution.previous_country or ""),
                "new_country": str(resolution.new_country or ""),
                "exempt": resolution.exempt,
            }
    return payload


def withdrawal_payload(memo: Memo, *, notice_hashes: dict[str, str], notified: int) -> dict[str, Any]:
    """The memo withdrawn (its withdrawn_at, _by and reason set); `notice_hashes`: the
    notice's text hash in each language it was written in; `notified`: to how many."""
    return {
        "withdrawn_at": _utc(memo.withdrawn_at),
        "by": memo.withdrawn_by_id,
        "reason": memo.withdrawal_reason,
        "notice_hashes": notice_hashes,
        "notified": notified,
    }


def notice_payload(notification: Notification) -> dict[str, Any]:
    """An email to one developer outside the send (its developer loaded)."""
    return {
        "notification": notification.pk,
        "kind": notification.kind,
        "developer": notification.developer.external_id if notification.developer is not None else None,
        "language": notification.language,
        "text_hash": notification.text_hash,
        "at": _utc(notification.created_at),
    }


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


def status_payload(*, delivery_id: int, status: str, event: DeliveryEvent) -> dict[str, Any]:
    """A status change's record; the event that moved it is named by the provider's id
    for it, which its writer knows before the event's row has an id."""
    return {
        "delivery": delivery_id,
        "status": status,
        "at": timezone.now().isoformat(),
        "event": f"{event.provider}/{event.event_id}",
    }


# What a handover record proves of a delivery, as read from its row (by the send on
# SQLite, and by verification).
DELIVERY_FIELDS = (
    "id",
    "developer_id",
    "country",
    "language",
    "provider_message_id",
    "sent_at",
    "text_hash",
    "reason",
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
        "reason": row["reason"],  # why the developer was told: the chain proves it too
    }


def delivery_rows(ids: list[int]) -> dict[int, dict[str, Any]]:
    """The Delivery rows a handover proves, by id, with the fields it proves: one query."""
    if not ids:
        return {}
    return {row["id"]: row for row in Delivery.objects.filter(id__in=in_ids(ids)).values(*DELIVERY_FIELDS)}


# The keys of delivery_payload, in the order a handover's line lists them.
HANDOVER_FIELDS = ("delivery", "developer", "country", "language", "message_id", "sent_at", "text_hash", "reason")


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
    if kind != Kind.HANDOVER or not isinstance(payload, dict) or not isinstance(payload.get("lines"), str):
        return 1
    return max(1, payload["lines"].count("\n") + 1)


Entries = list[tuple[int | None, Any]]  # (delivery id, what a handover proves of it), per email


def handover_entries(kind: str, payload: Any) -> Entries:
    """(delivery id, what the record proves of it, as delivery_payload's dict) for a
    handover, read from its lines; a line that is not one is (None, the line)."""
    if kind != Kind.HANDOVER:
        return []
    entries: Entries = []
    lines = payload.get("lines") if isinstance(payload, dict) else None
    for line in lines.split("\n") if isinstance(lines, str) and lines else []:
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


def earlier_form(kind: str, payload: Any) -> bool:
    """A record written in a form this version no longer reads: a per-email `delivery`
    record, or a handover that lists ids or objects instead of lines."""
    if kind not in Kind.values:
        return True
    return kind == Kind.HANDOVER and not (isinstance(payload, dict) and isinstance(payload.get("lines"), str))
