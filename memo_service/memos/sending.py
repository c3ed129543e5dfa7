"""Send a batch of deliveries: claim each, render, hand to the provider, record."""

from __future__ import annotations

import logging
from email.utils import formataddr

import requests
from anymail.exceptions import AnymailRequestsAPIError
from anymail.message import AnymailMessage
from celery.exceptions import SoftTimeLimitExceeded
from django.core.mail import get_connection
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from urllib3.exceptions import NewConnectionError

from memo_service.memos import sandbox
from memo_service.memos.acks import ack_url
from memo_service.memos.dispatch import memo_finish_if_done
from memo_service.memos.models import Acknowledgement, Delivery
from memo_service.memos.rendering import MemoRenderer, developer_context

log = logging.getLogger(__name__)
S = Delivery.Status


def delivery_claim(*, delivery_id: int) -> bool:
    """Move one queued delivery to sending; False if someone else already has it.

    Claiming one row just before its send means a crash leaves at most one delivery in
    `sending` (the sweeper settles it), never a whole batch.
    """
    return bool(
        Delivery.objects.filter(pk=delivery_id, status=S.QUEUED).update(
            status=S.SENDING, attempts=F("attempts") + 1, status_changed_at=timezone.now()
        )
    )


def delivery_record_sent(*, delivery_id: int, message_id: str, language: str) -> None:
    """Record the provider's acceptance. A tracking event may have moved the status on
    already; the send time and message id are recorded all the same."""
    now = timezone.now()
    Delivery.objects.filter(pk=delivery_id).update(
        status=Case(When(status=S.SENDING, then=Value(S.SENT)), default=F("status")),
        provider_message_id=message_id[:255],
        language=language,
        sent_at=Coalesce(F("sent_at"), Value(now)),
        status_changed_at=now,
        last_error="",
    )


def delivery_record_failure(*, delivery_id: int, error: str, outcome_unknown: bool = False) -> None:
    """A send that failed (the provider refused or never got it), or whose outcome is
    unknown (it may have been accepted: tracking events will tell)."""
    Delivery.objects.filter(pk=delivery_id, status=S.SENDING).update(
        status=S.OUTCOME_UNKNOWN if outcome_unknown else S.FAILED,
        last_error=error[:2000],
        status_changed_at=timezone.now(),
    )


def delivery_record_skipped(*, delivery_id: int, reason: str) -> None:
    Delivery.objects.filter(pk=delivery_id, status=S.SENDING).update(
        status=S.SKIPPED, last_error=reason, status_changed_at=timezone.now()
    )


def _may_have_been_accepted(exc: BaseException) -> bool:
    """True when the provider may have accepted the message despite the error: the
    request went out but no answer came back (read timeout, dropped connection, time
    limit). An HTTP answer, or a connection never made, is a definite outcome."""
    if isinstance(exc, (SoftTimeLimitExceeded, TimeoutError)):
        return True
    if not isinstance(exc, AnymailRequestsAPIError) or exc.status_code is not None:
        return False
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, requests.ConnectTimeout):
        return False
    reason = getattr(cause.args[0], "reason", None) if cause is not None and cause.args else None
    return not isinstance(reason, NewConnectionError)


def delivery_send_batch(*, delivery_ids: list[int]) -> None:
    deliveries = (
        Delivery.objects.filter(id__in=delivery_ids, status=S.QUEUED)
        .select_related("developer", "memo")
        .order_by("id")
    )
    renderers: dict[tuple[int, bool], MemoRenderer] = {}
    # One connection for the batch: anymail reuses its HTTP session, SMTP its socket.
    with get_connection() as connection:
        for delivery in deliveries:
            if not delivery_claim(delivery_id=delivery.pk):
                continue
            reminder = delivery.kind == Delivery.Kind.REMINDER
            key = (delivery.memo_id, reminder)
            if key not in renderers:
                renderers[key] = MemoRenderer(delivery.memo, reminder=reminder)
            developer = delivery.developer
            if reminder and Acknowledgement.objects.filter(memo_id=delivery.memo_id, developer=developer).exists():
                delivery_record_skipped(delivery_id=delivery.pk, reason="not sent: the developer answered first")
                continue
            try:
                language, email = renderers[key].render(
                    developer_context(developer), ack_url(delivery.memo_id, developer.pk)
                )
            except Exception as exc:  # the admin's template: recorded, never raised
                delivery_record_failure(
                    delivery_id=delivery.pk, error=f"template error: {sandbox.describe(exc)}"
                )
                continue
            message = AnymailMessage(
                subject=email.subject,
                body=email.text,
                # From the database, never from what the template saw.
                to=[formataddr((developer.name, developer.email))],
                cc=_org_contact(delivery),
                connection=connection,
                # Our id, never personal data: tracking events carry it back to us.
                metadata={"delivery_id": str(delivery.pk)},
            )
            message.attach_alternative(email.html, "text/html")
            try:
                message.send()
            except Exception as exc:
                unknown = _may_have_been_accepted(exc)
                log.warning("delivery %s: %s (outcome unknown: %s)", delivery.pk, type(exc).__name__, unknown)
                delivery_record_failure(
                    delivery_id=delivery.pk, error=f"{type(exc).__name__}: {exc}", outcome_unknown=unknown
                )
                if isinstance(exc, SoftTimeLimitExceeded):
                    raise  # the rest stay queued; the sweeper re-enqueues them
                continue
            delivery_record_sent(
                delivery_id=delivery.pk,
                message_id=_message_id(message),
                language=language,
            )
    for memo_id in {memo_id for memo_id, _ in renderers}:
        memo_finish_if_done(memo_id=memo_id)


def _org_contact(delivery: Delivery) -> list[str]:
    """The organisation's contact, on the memo's last reminder only."""
    last = len(delivery.memo.reminder_days or [])
    contact = delivery.developer.org_contact_email
    if delivery.kind == Delivery.Kind.REMINDER and delivery.sequence == last and contact:
        return [contact]
    return []


def _message_id(message: AnymailMessage) -> str:
    status = getattr(message, "anymail_status", None)
    if status is not None and status.message_id:
        return str(status.message_id)
    return str(message.extra_headers.get("Message-ID", ""))
