"""Provider tracking events (through anymail's webhooks) onto our Delivery rows.

anymail validates the webhook (basic auth with ANYMAIL_WEBHOOK_SECRET, plus the
provider's signature where it has one), normalizes the payload and sends the `tracking`
signal; this module stores each event once and moves the Delivery forward. An exception
here makes anymail answer 500 and the provider retry, so only real faults raise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from anymail.exceptions import AnymailConfigurationError
from anymail.signals import AnymailTrackingEvent, tracking
from anymail.utils import get_anymail_setting
from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, get_resolver
from django.views.decorators.csrf import csrf_exempt

from memo_service.developers.models import Developer
from memo_service.memos.delivery_status import delivery_advance
from memo_service.memos.evidence.chain import evidence_record_event
from memo_service.memos.models import Delivery, DeliveryEvent

log = logging.getLogger(__name__)

DeliveryStatus = Delivery.Status
STATUS_FOR_EVENT = {
    "queued": DeliveryStatus.SENT,
    "sent": DeliveryStatus.SENT,
    "rejected": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
    "delivered": DeliveryStatus.DELIVERED,
    "bounced": DeliveryStatus.BOUNCED,
    "complained": DeliveryStatus.COMPLAINED,
}
EMAIL_STATUS_FOR = {
    DeliveryStatus.BOUNCED: Developer.EmailStatus.BOUNCED,
    DeliveryStatus.COMPLAINED: Developer.EmailStatus.COMPLAINED,
}


def _payload(event: AnymailTrackingEvent) -> Any:
    raw = event.esp_event
    try:
        return json.loads(json.dumps(raw, default=str))
    except (TypeError, ValueError):
        return {"raw": str(raw)}


class EventInvalid(ValueError):
    """An event we cannot read: answered 400 with the reason (the provider need not retry)."""


def _find_delivery(event: AnymailTrackingEvent) -> Delivery | None:
    metadata = event.metadata or {}
    if not isinstance(metadata, dict):
        raise EventInvalid(f"metadata must be an object, not {type(metadata).__name__}")
    delivery_id = metadata.get("delivery_id")
    if delivery_id and str(delivery_id).isascii() and str(delivery_id).isdigit():
        return Delivery.objects.filter(pk=int(delivery_id)).first()
    if event.message_id:
        return Delivery.objects.filter(provider_message_id=event.message_id).first()
    return None


def delivery_record_event(*, event: AnymailTrackingEvent, provider: str) -> DeliveryEvent | None:
    """Store a tracking event once and apply it; returns None for a replayed event."""
    payload = _payload(event)
    event_id = event.event_id or hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    delivery = _find_delivery(event)
    try:
        with transaction.atomic():
            stored = DeliveryEvent.objects.create(
                provider=provider[:30],
                event_id=str(event_id)[:255],
                event_type=event.event_type or "unknown",
                delivery=delivery,
                message_id=str(event.message_id or "")[:255],
                description=str(event.description or event.reject_reason or "")[:2000],
                occurred_at=event.timestamp,
                payload=payload,
            )
            if delivery is not None:
                new_status = STATUS_FOR_EVENT.get(event.event_type or "")
                moved = new_status is not None and _advance(delivery, new_status, event)
                evidence_record_event(event=stored, memo_id=delivery.memo_id, status=new_status if moved else None)
    except IntegrityError:
        return None  # seen before: the provider retried or replayed it
    return stored


def _advance(delivery: Delivery, new_status: Delivery.Status, event: AnymailTrackingEvent) -> bool:
    """Move the delivery forward; False when it already is as far or further. A bounce
    or complaint marks the address, so no later memo is mailed to it."""
    moved = delivery_advance(
        delivery=delivery,
        to=new_status,
        reason=str(event.description or event.reject_reason or ""),
        message_id=str(event.message_id or ""),
    )
    if moved and new_status in EMAIL_STATUS_FOR:
        Developer.objects.filter(pk=delivery.developer_id).update(email_status=EMAIL_STATUS_FOR[new_status])
    return moved


@receiver(tracking)
def handle_tracking(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    delivery_record_event(event=event, provider=esp_name)


def _refused(status: int, reason: str) -> HttpResponse:
    return HttpResponse(reason + "\n", status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt
def tracking_webhook(request: HttpRequest, esp: str) -> HttpResponse:
    """/anymail/<esp>/tracking/: anymail's own webhook view, step by step (its
    documented hooks: validators, parse_events, the tracking signal), so that what a
    provider sends wrong is answered 400 with the reason instead of 500 and a retry, and
    nothing is accepted without ANYMAIL_WEBHOOK_SECRET (anymail alone would only warn)."""
    try:
        match = get_resolver("anymail.urls").resolve(f"/{esp}/tracking/")
    except Resolver404:
        raise Http404("no tracking webhook for that provider") from None
    if not get_anymail_setting("webhook_secret", default=None):
        return _refused(403, "refused: ANYMAIL_WEBHOOK_SECRET is not set, so no event can be authenticated")
    view_class = match.func.view_class  # type: ignore[attr-defined]
    try:
        view = view_class(**match.func.view_initkwargs)  # type: ignore[attr-defined]
    except AnymailConfigurationError as exc:
        return _refused(400, f"refused: {esp} is not configured for tracking webhooks: {str(exc).splitlines()[0]}")
    if request.method != "POST":
        return view_class.as_view(**match.func.view_initkwargs)(request)  # type: ignore[attr-defined]
    view.setup(request)
    view.run_validators(request)  # a bad password or signature: anymail's 400
    try:
        events = view.parse_events(request)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("tracking webhook (%s): malformed body (%s)", esp, type(exc).__name__)
        return _refused(400, f"malformed event: {type(exc).__name__}: {exc}"[:500])
    try:
        for event in events:
            view.signal.send(sender=view_class, event=event, esp_name=view.esp_name)
    except EventInvalid as exc:
        return _refused(400, f"malformed event: {exc}")
    return HttpResponse()
