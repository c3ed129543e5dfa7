"""Posting outbound webhooks' messages, signed, and retrying them.

A message is sent by a task after the transaction that queued it commits. Failures are
retried by beat (`webhooks_retry_due`) with exponential backoff and jitter, not by
Celery countdowns, which would outlive a Redis visibility timeout; every attempt is
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from datetime import timedelta

import requests
from django.db.models import Q
from django.utils import timezone

from memo_service.memos.models import WebhookAttempt, WebhookMessage
from memo_service.memos.queue import enqueue
from memo_service.memos.webhooks.netguard import PinnedAdapter, TargetRefused, target_address

TIMEOUT_S = 10  # the platform's receiver should answer at once and work later
MAX_ATTEMPTS = 8  # with doubling from a minute: the last try about four hours after the first
FIRST_RETRY = timedelta(minutes=1)
LOST_AFTER = timedelta(minutes=10)  # a first attempt not made by then lost its task
LEASE = timedelta(seconds=TIMEOUT_S * 3)  # longer than one attempt can take


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_claim(*, message_id: int) -> bool:
    """Take a due message for one attempt: pushes its next attempt a lease ahead, so a
    second worker handed the same id (a retry job running twice) leaves it alone."""
    now = timezone.now()
    return bool(
        WebhookMessage.objects.filter(
            pk=message_id,
            status=WebhookMessage.Status.PENDING,
            next_attempt_at__lte=now,
        ).update(next_attempt_at=now + LEASE)
    )


def webhook_deliver(*, message_id: int) -> None:
    """One attempt at one message; schedules the next on failure."""
    if not webhook_claim(message_id=message_id):
        return
    message = WebhookMessage.objects.select_related("endpoint").get(pk=message_id)
    body = json.dumps(message.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "memo-service-webhooks",
        "X-Memo-Event": message.event,
        "X-Memo-Delivery": message.payload["id"],
        "X-Memo-Signature": sign(message.endpoint.secret, int(time.time()), body),
    }
    started = time.monotonic()
    status_code, error = None, ""
    try:
        # Checked again now (a name can resolve elsewhere since the endpoint was saved),
        # and the request goes to the very address that was checked.
        address = target_address(message.endpoint.url)
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment between the check and the target
            session.mount("http://", PinnedAdapter(address))
            session.mount("https://", PinnedAdapter(address))
            response = session.post(
                message.endpoint.url, data=body, headers=headers, timeout=TIMEOUT_S, allow_redirects=False
            )
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = response.text[:500]
    except TargetRefused as exc:
        error = f"not sent: {exc}"[:500]
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    webhook_attempt_record(
        message=message,
        status_code=status_code,
        error=error,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def webhook_attempt_record(*, message: WebhookMessage, status_code: int | None, error: str, duration_ms: int) -> None:
    now = timezone.now()
    WebhookAttempt.objects.create(message=message, status_code=status_code, error=error, duration_ms=duration_ms)
    attempts = message.attempts + 1  # the claim makes this worker the only one on it
    if status_code is not None and 200 <= status_code < 300:
        changes = {"status": WebhookMessage.Status.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    elif attempts >= MAX_ATTEMPTS:
        changes = {"status": WebhookMessage.Status.FAILED, "next_attempt_at": None}
    else:
        backoff = FIRST_RETRY * 2 ** (attempts - 1)
        changes = {"next_attempt_at": now + backoff * random.uniform(0.8, 1.2)}
    WebhookMessage.objects.filter(pk=message.pk, status=WebhookMessage.Status.PENDING).update(
        attempts=attempts, **changes
    )


def webhooks_retry_due() -> int:
    now = timezone.now()
    # Retries that are due, and first attempts whose task was lost.
    due = list(
        WebhookMessage.objects.filter(status=WebhookMessage.Status.PENDING, next_attempt_at__lte=now)
        .filter(Q(attempts__gt=0) | Q(created_at__lt=now - LOST_AFTER))
        .values_list("pk", flat=True)[:1000]
    )
    for message_id in due:
        enqueue("memos.webhook_deliver", message_id)
    return len(due)
