"""A memo's templates: each language's, reminders included, with English to fall back
on; and the content an approval freezes, with its hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from memo_service.memos.compose import sandbox
from memo_service.memos.models import Memo

FALLBACK_LANGUAGE = "en"


def memo_sources(memo: Memo, language: str, reminder: bool = False) -> tuple[str, dict[str, str]]:
    """The templates for a language, falling back to English; returns the language used.

    For a reminder, each reminder template that is filled in replaces the memo's own;
    blank ones keep the memo's (the layout then adds the reminder's opening lines).
    """
    obj: Any = memo
    if language != FALLBACK_LANGUAGE:
        obj = next((t for t in memo.translations.all() if t.language == language), memo)
    used = language if obj is not memo else FALLBACK_LANGUAGE
    sources = template_sources(obj)
    if reminder:
        for field, reminder_field in zip(sandbox.TEMPLATE_FIELDS, sandbox.REMINDER_FIELDS, strict=True):
            if getattr(obj, reminder_field):
                sources[field] = getattr(obj, reminder_field)
    return used, sources


def template_sources(obj: Any) -> dict[str, str]:
    return {field: getattr(obj, field) for field in sandbox.TEMPLATE_FIELDS}


def reminder_sources(obj: Any) -> dict[str, str]:
    """The reminder templates an admin filled in, under the field they replace."""
    return {
        reminder_field: getattr(obj, reminder_field)
        for reminder_field in sandbox.REMINDER_FIELDS
        if getattr(obj, reminder_field)
    }


def memo_content(memo: Memo) -> dict[str, Any]:
    """Everything a recipient reads: every language's templates, reminders included,
    its statement of assent when written, and the dates. Approval keeps it whole in the
    evidence (approval.py)."""
    return {
        "title": memo.title,
        "effective_date": str(memo.effective_date),
        "ack_deadline": str(memo.ack_deadline),
        "languages": {
            getattr(obj, "language", FALLBACK_LANGUAGE): {
                **template_sources(obj),
                **reminder_sources(obj),
                **statement_source(obj),
            }
            for obj in [memo, *memo.translations.all()]
        },
    }


def statement_source(obj: Any) -> dict[str, str]:
    """The statement of assent the composer wrote, if any: a blank one is left out, so
    the content (and hash) of a memo without one is what it always was."""
    return {"statement": obj.statement} if obj.statement else {}


def content_hash_of(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def memo_content_hash(memo: Memo) -> str:
    """SHA-256 of memo_content."""
    return content_hash_of(memo_content(memo))
