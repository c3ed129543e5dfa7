"""Deliveries, their provider events and the send leases: read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from memo_service.memos.admin.readonly import ReadOnlyAdmin
from memo_service.memos.models import (
    Delivery,
    DeliveryEvent,
    SendLease,
)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "memo", "developer", "kind", "sequence", "status", "country", "sent_at"]
    list_filter = ["status", "kind", "memo"]
    list_select_related = ["memo", "developer"]
    search_fields = ["=developer__external_id", "=provider_message_id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The list shows none of the long text; the detail page loads it.
        return (
            super()
            .get_queryset(request)
            .defer(
                "status_reason",
                "reason",
                "rendered_with",
                "memo__html_body",
                "memo__text_body",
                "memo__subject",
                "developer__attributes",
            )
        )


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "provider", "event_type", "delivery_id", "occurred_at", "received_at"]
    list_filter = ["provider", "event_type"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).defer("payload", "description")


@admin.register(SendLease)
class SendLeaseAdmin(ReadOnlyAdmin):
    """Send tasks at work, and those a dead worker left (memos/send/leases.py, reconcile.py)."""

    list_display = ["id", "memo", "holder", "deliveries", "created_at", "last_renewed_at", "expires_at", "note"]
    exclude = ["delivery_ids"]

    @admin.display(description="deliveries")
    def deliveries(self, lease: SendLease) -> int:
        return len(lease.delivery_ids)
