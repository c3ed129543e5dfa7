"""Erasure: a developer's personal data replaced by placeholders, the evidence kept.

Deliveries, acknowledgements and the memo's content hash stay, tied to the developer's
row and external_id, so what was sent and acknowledged can still be proven; the email,
name, organisation, its contact and attributes go, also from the provider events and
error texts stored for them. An erased developer is in no audience and gets no
reminder, and an import never brings their data back. The evidence chain keeps what an
answer recorded (time, IP, user agent, comment): that is the evidence itself.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.models import Delivery, DeliveryEvent, SentText

ERASED_DOMAIN = "erased.invalid"  # .invalid never resolves: nothing can be sent there


def _scrub(value: Any, secrets: list[str]) -> Any:
    """The JSON value with every secret inside its strings replaced (keys untouched)."""
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "[erased]")
    return value


def developer_erase(*, developer: Developer) -> Developer:
    with transaction.atomic():
        developer = Developer.objects.select_for_update().get(pk=developer.pk)
        # Two-letter names would blank out unrelated text; emails are always specific.
        old = [v for v in (developer.email, developer.org_contact_email) if v] + [
            v for v in (developer.name, developer.organization) if len(v) >= 3
        ]
        developer.email = f"erased-{developer.pk}@{ERASED_DOMAIN}"
        developer.name = ""
        developer.organization = ""
        developer.org_contact_email = ""
        developer.attributes = {}
        developer.is_active = False
        developer.erased_at = timezone.now()
        developer.save(
            update_fields=["email", "name", "organization", "org_contact_email", "attributes", "is_active", "erased_at"]
        )
        for event in DeliveryEvent.objects.filter(delivery__developer=developer):
            event.payload = _scrub(event.payload, old)
            event.description = _scrub(event.description, old)
            event.save(update_fields=["payload", "description"])
        # What each email was rendered with (name, address, organisation): the page it fed
        # is gone with the link, the text hash stays in the evidence.
        SentText.objects.filter(delivery__developer=developer).update(rendered_with={})
        # Providers' error texts often quote the address.
        for delivery in Delivery.objects.filter(developer=developer).exclude(last_error=""):
            delivery.last_error = _scrub(delivery.last_error, old)
            delivery.save(update_fields=["last_error"])
    return developer
