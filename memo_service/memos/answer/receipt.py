"""A developer's receipt of their answers to a memo: a plain-text file they download from
their page (GET /ack/memo/<id>/receipt/) and, when the memo asks for it
(Memo.email_receipt), an email sent with each answer.

It holds the memo's text as sent to them, the statement of assent, each answer with its
time (UTC), the hashes the evidence chain keeps of them, and how to check those hashes.
The link their email carried is not in it (the page's address stands in its place), so
the file can be kept or shown to anyone. One template, templates/email/notification/
receipt.txt, writes the file and the email.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.urls import reverse

from memo_service.memos.answer.sent_text import delivery_shown, sent_memo, target_text
from memo_service.memos.answer.statement import assent_shown
from memo_service.memos.answer.tokens import AnswerTarget
from memo_service.memos.evidence.append import evidence_append
from memo_service.memos.evidence.payloads import notice_payload
from memo_service.memos.models import Answer, EvidenceRecord, Notification
from memo_service.memos.notify.notifications import notification_create, notification_text

RECEIPT = Notification.Kind.RECEIPT


def page_url(memo_id: int) -> str:
    """The developer's page without its token: it opens only with their cookie."""
    return settings.SITE_URL + reverse("ack-page", args=[memo_id])


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def receipt_context(target: AnswerTarget) -> dict[str, Any] | None:
    """What the receipt says, or None before the developer's first answer."""
    answers = list(Answer.objects.filter(memo=target.memo, developer=target.developer).order_by("id"))
    if not answers:
        return None
    memo = sent_memo(target.memo)
    shown = target_text(target, page_url(memo.pk))
    delivery = delivery_shown(target)
    # The statement as the developer acknowledged it, kept with their answer: rebuilt, a
    # default one could differ after an upgrade. The page's own before an acknowledgement.
    kept = next((a.statement for a in reversed(answers) if a.statement), "")
    return {
        "memo_id": memo.pk,
        "external_id": target.developer.external_id,
        "language": shown.language,
        "subject": shown.subject,
        "text": shown.text.strip(),
        "statement": kept or assent_shown(memo, shown.language).text,
        "content_hash": memo.content_hash,
        "text_hash": delivery.text_hash if delivery is not None else "",
        "answers": [
            {
                "response": a.response,
                "at": _utc(a.created_at),
                "comment": a.comment,
                "country": a.country_claimed or None,  # named in the receipt's language
                "statement_hash": a.statement_hash,
                "page_hash": a.page_hash,
            }
            for a in answers
        ],
    }


def receipt_text(target: AnswerTarget) -> tuple[str, str] | None:
    """(subject, text) of the receipt in the language of the developer's page, or None
    before their first answer."""
    context = receipt_context(target)
    if context is None:
        return None
    return notification_text(RECEIPT, context["language"], {"memo": target.memo, **context})


def receipt_email(target: AnswerTarget, answer: Answer) -> Notification:
    """Email the developer the receipt of `answer` (and their answers before it), in the
    transaction that records it, with the evidence record that names its text."""
    context = receipt_context(target)
    assert context is not None, f"answer {answer.pk} is recorded: there is a receipt"
    notification = notification_create(kind=RECEIPT, memo=target.memo, developer=target.developer, context=context)
    evidence_append(
        memo_id=target.memo.pk,
        kind=EvidenceRecord.Kind.NOTICE,
        object_id=notification.pk,
        payload=notice_payload(notification),
    )
    return notification
