"""A loopback HTTP server speaking Resend's sending API as anymail's real Resend backend
calls it: POST /emails (one email) and POST /emails/batch (a JSON list of up to 100),
Bearer authentication, JSON answers in Resend's shapes. Test tooling, not product code.

What it does as Resend does (resend.com/docs: send email, send batch emails, batch
validation modes, idempotency keys, rate limits, errors):
- an email to an address in `refuse` is invalid: in a batch's permissive mode
  (`x-batch-validation: permissive`) it is left out of `data` and named in `errors` by
  its index while the others are sent; otherwise (strict, or a single email) the whole
  request is answered 422 and nothing is sent;
- an Idempotency-Key seen before, with the same body, is answered with the first
  answer and sends nothing; with another body, 409 `invalid_idempotent_request`; while
  its first call is not yet answered, 409 `concurrent_idempotent_requests`;
- `throttle` requests are answered 429 `rate_limit_exceeded` with Retry-After.
Resend has no merge fields: each email is delivered as it came, so `emails` (what each
recipient gets) are the accepted emails themselves. `resend_webhook` signs one of
Resend's tracking events for one of them as Svix (Resend's webhook sender) does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.loopback_provider import _Handler, _serving

API_KEY = "re_loopback"
# Svix's secrets are "whsec_" and base64 of the key (Resend shows one per webhook).
SIGNING_SECRET = "whsec_" + base64.b64encode(b"resend-loopback-signing-key").decode()
BATCH_LIMIT = 100  # Resend's most emails in one batch call
# Resend's words for an address it will not take (its 422 validation_error).
INVALID_TO = "Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."


@dataclass
class ResendBatchProvider:
    url: str
    # Every email Resend took, as each recipient gets it, with its "id" and the call's key.
    emails: list[dict[str, Any]] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)  # each accepted call's recipients
    keys: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)  # key -> (body, answer)
    repeated: list[str] = field(default_factory=list)  # keys presented again with the same body
    conflicts: list[str] = field(default_factory=list)  # keys presented again with another body (409)
    busy: set[str] = field(default_factory=set)  # keys whose first call is not yet answered
    refuse: set[str] = field(default_factory=set)  # addresses whose emails are invalid
    throttle: int = 0  # answer this many next requests 429
    retry_after: str = "1"
    requests: int = 0
    log: list[tuple[float, int]] = field(default_factory=list)  # (arrival, status) of each request
    # As tests/loopback_provider.Loopback: hold the answer to this many accepted calls.
    hold: int = 0
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # False: record only each call's recipients, not the emails (a benchmark's would not fit).
    expand: bool = True

    def env(self) -> dict[str, str]:
        """A worker's email settings for sending here (tests/test_faults.start_worker)."""
        return {
            "EMAIL_BACKEND": "memo_service.backends.resend.EmailBackend",
            "ANYMAIL_RESEND_API_KEY": API_KEY,
            "ANYMAIL_RESEND_API_URL": self.url,
        }

    def settings(self) -> dict[str, str]:
        """The ANYMAIL settings for sending here and for its signed tracking webhooks."""
        return {"RESEND_API_KEY": API_KEY, "RESEND_API_URL": self.url, "RESEND_SIGNING_SECRET": SIGNING_SECRET}


def _address(to: str) -> str:
    return to.rsplit("<", 1)[-1].rstrip(">").strip()


def recipient(email: dict[str, Any]) -> str:
    """The address of an email's only recipient."""
    return _address(str(email["to"][0]))


def _error(status: int, name: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "name": name, "message": message}


