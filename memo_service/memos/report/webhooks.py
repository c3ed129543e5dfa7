"""Telling the platform: signed outbound webhooks for answers and passed deadlines.

Each event becomes a WebhookMessage per subscribed endpoint, sent by a task after the
transaction commits. Failures are retried by beat (`webhooks_retry_due`) with
exponential backoff and jitter, not by Celery countdowns, which would outlive a
Redis visibility timeout; every attempt is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from datetime import timedelta

import requests
from django.db import transaction
from django.db.models import OuterRef, Q
from django.utils import timezone

from memo_service.memos.models import (
    MEMO_OUT,
    Answer,
    Delivery,
    Memo,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from memo_service.memos.outbound import webhooks_enqueue
from memo_service.memos.queue import enqueue
from memo_service.memos.reminders import not_acknowledged
from memo_service.netguard import PinnedAdapter, TargetRefused, target_address

E = WebhookEndpoint.Event
TIMEOUT_S = 10  # the platform's receiver should answer at once and work later
MAX_ATTEMPTS = 8  # with doubling from a minute: the last try about four hours after the first
FIRST_RETRY = timedelta(minutes=1)
PAGE = 1_000  # developer ids per deadline_passed message
LOST_AFTER = timedelta(minutes=10)  # a first attempt not made by then lost its task
LEASE = timedelta(seconds=TIMEOUT_S * 3)  # longer than one attempt can take


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def notify_answer(answer: Answer) -> None:
    # Keyed by str: answer.response is the stored value, which equals its Response member.
    events: dict[str, WebhookEndpoint.Event] = {
        Answer.Response.ACKNOWLEDGED: E.ACKNOWLEDGED,
        Answer.Response.DISPUTES_REGION: E.DISPUTED,
        Answer.Response.DISPUTES_TRAFFIC: E.DISPUTED,
    }
    event = events.get(answer.response)
    if event is None:
        return
    webhooks_enqueue(
        event,
        [
            {
                "memo": answer.memo.slug,
                "memo_id": answer.memo_id,
                "developer": answer.developer.external_id,
                "response": answer.response,
                "answered_at": answer.created_at.isoformat(),
                "content_hash": answer.content_hash,
                "suspected_automation": answer.suspected_automation,
                "country_claimed": str(answer.country_claimed or ""),
                "channel": answer.channel,
            }
        ],
    )


def memos_deadline_notify() -> int:
    """Tell the platform, once per memo, which developers had not acknowledged by the
    deadline (exempted ones excepted), in pages of PAGE ids. Returns memos notified."""
    notified = 0
    due = Memo.objects.filter(
        status__in=MEMO_OUT,
        ack_deadline__lt=timezone.now(),
        deadline_notified_at__isnull=True,
    )
    if not any(E.DEADLINE_PASSED in e.events for e in WebhookEndpoint.objects.filter(is_active=True)):
        return 0  # nobody to tell yet: an endpoint added later still hears of these
    for memo in due:
        with transaction.atomic():
            if not Memo.objects.filter(pk=memo.pk, deadline_notified_at__isnull=True).update(
                deadline_notified_at=timezone.now()
            ):
                continue  # another beat got there first
            missing = list(
                Delivery.objects.filter(memo=memo, kind=Delivery.Kind.INITIAL)
                .filter(not_acknowledged(memo, OuterRef("developer")))
                .order_by("developer_id")
                .values_list("developer__external_id", flat=True)
            )
            pages = max(1, -(-len(missing) // PAGE))
            assert memo.ack_deadline is not None  # `due` holds only memos whose deadline passed
            webhooks_enqueue(
                E.DEADLINE_PASSED,
                [
                    {
                        "memo": memo.slug,
                        "memo_id": memo.pk,
                        "deadline": memo.ack_deadline.isoformat(),
                        "page": n + 1,
                        "pages": pages,
                        "not_acknowledged": missing[n * PAGE : (n + 1) * PAGE],
                    }
                    for n in range(pages)
                ],
            )
        notified += 1
    return notified


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
