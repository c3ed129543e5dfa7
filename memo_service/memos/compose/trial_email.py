"""A composer's test email, a trial of the memo: the memo as one developer would get it,
sent to the composer, its links inert (they are refused with the page that says so)."""

from __future__ import annotations

from django.core.mail import EmailMultiAlternatives

from memo_service.memos.audit import Actor, audit_record
from memo_service.memos.compose.emails import RenderedEmail
from memo_service.memos.models import Memo


def memo_send_test(
    *, memo: Memo, email: RenderedEmail, to: str, by: Actor, developer: str | None, language: str | None
) -> None:
    EmailMultiAlternatives(
        subject=f"[TEST] {email.subject}",
        body=email.text,
        to=[to],
        alternatives=[(email.html, "text/html")],
    ).send()
    audit_record(actor=by, action="memo.test_sent", obj=memo, developer=developer, language=language)