def _answer(provider: ResendBatchProvider, path: str, body: bytes, headers: Any) -> tuple[int, dict[str, Any], bool]:
    """What Resend answers to one request, recording what it sends; True if it sent
    something (a call taken now, not a repeated one)."""
    if headers.get("Authorization") != f"Bearer {API_KEY}":
        return 401, _error(401, "validation_error", "API key is invalid"), False
    if path not in ("/emails", "/emails/batch"):
        return 404, _error(404, "not_found", "The requested endpoint does not exist."), False
    key = headers.get("Idempotency-Key")
    with provider.lock:
        if provider.throttle > 0:
            provider.throttle -= 1
            message = "Too many requests. You can only make 2 requests per second."
            return 429, _error(429, "rate_limit_exceeded", message), False
        if key and key in provider.busy:
            message = (
                "Same idempotency key used while original request is still in progress. Try the request again later."
            )
            return 409, _error(409, "concurrent_idempotent_requests", message), False
        if key and key in provider.keys:
            first_body, first_answer = provider.keys[key]
            if first_body != body:
                provider.conflicts.append(key)
                message = "Same idempotency key used with a different request payload. Change your idempotency key or payload."
                return 409, _error(409, "invalid_idempotent_request", message), False
            provider.repeated.append(key)
            return 200, first_answer, False
        batch = path == "/emails/batch"
        sent = json.loads(body)
        emails = sent if batch else [sent]
        if batch and not 0 < len(emails) <= BATCH_LIMIT:
            return (
                422,
                _error(422, "validation_error", f"The batch must have between 1 and {BATCH_LIMIT} emails."),
                False,
            )
        invalid = {i for i, email in enumerate(emails) if any(_address(to) in provider.refuse for to in email["to"])}
        permissive = batch and headers.get("x-batch-validation") == "permissive"
        if invalid and not permissive:
            return 422, _error(422, "validation_error", INVALID_TO), False
        taken = [
            {**email, "id": str(uuid.uuid4()), "idempotency_key": key}
            for i, email in enumerate(emails)
            if i not in invalid
        ]
        if provider.expand:
            provider.emails += taken
        provider.calls.append([recipient(email) for email in taken])
        if batch:
            answer: dict[str, Any] = {"data": [{"id": email["id"]} for email in taken]}
            if permissive:
                answer["errors"] = [{"index": i, "message": INVALID_TO} for i in sorted(invalid)]
        else:
            answer = {"id": taken[0]["id"]}
        if key:
            provider.keys[key] = (body, answer)
            provider.busy.add(key)  # until its answer has gone
        return 200, answer, True


@contextmanager
def resend_batch_server() -> Iterator[ResendBatchProvider]:
    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            arrived = time.time()
            path = self.path.rstrip("/")
            status, answer, taken = _answer(provider, path, body, self.headers)
            with provider.lock:
                provider.requests += 1
                provider.log.append((arrived, status))
            if taken:
                self._hold(provider)  # the fault tests' kill between acceptance and commit
            headers = {"Retry-After": provider.retry_after, "ratelimit-limit": "2"} if status == 429 else {}
            try:
                self._answer(status, answer, headers)
            finally:
                with provider.lock:
                    provider.busy.discard(self.headers.get("Idempotency-Key", "") if taken else "")

    provider = ResendBatchProvider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/"
        yield provider


_event_ids = itertools.count(1)


def resend_webhook(email: dict[str, Any], event: str = "email.delivered") -> tuple[bytes, dict[str, str]]:
    """Resend's tracking event `event` for an email it took: the body, and the headers
    Svix signs it with (svix-id, svix-timestamp, svix-signature: v1, then base64 of
    HMAC-SHA256 over "id.timestamp.body" with the secret's key)."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    data: dict[str, Any] = {
        "created_at": now,
        "email_id": email["id"],
        "from": email["from"],
        "to": email["to"],
        "subject": email["subject"],
        # Resend hands back the email's headers, where anymail put its metadata and tags.
        "headers": [{"name": name, "value": value} for name, value in (email.get("headers") or {}).items()],
    }
    if event == "email.bounced":
        data["bounce"] = {
            "message": "The recipient's email provider sent a hard bounce message, and we have suppressed sending.",
            "subType": "General",
            "type": "Permanent",
        }
    body = json.dumps({"type": event, "created_at": now, "data": data}).encode()
    message_id, timestamp = f"msg_loopback{next(_event_ids)}", str(int(time.time()))
    key = base64.b64decode(SIGNING_SECRET.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return body, {"svix-id": message_id, "svix-timestamp": timestamp, "svix-signature": f"v1,{signature}"}
