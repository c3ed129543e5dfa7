"""Outbound webhooks' messages: one per subscribed endpoint and event, sent by a task after
the transaction commits (delivery.py sends and retries them)."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from memo_service.memos.models import WebhookEndpoint, WebhookMessage
from memo_service.memos.queue import enqueue_on_commit


def webhooks_enqueue(event: str, payloads: list[dict[str, Any]]) -> None:
    for endpoint in WebhookEndpoint.objects.filter(is_active=True):
        if event not in endpoint.events:
            continue
        for data in payloads:
            message = WebhookMessage.objects.create(
                endpoint=endpoint,
                event=event,
                payload={
                    "id": str(uuid.uuid4()),
                    "event": event,
                    "created_at": timezone.now().isoformat(),
                    "data": data,
                },
                next_attempt_at=timezone.now(),
            )
            enqueue_on_commit("memos.webhook_deliver", message.pk)
