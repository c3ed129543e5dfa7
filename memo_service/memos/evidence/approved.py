"""The approved text, as the chain's approval record holds it, and what differs from it.

Approval writes a record of the content approved (every language's templates and the
dates, sources.memo_content), its hash, the audience rules and the approvers. Every
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
    """The fields of `current` (sources.memo_content) that differ from the approved
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


def content_mismatch(approved: Any, content: dict[str, Any], content_hash: str) -> str:
    """How the memo's content (sources.memo_content, and the hash on its row) differs
    from an approval record's payload, or "" when it does not."""
    approved = approved if isinstance(approved, dict) else {}
    if differ := content_differences(approved.get("content"), content):
        return f"the memo's {', '.join(differ)} differ from the text approved"
    if approved.get("content_hash") != content_hash:
        return "the memo's content hash is not the one approved"
    return ""


def approved_or_raise(memo_id: int, content: dict[str, Any], content_hash: str) -> None:
    """Raise NotApproved unless the memo's content is what its newest approval record,
    written by memo-service, holds."""
    record = approval_record(memo_id)
    problem = approval_problem(record) or content_mismatch(record.payload if record else None, content, content_hash)
    if problem:
        raise NotApproved(f"memo {memo_id}: {problem}")
