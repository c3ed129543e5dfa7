"""A loopback HTTP server speaking SendGrid's v3 Mail Send API, as anymail's real
SendGrid backend calls it (POST /v3/mail/send, a Bearer API key, a JSON body of
personalizations). Test tooling, not product code: point anymail at it with ANYMAIL
SENDGRID_API_URL and it answers as SendGrid does: 202 with an empty body and an
X-Message-Id; 400 with an errors list naming the field for a call it refuses whole (a
recipient in `refuse`, a name with a comma, substitutions over the cap); 429 with
X-RateLimit-Reset when a test asks (`throttle`). Each accepted call is expanded into
the emails SendGrid would deliver, substitutions applied as SendGrid applies them
(plain text replacement, never escaped, and again inside substituted values);
sendgrid_events_post then posts SendGrid's Event Webhook for them back to us.
"""

from __future__ import annotations

import functools
import itertools
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from memo_service.backends import sendgrid
from memo_service.backends.sendgrid import SUBSTITUTIONS_LIMIT
from tests.loopback_provider import _Handler, _serving, post_json

API_KEY = "SG.loopback"
BACKEND = "memo_service.backends.sendgrid.EmailBackend"
# SendGrid's limits on one call.
MAX_PERSONALIZATIONS = 1000
# SendGrid substitutes inside a substituted value, up to this many levels deep.
NESTED_SUBSTITUTIONS = 4
ERRORS_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"


class FiftyAtATime(sendgrid.EmailBackend):
    """Our SendGrid backend in calls of 50: a send of 1,000 makes twenty calls, so the
    kill tests can land in many of them (the code is the production backend's)."""

    merge_batch_size = 50


@dataclass
class Delivered:
    """One email SendGrid would deliver, as its recipient would read it."""

    to: str  # the address
    name: str
    subject: str
    text: str
    html: str
    custom_args: dict[str, str]
    categories: list[str]
    sg_message_id: str  # the call's X-Message-Id and the personalization's place in it


@dataclass
class SendGridProvider:
    url: str
    backend: str = BACKEND  # the worker's EMAIL_BACKEND (env())
    delivered: list[Delivered] = field(default_factory=list)
    # The recipients of each accepted API call, in order.
    calls: list[list[str]] = field(default_factory=list)
    # The JSON body of each accepted call, as it came (when `expand`).
    bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    delay: float = 0.0
    # Addresses (or parts of them) SendGrid refuses: the whole call is answered 400.
    refuse: set[str] = field(default_factory=set)
    # Answer this many calls 429, their window resetting `reset_in` seconds later.
    throttle: int = 0
    reset_in: int = 3
    # (arrival time, status) of every request.
    log: list[tuple[float, int]] = field(default_factory=list)
    # False: record only each call's recipients, no emails (a benchmark's would not fit).
    expand: bool = True
    hold: int = 0  # as tests.loopback_provider.Provider's: the Loopback protocol
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self) -> dict[str, str]:
        """A worker's settings for sending here (tests/test_faults.py start_worker)."""
        return {
            "EMAIL_BACKEND": self.backend,
            "ANYMAIL_SENDGRID_API_KEY": API_KEY,
            "ANYMAIL_SENDGRID_API_URL": self.url,
        }


@functools.lru_cache(maxsize=64)
def _tags(keys: tuple[str, ...]) -> re.Pattern[str]:
    # The longest key first, so that one key inside another does not cut it.
    return re.compile("|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True)))


def substituted(text: str, substitutions: dict[str, str | None]) -> str:
    """`text` with each key of `substitutions` replaced by its value, as SendGrid does:
    plain text, nothing escaped, and a value's own keys substituted in turn."""
    if not substitutions:
        return text
    pattern = _tags(tuple(substitutions))
    for _ in range(1 + NESTED_SUBSTITUTIONS):
        done = pattern.sub(lambda m: substitutions[m.group(0)] or "", text)
        if done == text:
            break
        text = done
    return text


def _error(field_name: str | None, message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field_name, "help": ERRORS_HELP}]}


