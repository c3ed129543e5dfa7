"""The approved text, as the chain's approval record holds it, and what differs from it.

Approval writes a record of the content approved (every language's templates and the
dates, rendering.memo_content), its hash, the audience rules and the approvers. Every
render of a memo that was approved (the send, the developer's page, reminders, notices)
first compares what it is about to use with that record, whose tag proves that the
service wrote it: templates rewritten in the database are refused, never shown or sent.
"""

from __future__ import annotations

from typing import Any

from memo_service.memos.evidence.tags import record_authentic
from memo_service.memos.models import EvidenceRecord


class NotApproved(Exception):
    """The memo's templates are not the ones approved: nothing may be rendered from them."""


def approval_record(memo_id: int) -> EvidenceRecord | None:
    """The memo's newest approval record (a memo re-approved after an edit has several)."""
    return EvidenceRecord.objects.filter(memo_id=memo_id, kind=EvidenceRecord.Kind.APPROVAL).order_by("-id").first()


def approval_problem(record: EvidenceRecord | None) -> str:
    if record is None:
        return "it has no approval record in its evidence"
    if record_authentic(vars(record)) is False:
        return f"its approval record ({record.pk}) was not written by memo-service"
    return ""


def content_differences(approved: Any, current: dict[str, Any]) -> list[str]:
    """The fields of `current` (rendering.memo_content) that differ from the approved
    content, by name: "subject (zh-hans)", "effective_date"."""
    approved = approved if isinstance(approved, dict) else {}
    differ = [key for key in sorted(current) if key != "languages" and current[key] != approved.get(key)]
    was, now = approved.get("languages") or {}, current.get("languages") or {}
    for language in sorted(set(was) | set(now)):
        if language not in now or language not in was:
            differ.append(f"translation {language} ({'added' if language in now else 'removed'})")
            continue
        fields = set(was[language]) | set(now[language])
        differ += [
            f"{field} ({language})" for field in sorted(fields) if was[language].get(field) != now[language].get(field)
        ]
    return differ


def memo_not_approved(memo_id: int, content: dict[str, Any], content_hash: str) -> str:
    """Why the memo's current content (`content`, and the hash on its row) may not be
    rendered as approved, or "" when it may."""
    record = approval_record(memo_id)
    if problem := approval_problem(record):
        return problem
    assert record is not None  # approval_problem says so otherwise
    if differ := content_differences(record.payload.get("content"), content):
        return f"{', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from the approved text"
    if record.payload.get("content_hash") != content_hash:
        return "its content hash is not the one approved"
    return ""


def approved_or_raise(memo_id: int, content: dict[str, Any], content_hash: str) -> None:
    if problem := memo_not_approved(memo_id, content, content_hash):
        raise NotApproved(f"memo {memo_id}: {problem}")
