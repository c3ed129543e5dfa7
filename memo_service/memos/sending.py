"""Send a batch of deliveries: claim, render, hand to the provider, record."""

from __future__ import annotations

import functools
import logging
from email.utils import formataddr
from typing import Any

from anymail.message import AnymailMessage
from django.core.mail import get_connection
from django.db import transaction
from django.db.models import F
from django.utils import timezone, translation
from django_countries import countries

from memo_service.memos import sandbox
from memo_service.memos.acks import ack_url
from memo_service.memos.dispatch import memo_finish_if_done
from memo_service.memos.models import Delivery
from memo_service.memos.rendering import MemoRenderer

log = logging.getLogger(__name__)


def deliveries_claim(*, delivery_ids: list[int]) -> list[Delivery]:
    """Move still-queued deliveries to sending; returns only those this call claimed.

    On PostgreSQL rows another worker holds are skipped (FOR UPDATE SKIP LOCKED); on
    SQLite the IMMEDIATE transaction serializes claims. Either way a delivery is sent by
    at most one claim.
    """
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(id__in=delivery_ids, status=Delivery.Status.QUEUED)
            .values_list("id", flat=True)
        )
        Delivery.objects.filter(id__in=ids).update(
            status=Delivery.Status.SENDING,
            attempts=F("attempts") + 1,
            status_changed_at=timezone.now(),
        )
    return list(
        Delivery.objects.filter(id__in=ids).select_related("developer", "memo").order_by("id")
    )


def delivery_record_sent(*, delivery_id: int, message_id: str, language: str) -> None:
    now = timezone.now()
    Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.SENDING).update(
        status=Delivery.Status.SENT, provider_message_id=message_id[:255], language=language,
        sent_at=now, status_changed_at=now, last_error="",
    )


def delivery_record_failure(*, delivery_id: int, error: str) -> None:
    Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.SENDING).update(
        status=Delivery.Status.FAILED, last_error=error[:2000], status_changed_at=timezone.now()
    )


@functools.lru_cache(maxsize=1024)
def country_name(code: str, language: str) -> str:
    """The country's name in the developer's language (django-countries' translations)."""
    with translation.override(language):
        return str(countries.name(code))


def developer_context(delivery: Delivery) -> dict[str, Any]:
    developer = delivery.developer
    return {
        "name": developer.name,
        "organization": developer.organization,
        "email": developer.email,
        "external_id": developer.external_id,
        "country": developer.country.code,
        "country_name": country_name(developer.country.code, developer.language),
        "language": developer.language,
    }


def _message_id(message: AnymailMessage) -> str:
    status = getattr(message, "anymail_status", None)
    if status is not None and status.message_id:
        return str(status.message_id)
    return str(message.extra_headers.get("Message-ID", ""))


def delivery_send_batch(*, delivery_ids: list[int]) -> None:
    deliveries = deliveries_claim(delivery_ids=delivery_ids)
    if not deliveries:
        return
    renderers: dict[int, MemoRenderer] = {}
    # One connection for the batch: anymail reuses its HTTP session, SMTP its socket.
    with get_connection() as connection:
        for delivery in deliveries:
            renderer = renderers.setdefault(delivery.memo_id, MemoRenderer(delivery.memo))
            developer = developer_context(delivery)
            try:
                language, email = renderer.render(
                    developer, ack_url(delivery.memo_id, delivery.developer_id)
                )
            except Exception as exc:  # the admin's template: recorded, never raised
                delivery_record_failure(
                    delivery_id=delivery.pk, error=f"template error: {sandbox.describe(exc)}"
                )
                continue
            message = AnymailMessage(
                subject=email.subject,
                body=email.text,
                to=[formataddr((developer["name"], developer["email"]))],
                connection=connection,
                # Our id, never personal data: tracking events carry it back to us.
                metadata={"delivery_id": str(delivery.pk)},
            )
            message.attach_alternative(email.html, "text/html")
            try:
                message.send()
            except Exception as exc:
                log.warning("delivery %s failed: %s", delivery.pk, type(exc).__name__)
                delivery_record_failure(delivery_id=delivery.pk, error=f"{type(exc).__name__}: {exc}")
                continue
            delivery_record_sent(
                delivery_id=delivery.pk, message_id=_message_id(message), language=language
            )
    for memo_id in renderers:
        memo_finish_if_done(memo_id=memo_id)
