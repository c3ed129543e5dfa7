"""A loopback HTTP server speaking SparkPost's Transmissions API as anymail's real
SparkPost backend calls it (POST /api/v1/transmissions/, JSON, the API key as the whole
Authorization header). Test tooling, not product code: point anymail at it with
ANYMAIL SPARKPOST_API_URL and it expands each transmission it takes into the emails
SparkPost would deliver, its template language applied as SparkPost documents it
(developers.sparkpost.com/api/template-language: `{{x}}` HTML-escaped in the HTML part,
`{{{x}}}` as it is, neither escaped in the subject and text; a missing value is "";
recipient substitution_data over the transmission's). It answers as SparkPost does:
one transmission id per call; a whole call refused with 422 when a recipient's address
is one it will not take (`refuse`), or, with `partial`, taken with those recipients
rejected and only counted (its documented "transmission created, but with validation
errors"); 429 when throttled. sparkpost_events_post posts SparkPost's tracking webhook
(a JSON array of {"msys": {"message_event": ...}}) for what it delivered.
"""

from __future__ import annotations

import html
import itertools
import json
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from memo_service.backends import sparkpost
from tests.loopback_provider import _Handler, _serving, post_json

SPARKPOST_KEY = "sparkpost-loopback-key"
BACKEND = "memo_service.backends.sparkpost.EmailBackend"


@dataclass
class Delivered:
    """One email as SparkPost would deliver it."""

    to: str  # the To header
    address: str  # the envelope recipient
    subject: str
    html: str
    text: str
    metadata: dict[str, Any]  # the transmission's and the recipient's, merged (rcpt_meta)
    transmission_id: str
    campaign_id: str


@dataclass
class SparkPostProvider:
    url: str
    accepted: list[Delivered] = field(default_factory=list)
    # Each accepted call's recipients (envelope addresses), in order.
    calls: list[list[str]] = field(default_factory=list)
    # Each accepted call's body, as it came.
    bodies: list[bytes] = field(default_factory=list)
    # Answers to give before accepting normally: (status, json body[, headers]) popped in order.
    failures: list[tuple[Any, ...]] = field(default_factory=list)
    requests: int = 0
    # Addresses SparkPost will not take: the whole call is refused (422, naming the
    # first), or with `partial` the call is taken without them, only counted.
    refuse: set[str] = field(default_factory=set)
    partial: bool = False
    # Answer this share of calls 429 (SparkPost's "too many requests"), at random.
    throttle_ratio: float = 0.0
    # Hold the answer to this many accepted calls (recorded, not yet answered) until the
    # test releases them; each held call's client port and release event go in `held`.
    hold: int = 0
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    # (arrival time, status) of every request.
    log: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The backend a worker sends here with (env()).
    backend: str = BACKEND
    # False: record only each call's recipients, not the emails (a benchmark's would not fit).
    expand: bool = True

    def env(self) -> dict[str, str]:
        """A worker's EMAIL_BACKEND and ANYMAIL_* variables to send here."""
        return {
            "EMAIL_BACKEND": self.backend,
            "ANYMAIL_SPARKPOST_API_KEY": SPARKPOST_KEY,
            "ANYMAIL_SPARKPOST_API_URL": self.url,
        }

    def settings(self) -> dict[str, str]:
        """The ANYMAIL setting to send here (in this process)."""
        return {"SPARKPOST_API_KEY": SPARKPOST_KEY, "SPARKPOST_API_URL": self.url}


class SmallBatches(sparkpost.EmailBackend):
    """Our SparkPost backend with calls of 100: a fault test of about a thousand
    recipients then makes ten calls for its kills to land in, not one."""

    merge_batch_size = 100


