"""Erasure: a developer's personal data replaced by placeholders, the evidence kept.

Deliveries, acknowledgements and the memo's content hash stay, tied to the developer's
row and external_id, so what was sent and acknowledged can still be proven; the email,
name, organisation, its contact, attributes and observed traffic go, also from the provider events and
error texts stored for them. An erased developer is in no audience and gets no
reminder, and an import never brings their data back. The evidence chain keeps what an
answer recorded (time, IP, user agent, comment): that is the evidence itself.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from memo_service.developers.models import Developer, TrafficObservation

ERASED_DOMAIN = "erased.invalid"  # .invalid never resolves: nothing can be sent there


# Sent inside the erasure's transaction with the developer (already erased) and `secrets`,
# the personal values that went: the apps that keep records about developers (memos) scrub
# their copies of them. A receiver that raises undoes the whole erasure.
developer_erased = Signal()


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
        TrafficObservation.objects.filter(developer=developer).delete()  # where their API calls came from
        developer_erased.send(sender=Developer, developer=developer, secrets=old)
    return developer
