"""The funnel of a memo: targeted → sent → delivered → acknowledged, per country."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from memo_service.memos.models import Acknowledgement, Delivery, Memo

S = Delivery.Status
# Handed to the provider: every status a provider's acceptance can lead to.
SENT = [S.SENT, S.DELIVERED, S.BOUNCED, S.COMPLAINED]
FUNNEL_COUNTS = {
    "targeted": Q(),
    "sent": Q(status__in=SENT),
    # A complaint can only come from a mailbox the message reached.
    "delivered": Q(status__in=[S.DELIVERED, S.COMPLAINED]),
    "bounced": Q(status=S.BOUNCED),
    "failed": Q(status=S.FAILED),
    "outcome_unknown": Q(status=S.OUTCOME_UNKNOWN),
    "pending": Q(status__in=[S.QUEUED, S.SENDING]),
}
FIELDS = [*FUNNEL_COUNTS, "acknowledged"]


def memo_funnel(memo: Memo) -> dict[str, Any]:
    """Totals and per-country counts of the memo's initial deliveries and acknowledgements."""
    rows = (
        Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
        .values("developer__country")
        .annotate(**{name: Count("id", filter=q) for name, q in FUNNEL_COUNTS.items()})
    )
    acks = dict(
        Acknowledgement.objects.filter(memo=memo)
        .values("developer__country")
        .annotate(n=Count("id"))
        .values_list("developer__country", "n")
    )
    by_country: dict[str, dict[str, int]] = {}
    for row in rows:
        country = row.pop("developer__country")
        by_country[country] = {**row, "acknowledged": acks.get(country, 0)}
    totals = {name: sum(c[name] for c in by_country.values()) for name in FIELDS}
    return {
        "memo": memo.slug,
        "status": memo.status,
        "content_hash": memo.content_hash,
        **totals,
        "by_country": dict(sorted(by_country.items(), key=lambda kv: (-kv[1]["targeted"], kv[0]))),
    }
