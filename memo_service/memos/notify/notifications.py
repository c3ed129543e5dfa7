"""Emails to one person outside a memo's send: a case's reply, a dispute's outcome, a
withdrawal notice, a receipt, a request for review. Each is a Notification row made in
the transaction of what it tells (its text rendered then, in the recipient's language,
and kept with its hash), then sent by a worker through the same EMAIL_BACKEND (the
provider's anymail backend, or the outbox) once that transaction commits.

The texts are Django templates of ours, never a composer's: templates/email/notification/
<kind>.subject.txt and <kind>.txt, rendered under the recipient's language.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation

from memo_service.developers.models import Developer
from memo_service.memos.models import Memo, Notification
from memo_service.memos.queue import enqueue_on_commit
from memo_service.memos.send.failures import http_status

log = logging.getLogger(__name__)
Kind = Notification.Kind
Status = Notification.Status
SUBJECT_MAX = 300
# Notifications a task sends over one connection (a withdrawal notice to a whole audience).
SEND_CHUNK = 200


def notification_hash(subject: str, text: str) -> str:
    """What a notification's evidence names: the SHA-256 of its subject and text."""
    return hashlib.sha256(f"{subject}\n\n{text}".encode()).hexdigest()


def notification_text(kind: str, language: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, text) of a notification of `kind` in `language`."""
    with translation.override(language or settings.LANGUAGE_CODE):
        subject = render_to_string(f"email/notification/{kind}.subject.txt", dict(context))
        text = render_to_string(f"email/notification/{kind}.txt", dict(context))
    return " ".join(subject.split())[:SUBJECT_MAX], text.strip() + "\n"


def notification_create(
    *,
    kind: str,
    memo: Memo,
    context: Mapping[str, Any],
    developer: Developer | None = None,
    user: User | None = None,
) -> Notification:
    """Record a notification to a developer (in their language) or a member of staff,
    and send it once the caller's transaction commits."""
    assert (developer is None) != (user is None), "a notification has exactly one recipient"
    language = developer.language if developer is not None else settings.LANGUAGE_CODE
    text = notification_text(kind, language, {"memo": memo, **context})
    notification = _notification(kind, memo, language, text, developer=developer, user=user)
    notification.save()
    enqueue_on_commit("memos.notifications_send", [notification.pk])
    return notification


def notifications_create(
    *, kind: str, memo: Memo, developers: Iterable[Developer], context: Mapping[str, Any]
) -> list[Notification]:
    """The same notification to many developers, each in their language (a text is
    rendered once per language); sent in chunks once the caller's transaction commits."""
    texts: dict[str, tuple[str, str]] = {}
    rows = []
    for developer in developers:
        language = developer.language or settings.LANGUAGE_CODE
        if language not in texts:
            texts[language] = notification_text(kind, language, {"memo": memo, **context})
        rows.append(_notification(kind, memo, language, texts[language], developer=developer))
    # PostgreSQL and SQLite (3.35+) give the new rows' ids back from the insert.
    created = Notification.objects.bulk_create(rows, batch_size=1_000)
    ids = [n.pk for n in created]
    for start in range(0, len(ids), SEND_CHUNK):
        enqueue_on_commit("memos.notifications_send", ids[start : start + SEND_CHUNK])
    return created


def _notification(
    kind: str,
    memo: Memo,
    language: str,
    text: tuple[str, str],
    *,
    developer: Developer | None = None,
    user: User | None = None,
) -> Notification:
    """A notification not saved yet, with its (subject, text) and their hash."""
    subject, body = text
    return Notification(
        kind=kind,
        memo=memo,
        developer=developer,
        user=user,
        language=language,
        subject=subject,
        text=body,
        text_hash=notification_hash(subject, body),
    )


def _address(notification: Notification) -> str:
    if notification.developer is not None:
        if notification.developer.erased_at is not None or not notification.developer.email:
            return ""
        return notification.developer.email
    return notification.user.email if notification.user is not None else ""


def notifications_send(*, notification_ids: list[int]) -> None:
    """Send the queued notifications among `notification_ids`, each once: a notification
    is claimed (queued → sending) before its call and recorded after it. One that a
    worker died sending stays "sending": it may or may not have gone, and is not sent
    again (the same rule as a memo's email)."""
    claimed = []
    for pk in notification_ids:
        if Notification.objects.filter(pk=pk, status=Status.QUEUED).update(status=Status.SENDING):
            claimed.append(pk)
    if not claimed:
        return
    connection = get_connection()
    for notification in Notification.objects.filter(pk__in=claimed).select_related("developer", "user", "memo"):
        _send_one(notification, connection)


def _send_one(notification: Notification, connection: Any) -> None:
    address = _address(notification)
    if not address:
        _record(notification, Status.FAILED, reason="no address: the recipient has none, or was erased")
        return
    message = EmailMessage(
        subject=notification.subject,
        body=notification.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        connection=connection,
    )
    message.extra_headers["X-Memo-Notification"] = str(notification.pk)
    try:
        message.send()
    except Exception as exc:  # noqa: BLE001  (the provider's refusal is the notification's reason)
        log.warning("notification %s not sent: %s", notification.pk, type(exc).__name__)
        _record(notification, Status.FAILED, reason=_reason(exc))
        return
    status = getattr(message, "anymail_status", None)
    _record(notification, Status.SENT, message_id=str(getattr(status, "message_id", "") or ""))


def _reason(exc: Exception) -> str:
    """The error's kind and the provider's HTTP status: never its text, which may echo
    a request's credentials or the address."""
    status = http_status(exc)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def _record(notification: Notification, status: str, *, reason: str = "", message_id: str = "") -> None:
    with transaction.atomic():
        Notification.objects.filter(pk=notification.pk, status=Status.SENDING).update(
            status=status,
            status_reason=reason[:1000],
            provider_message_id=message_id[:255],
            sent_at=timezone.now() if status == Status.SENT else None,
        )
