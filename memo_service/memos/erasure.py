"""An erased developer's personal data, scrubbed from what the memos app keeps about them
(developers/erasure.py erases the developer's row and sends `developer_erased`). The
deliveries, answers and evidence stay: they are the proof."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from memo_service.developers.erasure import developer_erased
from memo_service.developers.models import Developer
from memo_service.memos.models import Delivery, DeliveryEvent


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


@receiver(developer_erased)
def developer_records_scrub(sender: Any, *, developer: Developer, secrets: list[str], **kwargs: Any) -> None:
    for event in DeliveryEvent.objects.filter(delivery__developer=developer):
        event.payload = _scrub(event.payload, secrets)
        event.description = _scrub(event.description, secrets)
        event.save(update_fields=["payload", "description"])
    # What each email was rendered with (name, address, organisation): the page it fed
    # is gone with the link, the text hash stays in the evidence.
    Delivery.objects.filter(developer=developer, rendered_with__isnull=False).update(rendered_with={})
    # Providers' error texts often quote the address.
    for delivery in Delivery.objects.filter(developer=developer).exclude(status_reason=""):
        delivery.status_reason = _scrub(delivery.status_reason, secrets)
        delivery.save(update_fields=["status_reason"])
