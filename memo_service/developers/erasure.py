"""Erasure: a developer's personal data replaced by placeholders, the evidence kept.

Deliveries, acknowledgements and the memo's content hash stay, tied to the developer's
row and external_id, so what was sent and acknowledged can still be proven; the email,
name, organisation and attributes go, also from the provider events stored for them.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.models import DeliveryEvent

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
        old = [developer.email] + [v for v in (developer.name, developer.organization) if len(v) >= 3]
        developer.email = f"erased-{developer.pk}@{ERASED_DOMAIN}"
        developer.name = ""
        developer.organization = ""
        developer.attributes = {}
        developer.is_active = False
        developer.erased_at = timezone.now()
        developer.save(
            update_fields=["email", "name", "organization", "attributes", "is_active", "erased_at"]
        )
        for event in DeliveryEvent.objects.filter(delivery__developer=developer):
            event.payload = _scrub(event.payload, old)
            event.save(update_fields=["payload"])
    return developer