# An expression: two or three braces around a name (whitespace inside is ignored).
EXPRESSION = re.compile(r"\{\{\{\s*([A-Za-z_][\w.]*)\s*\}\}\}|\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


def sparkpost_escape(value: str) -> str:
    """SparkPost's HTML escaping of a `{{x}}` value (its documented example escapes "/"
    as well: `</b>` becomes `&lt;&#x2F;b&gt;`)."""
    return html.escape(value, quote=True).replace("/", "&#x2F;")


def substituted(template: str, values: dict[str, Any], escape: bool) -> str:
    def value(match: re.Match[str]) -> str:
        raw, escaped = match.groups()
        found: Any = values
        for key in (raw or escaped).split("."):
            found = found.get(key) if isinstance(found, dict) else None
        text = "" if found is None else found if isinstance(found, str) else json.dumps(found)
        return sparkpost_escape(text) if escape and escaped else text

    return EXPRESSION.sub(value, template)


def _delivered(transmission: dict[str, Any], recipient: dict[str, Any], transmission_id: str) -> Delivered:
    content = transmission["content"]
    address = recipient["address"]
    values = {
        **transmission.get("metadata", {}),
        **recipient.get("metadata", {}),
        **transmission.get("substitution_data", {}),
        **recipient.get("substitution_data", {}),
        "address": {"email": address["email"], "name": address.get("name", "")},
    }
    return Delivered(
        to=address.get("header_to") or address["email"],
        address=address["email"],
        subject=substituted(content.get("subject", ""), values, escape=False),
        html=substituted(content.get("html", ""), values, escape=True),
        text=substituted(content.get("text", ""), values, escape=False),
        metadata={**transmission.get("metadata", {}), **recipient.get("metadata", {})},
        transmission_id=transmission_id,
        campaign_id=transmission.get("campaign_id", ""),
    )


def _errors(message: str, description: str = "", code: str = "") -> dict[str, Any]:
    error = {"message": message, **({"description": description} if description else {})}
    return {"errors": [{**error, **({"code": code} if code else {})}]}


@contextmanager
def sparkpost_server() -> Iterator[SparkPostProvider]:
    transmission_ids = itertools.count(11668787484950529)
    throttle_rng = random.Random(7)  # the same 429s on every run

    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            with provider.lock:
                provider.requests += 1
                failure = provider.failures.pop(0) if provider.failures else None
            arrived = time.time()
            if self.headers.get("Authorization") != SPARKPOST_KEY:
                return self._answer(401, _errors("Unauthorized."))
            if self.path.split("?")[0].rstrip("/") != "/api/v1/transmissions":
                return self._answer(404, _errors("resource not found", code="1600"))
            if failure:
                provider.log.append((arrived, failure[0]))
                return self._answer(*failure)
            if provider.throttle_ratio and throttle_rng.random() < provider.throttle_ratio:
                provider.log.append((arrived, 429))
                return self._answer(429, _errors("Too many requests"))
            transmission = json.loads(body)
            recipients = transmission.get("recipients") or []
            refused = [r for r in recipients if r["address"]["email"] in provider.refuse]
            if refused and (not provider.partial or len(refused) == len(recipients)):
                provider.log.append((arrived, 422))
                email = refused[0]["address"]["email"]
                return self._answer(
                    422, _errors("invalid data format/type", f"Invalid recipient address.email: {email}", "1300")
                )
            taken = [r for r in recipients if r not in refused]
            transmission_id = str(next(transmission_ids))
            provider.log.append((arrived, 200))
            with provider.lock:
                provider.calls.append([r["address"]["email"] for r in taken])
                if provider.expand:
                    provider.bodies.append(body)
                    provider.accepted += [_delivered(transmission, r, transmission_id) for r in taken]
            results: dict[str, Any] = {
                "total_rejected_recipients": len(refused),
                "total_accepted_recipients": len(taken),
                "id": transmission_id,
            }
            answer: dict[str, Any] = {"results": results}
            if refused:  # as documented: counted, never named
                results["rcpt_to_errors"] = [
                    {"message": "invalid data format/type", "description": "Invalid recipient", "code": "1300"}
                ] * len(refused)
                answer["errors"] = [{"message": "transmission created, but with validation errors", "code": "2000"}]
            self._hold(provider)
            self._answer(200, answer)

    provider = SparkPostProvider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/api/v1/"
        yield provider


def sparkpost_events(delivered: list[Delivered], event: str = "delivery", **fields: Any) -> list[dict[str, Any]]:
    """SparkPost's tracking webhook body for each of `delivered`: one JSON array of
    message events, each with the transmission id, the recipient and its rcpt_meta;
    `fields` are added to each event (a bounce's bounce_class and raw_reason)."""
    return [
        {
            "msys": {
                "message_event": {
                    "type": event,
                    "event_id": str(uuid.uuid4().int)[:18],
                    "message_id": uuid.uuid4().hex[:20],
                    "transmission_id": d.transmission_id,
                    "campaign_id": d.campaign_id,
                    "rcpt_to": d.address.lower(),
                    "raw_rcpt_to": d.address,
                    "rcpt_meta": d.metadata,
                    "timestamp": str(int(time.time())),
                    **fields,
                }
            }
        }
        for d in delivered
    ]


def sparkpost_events_post(
    delivered: list[Delivered], url: str, auth: str, event: str = "delivery", **fields: Any
) -> int:
    """Post SparkPost's tracking webhook for `delivered` to `url` as SparkPost posts it
    (sparkpost_events, with basic auth `auth`: user:password); returns how many events."""
    events = sparkpost_events(delivered, event, **fields)
    post_json(url, events, auth)
    return len(events)
