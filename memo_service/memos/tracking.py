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
from typing import Any, NamedTuple, Protocol, cast

from anymail.exceptions import AnymailConfigurationError
from anymail.signals import AnymailTrackingEvent, tracking
from anymail.utils import get_anymail_setting
from anymail.webhooks.base import AnymailCoreWebhookView
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, get_resolver
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from memo_service.developers.models import Developer
from memo_service.memos.delivery_status import delivery_advance, delivery_advance_by_event
from memo_service.memos.evidence.append import evidence_record_event
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
    if raw is None:  # an event made in code, not posted: stored, with nothing to keep (SQL NULL refused it)
        return {}
    try:
        return json.loads(json.dumps(raw, default=str))
    except (TypeError, ValueError):
        return {"raw": str(raw)}


class EventInvalid(ValueError):
    """An event we cannot read: answered 400 with the reason (the provider need not retry)."""


class Target(NamedTuple):
    """The delivery an event is about: what applying the event needs of it."""

    id: int
    memo_id: int
    developer_id: int
    provider_message_id: str


def _find_delivery(event: AnymailTrackingEvent) -> Target | None:
    metadata = event.metadata or {}
    if not isinstance(metadata, dict):
        raise EventInvalid(f"metadata must be an object, not {type(metadata).__name__}")
    delivery_id = metadata.get("delivery_id")
    # One short query in SQL: the ORM's cost of composing it was a fifth of the webhook's.
    select = f"SELECT id, memo_id, developer_id, provider_message_id FROM {Delivery._meta.db_table}"
    with connection.cursor() as cursor:
        if delivery_id and str(delivery_id).isascii() and str(delivery_id).isdigit():
            cursor.execute(f"{select} WHERE id = %s", [int(delivery_id)])
        elif event.message_id:
            cursor.execute(f"{select} WHERE provider_message_id = %s ORDER BY id LIMIT 2", [event.message_id])
            rows = cursor.fetchall()
            if len(rows) > 1:
                # A whole call's id (SparkPost's transmission, Mailgun's batch): its recipient's.
                rows = _by_recipient(cursor, event) if event.recipient else []
            return Target(*rows[0]) if len(rows) == 1 else None
        else:
            return None
        row = cursor.fetchone()
    return Target(*row) if row else None


def _by_recipient(cursor: Any, event: AnymailTrackingEvent) -> list[tuple[Any, ...]]:
    """The deliveries of the event's call to its recipient (two if a memo's reminder
    shared the call: then none is named)."""
    cursor.execute(
        f"SELECT d.id, d.memo_id, d.developer_id, d.provider_message_id FROM {Delivery._meta.db_table} d "
        f"JOIN {Developer._meta.db_table} v ON v.id = d.developer_id "
        "WHERE d.provider_message_id = %s AND lower(v.email) = lower(%s) ORDER BY d.id LIMIT 2",
        [event.message_id, event.recipient],
    )
    return list(cursor.fetchall())


def delivery_record_event(
    *, event: AnymailTrackingEvent, provider: str, fast: bool | None = None
) -> DeliveryEvent | None:
    """Store a tracking event once and apply it; returns None for a replayed event.
    `fast`: the PostgreSQL statement (the default there: delivery_advance_by_event, the
    transaction below as one statement) or the ORM path."""
    delivery = _find_delivery(event)
    stored = _event_row(event, provider, delivery)
    new_status = STATUS_FOR_EVENT.get(event.event_type or "") if delivery else None
    if connection.vendor == "postgresql" if fast is None else fast:
        address = EMAIL_STATUS_FOR.get(new_status) if new_status is not None else None
        details = _advance_details(event)
        new = delivery_advance_by_event(event=stored, delivery=delivery, to=new_status, address=address, **details)
        return stored if new else None
    try:
        with transaction.atomic():
            stored.save(force_insert=True)
            if delivery is not None:
                moved = new_status is not None and _advance(delivery, new_status, event)
                evidence_record_event(event=stored, memo_id=delivery.memo_id, status=new_status if moved else None)
    except IntegrityError:
        return None  # seen before: the provider retried or replayed it
    return stored


def _event_row(event: AnymailTrackingEvent, provider: str, delivery: Target | None) -> DeliveryEvent:
    """The event as it is stored, not yet saved."""
    payload = _payload(event)
    event_id = event.event_id or hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return DeliveryEvent(
        provider=provider[:30],
        event_id=str(event_id)[:255],
        event_type=event.event_type or "unknown",
        delivery_id=delivery.id if delivery else None,
        message_id=str(event.message_id or "")[:255],
        description=str(event.description or event.reject_reason or "")[:2000],
        occurred_at=event.timestamp,
        received_at=timezone.now(),
        payload=payload,
    )


def _advance(delivery: Target, new_status: Delivery.Status, event: AnymailTrackingEvent) -> bool:
    """Move the delivery forward; False when it already is as far or further. A bounce
    or complaint marks the address, so no later memo is mailed to it."""
    moved = delivery_advance(delivery=delivery, to=new_status, **_advance_details(event))
    if moved and new_status in EMAIL_STATUS_FOR:
        Developer.objects.filter(pk=delivery.developer_id).update(email_status=EMAIL_STATUS_FOR[new_status])
    return moved


def _advance_details(event: AnymailTrackingEvent) -> dict[str, str]:
    return {"reason": str(event.description or event.reject_reason or ""), "message_id": str(event.message_id or "")}


@receiver(tracking)
def handle_tracking(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    delivery_record_event(event=event, provider=esp_name)


def _refused(status: int, reason: str) -> HttpResponse:
    return HttpResponse(reason + "\n", status=status, content_type="text/plain; charset=utf-8")


def provider_configured(esp: str) -> bool:
    """A provider this deployment sends through (EMAIL_BACKEND's) or has settings for
    (ANYMAIL_<ESP>_…, say the one it sent through before): only their webhooks are routed."""
    backend_esp = settings.EMAIL_BACKEND.rsplit(".", 2)[-2]
    prefix = f"{esp.upper()}_"
    return esp == backend_esp or any(key.startswith(prefix) for key in settings.ANYMAIL)


class _ClassBasedView(Protocol):
    """What View.as_view() returns, as Django documents it: the view function carries
    its class and the keyword arguments it makes each instance with."""

    view_class: type[AnymailCoreWebhookView]
    view_initkwargs: dict[str, Any]


@csrf_exempt
def tracking_webhook(request: HttpRequest, esp: str) -> HttpResponse:
    """/anymail/<esp>/tracking/: anymail's own webhook view, step by step (its
    documented hooks: validators, parse_events, the tracking signal), so that what a
    provider sends wrong is answered 400 with the reason instead of 500 and a retry, and
    nothing is accepted without ANYMAIL_WEBHOOK_SECRET (anymail alone would only warn)."""
    if not provider_configured(esp):
        raise Http404("no tracking webhook for that provider")
    try:
        match = get_resolver("anymail.urls").resolve(f"/{esp}/tracking/")
    except Resolver404:
        raise Http404("no tracking webhook for that provider") from None
    if not get_anymail_setting("webhook_secret", default=None):
        return _refused(403, "refused: ANYMAIL_WEBHOOK_SECRET is not set, so no event can be authenticated")
    anymail_view = cast(_ClassBasedView, match.func)
    view_class = anymail_view.view_class
    try:
        view = view_class(**anymail_view.view_initkwargs)
    except AnymailConfigurationError as exc:
        return _refused(400, f"refused: {esp} is not configured for tracking webhooks: {str(exc).splitlines()[0]}")
    if request.method != "POST":
        return view_class.as_view(**anymail_view.view_initkwargs)(request)
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
