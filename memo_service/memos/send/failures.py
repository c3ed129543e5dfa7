"""What a send does when the provider call fails: the error and what the provider can do
in, a decision out. No I/O; BatchSender.failed (sending.py) carries the decision out."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

import requests
from anymail.exceptions import AnymailRequestsAPIError
from botocore.exceptions import EndpointConnectionError
from celery.exceptions import SoftTimeLimitExceeded
from django.core.cache import cache
from urllib3.exceptions import NewConnectionError

from memo_service.backends.base import Capabilities

# Provider answers worth trying again later: throttling and the provider's own faults.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
AUTH_STATUS = {401, 403}
# Five tries over roughly five minutes ride out a provider's bad patch; past that the
# delivery fails with the provider's reason rather than waiting forever.
MAX_ATTEMPTS = 5
# Throttling is the provider pacing us, not failing: it gets more patience.
MAX_THROTTLED_ATTEMPTS = 20
BACKOFF_BASE_S = 10
MAX_DELAY_S = 600  # well under Redis's visibility timeout (settings), so no redelivery
# Consecutive credential errors before the memo pauses itself (and says why).
AUTH_ERRORS_BEFORE_PAUSE = 3


class Action(enum.Enum):
    # Our credentials, not the recipients: they stay queued for after the fix, and the
    # memo pauses once `credentials_pause` says so.
    CREDENTIALS = "credentials"
    # A batch call refused whole for one recipient: each half is sent on its own.
    HALVE = "halve"
    # Queued again, to be tried after `wait` seconds.
    RETRY = "retry"
    # As RETRY, and the provider is pacing us: the shared limiter waits too, or without
    # one the rest of the batch does.
    THROTTLE = "throttle"
    # Left `sending`: reconciliation asks the provider whether it took them.
    RECONCILE = "reconcile"
    # Failed with the provider's reason; `outcome_unknown` when it may have taken them.
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    wait: float = 0.0
    outcome_unknown: bool = False
    # The worker's time is up: once the decision is carried out the exception goes on
    # up, and the rest of the batch stays queued for the sweeper.
    reraise: bool = False


def failure_decision(
    exc: Exception,
    *,
    can: type[Capabilities],
    batch_size: int,
    attempts: int,
    reports_acceptance: bool,
    jitter: float,
) -> Decision:
    """What to do with the `batch_size` deliveries of a call that raised `exc`, on their
    `attempts`-th try (counting this one), with a backend that can do `can` and can or
    cannot say what its provider accepted. `jitter` (from `backoff_jitter`) spreads the
    backoff of many failed calls."""
    status = 429 if can.throttled(exc) else http_status(exc)
    if status in AUTH_STATUS:
        return Decision(Action.CREDENTIALS)
    if batch_size > 1 and can.refuses_a_recipient(exc):
        return Decision(Action.HALVE)
    limit = MAX_THROTTLED_ATTEMPTS if status == 429 else MAX_ATTEMPTS
    if _transient(exc, status, can) and attempts < limit:
        wait = _wait_s(status, attempts, _retry_after(exc), jitter)
        return Decision(Action.THROTTLE if status == 429 else Action.RETRY, wait=wait)
    unknown = _may_have_been_accepted(exc)
    reraise = isinstance(exc, SoftTimeLimitExceeded)
    if reports_acceptance and unknown:
        return Decision(Action.RECONCILE, reraise=reraise)
    return Decision(Action.FAIL, outcome_unknown=unknown, reraise=reraise)


def auth_errors_count(provider: str, failed: bool) -> int:
    """Consecutive credential errors for this provider, across all workers (the cache)."""
    key = f"auth-errors:{provider}"
    if not failed:
        cache.delete(key)
        return 0
    if cache.add(key, 1, 3600):
        return 1
    return cache.incr(key)


def credentials_pause(consecutive: int) -> bool:
    """Does the memo pause after this many credential errors in a row?"""
    return consecutive >= AUTH_ERRORS_BEFORE_PAUSE


def http_status(exc: BaseException) -> int | None:
    """The provider's HTTP status, when it answered."""
    return getattr(exc, "status_code", None)


def backoff_jitter() -> float:
    return random.uniform(0.5, 1.5)


def _transient(exc: Exception, status: int | None, can: type[Capabilities]) -> bool:
    if status in TRANSIENT_STATUS:
        return True
    # Sent again with the same idempotency key, a lost answer is harmless.
    return isinstance(exc, AnymailRequestsAPIError) and status is None and (_connect_failed(exc) or can.idempotent)


def _wait_s(status: int | None, attempts: int, retry_after: float | None, jitter: float) -> float:
    # Throttled: wait what the provider asked; a fault: back off.
    if status == 429 and retry_after:
        return min(retry_after, MAX_DELAY_S)
    return backoff_s(attempts, retry_after, jitter)


def backoff_s(attempts: int, retry_after: float | None, jitter: float) -> float:
    """Exponential backoff with jitter, never sooner than the provider's Retry-After."""
    delay = BACKOFF_BASE_S * 2 ** (attempts - 1) * jitter
    return min(max(delay, retry_after or 0), MAX_DELAY_S)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _connect_failed(exc: BaseException) -> bool:
    """The request never reached the provider: safe to send again."""
    cause = exc.__cause__ or exc.__context__
    # boto3's (Amazon SES) "connection refused"; its connect timeout is a requests one.
    if isinstance(cause, (requests.ConnectTimeout, EndpointConnectionError)):
        return True
    reason = getattr(cause.args[0], "reason", None) if cause is not None and cause.args else None
    return isinstance(reason, NewConnectionError)


def _may_have_been_accepted(exc: BaseException) -> bool:
    """True when the provider may have accepted the message despite the error: the
    request went out but no answer came back (read timeout, dropped connection, time
    limit). An HTTP answer, or a connection never made, is a definite outcome."""
    if isinstance(exc, (SoftTimeLimitExceeded, TimeoutError)):
        return True
    if not isinstance(exc, AnymailRequestsAPIError) or exc.status_code is not None:
        return False
    return not _connect_failed(exc)