def _refusal(provider: SendGridProvider, body: dict[str, Any]) -> dict[str, Any] | None:
    """SendGrid's 400 for a call it will not take, naming the first field at fault."""
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not 1 <= len(personalizations) <= MAX_PERSONALIZATIONS:
        return _error(
            "personalizations",
            f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations per API request.",
        )
    seen: set[str] = set()
    for n, personalization in enumerate(personalizations):
        if not personalization.get("to"):
            return _error(f"personalizations.{n}.to", "The to parameter is required for all personalization objects.")
        for kind in ("to", "cc", "bcc"):
            for m, recipient in enumerate(personalization.get(kind, [])):
                email = str(recipient.get("email", ""))
                if "@" not in email or any(bad in email for bad in provider.refuse):
                    return _error(f"personalizations.{n}.{kind}.{m}.email", "Does not contain a valid address.")
                if re.search("[,;]", str(recipient.get("name", ""))):
                    return _error(
                        f"personalizations.{n}.{kind}.{m}.name",
                        "The to.name cannot include either of the ; or , characters.",
                    )
                if email.lower() in seen:
                    return _error(
                        "personalizations",
                        f"Each unique email address in the personalizations array should only be included once. "
                        f"You have included {email} more than once.",
                    )
                seen.add(email.lower())
        substitutions = personalization.get("substitutions") or {}
        if sum(len(k.encode()) + len(str(v or "").encode()) for k, v in substitutions.items()) > SUBSTITUTIONS_LIMIT:
            return _error(
                f"personalizations.{n}.substitutions",
                f"The total size of substitutions may not exceed {SUBSTITUTIONS_LIMIT} bytes per personalization.",
            )
    return None


def _emails(body: dict[str, Any], message_id: str) -> list[Delivered]:
    """The emails SendGrid delivers for an accepted call: one per recipient of each
    personalization, its subject and content with that personalization's substitutions."""
    content = {part["type"]: part["value"] for part in body.get("content", [])}
    categories = body.get("categories", [])
    emails = []
    for n, personalization in enumerate(body["personalizations"]):
        subs = personalization.get("substitutions") or {}
        custom_args = {**body.get("custom_args", {}), **personalization.get("custom_args", {})}
        for recipient in personalization["to"] + personalization.get("cc", []) + personalization.get("bcc", []):
            emails.append(
                Delivered(
                    to=recipient["email"],
                    name=recipient.get("name", ""),
                    subject=substituted(personalization.get("subject", body.get("subject", "")), subs),
                    text=substituted(content.get("text/plain", ""), subs),
                    html=substituted(content.get("text/html", ""), subs),
                    custom_args={k: substituted(v, subs) for k, v in custom_args.items()},
                    categories=categories,
                    sg_message_id=f"{message_id}.filter0001.{n}",
                )
            )
    return emails


@contextmanager
def sendgrid_server() -> Iterator[SendGridProvider]:
    counter = itertools.count(1)

    class Handler(_Handler):
        def _post(self, raw: bytes) -> None:
            if provider.delay:
                time.sleep(provider.delay)
            arrived = time.time()
            with provider.lock:
                provider.requests += 1
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                return self._reply(arrived, 401, _error(None, "The provided authorization grant is invalid."))
            if self.path.rstrip("/") != "/v3/mail/send":
                return self._reply(arrived, 404, _error(None, "Not found"))
            with provider.lock:
                throttled = provider.throttle > 0
                provider.throttle -= throttled
            if throttled:
                reset = int(arrived) + provider.reset_in
                headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
                return self._reply(arrived, 429, _error(None, "too many requests"), headers)
            try:
                body = json.loads(raw)
            except ValueError:
                return self._reply(arrived, 400, _error(None, "Bad Request"))
            if refusal := _refusal(provider, body):
                return self._reply(arrived, 400, refusal)
            message_id = f"loopback{next(counter)}"
            with provider.lock:
                provider.calls.append([r["email"] for p in body["personalizations"] for r in p["to"]])
                if provider.expand:
                    provider.bodies.append(body)
                    provider.delivered += _emails(body, message_id)
            self._hold(provider)
            self._reply(arrived, 202, b"", {"X-Message-Id": message_id})

        def _reply(self, arrived: float, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            with provider.lock:
                provider.log.append((arrived, status))
            self._answer(status, body, headers)

    provider = SendGridProvider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/v3/"
        yield provider


def sendgrid_events(
    provider: SendGridProvider, event: str = "delivered", recipients: set[str] | None = None
) -> list[dict[str, Any]]:
    """SendGrid's Event Webhook body for the emails it delivered (to `recipients`, or all):
    each event carries the email's custom_args at its top level, as SendGrid posts them."""
    now = int(time.time())
    outcome: dict[str, Any] = {
        "delivered": {"response": "250 2.0.0 OK"},
        "bounce": {"reason": "550 5.1.1 The email account that you tried to reach does not exist", "status": "5.1.1"},
        "dropped": {"reason": "Bounced Address"},
    }.get(event, {})
    return [
        {
            "email": email.to,
            "timestamp": now,
            "smtp-id": f"<{email.sg_message_id}@ismtpd-loopback>",
            "event": event,
            "category": email.categories,
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": email.sg_message_id,
            **outcome,
            **email.custom_args,
        }
        for email in provider.delivered
        if recipients is None or email.to in recipients
    ]


def sendgrid_events_post(url: str, events: list[dict[str, Any]], auth: str) -> int:
    """Post `events` to `url` as SendGrid posts its Event Webhook (a JSON array, with the
    basic auth of the webhook URL's user:password); returns the HTTP status."""
    return post_json(url, events, auth)
