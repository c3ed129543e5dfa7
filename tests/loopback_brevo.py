"""A loopback HTTP server speaking Brevo's transactional email API, as anymail's real
Brevo backend calls it: POST /v3/smtp/email with the `api-key` header and a JSON body,
one email (`to`) or up to 1,000 `messageVersions`, answered 201 with `messageId` or
`messageIds` (one per version, in order). Test tooling, not product code.

It behaves as Brevo documents: a version's own subject, htmlContent and textContent
override the call's (which the call must have: subject and htmlContent, without a
templateId); `{{ params.X }}` is filled from the version's params, else the call's;
the call's `headers.idempotencyKey` makes a repeated call answer the first call's ids
and send nothing; one address Brevo will not take (`refuse`) refuses the whole call
(400 invalid_parameter); `throttle` calls are answered 429 with Brevo's
x-sib-ratelimit-* headers. Each accepted call is expanded into the emails Brevo would
deliver (`delivered`), and `brevo_events_post` posts Brevo's tracking webhook for them.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from memo_service.backends import brevo
from tests.loopback_provider import _Handler, _serving, basic_auth

BREVO_KEY = "xkeysib-loopback"
# Brevo's documented limit on message versions in one call.
MAX_VERSIONS = 1000
PARAM = re.compile(r"\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}")


class TenCallsAThousand(brevo.EmailBackend):
    """Ours, in calls of 100: the fault tests' 1,000 recipients make ten calls (and ten
    send tasks) for the kills to land among, instead of one."""

    merge_batch_size = 100


@dataclass
class Email:
    """One email as Brevo would deliver it."""

    to: str  # the address
    name: str
    subject: str
    html: str
    text: str
    headers: dict[str, str]
    tags: list[str]
    message_id: str


@dataclass
class BrevoProvider:
    url: str
    delivered: list[Email] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)  # each accepted call's recipients
    bodies: list[dict[str, Any]] = field(default_factory=list)  # each accepted call's request
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key -> first answer
    repeated: list[str] = field(default_factory=list)  # keys presented again, answered from the first call
    refuse: set[str] = field(default_factory=set)  # addresses Brevo calls not valid
    throttle: int = 0  # answer this many calls 429
    reset: int = 1  # x-sib-ratelimit-reset of a 429 (seconds)
    requests: int = 0
    log: list[tuple[float, int]] = field(default_factory=list)  # (arrival, status) of each request
    hold: int = 0  # as tests.loopback_provider.Provider's: answers held after the call is recorded
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    backend: str = "memo_service.backends.brevo.EmailBackend"
    # False: record only each call's recipients, not the emails (a benchmark's would not fit).
    expand: bool = True

    def env(self) -> dict[str, str]:
        """A worker's email settings for this server (tests/test_faults.start_worker)."""
        return {
            "EMAIL_BACKEND": self.backend,
            "ANYMAIL_BREVO_API_KEY": BREVO_KEY,
            "ANYMAIL_BREVO_API_URL": self.url,
        }


def _filled(text: str, params: dict[str, Any]) -> str:
    return PARAM.sub(lambda m: str(params.get(m.group(1), "")), text)


def _emails(call: dict[str, Any], ids: list[str]) -> list[Email]:
    """The emails Brevo delivers for an accepted call: one per version (or the call's
    `to`), each version's own fields over the call's."""
    versions = call.get("messageVersions") or [{"to": call["to"]}]
    emails = []
    for version, message_id in zip(versions, ids, strict=True):
        params = {**call.get("params", {}), **version.get("params", {})}
        headers = {k: v for k, v in {**call.get("headers", {}), **version.get("headers", {})}.items()}
        headers.pop("idempotencyKey", None)
        for to in version["to"]:
            emails.append(
                Email(
                    to=to["email"],
                    name=to.get("name", ""),
                    subject=_filled(version.get("subject", call.get("subject", "")), params),
                    html=_filled(version.get("htmlContent", call.get("htmlContent", "")), params),
                    text=_filled(version.get("textContent", call.get("textContent", "")), params),
                    headers=headers,
                    tags=call.get("tags", []),
                    message_id=message_id,
                )
            )
    return emails


def _refusal(call: dict[str, Any], refuse: set[str]) -> dict[str, str] | None:
    """Brevo's answer to a call it will not take, or None."""
    if not call.get("sender"):
        return {"code": "missing_parameter", "message": "sender is missing"}
    versions = call.get("messageVersions")
    if versions is not None and not 0 < len(versions) <= MAX_VERSIONS:
        return {"code": "invalid_parameter", "message": f"messageVersions must have 1 to {MAX_VERSIONS} items"}
    if versions is None and not call.get("to"):
        return {"code": "missing_parameter", "message": "to is missing"}
    if "templateId" not in call:
        for name in ("subject", "htmlContent"):
            if not call.get(name):
                return {"code": "missing_parameter", "message": f"{name} is missing"}
    where = "messageVersions" if versions is not None else "to"
    for version in versions or [{"to": call["to"]}]:
        if any(to.get("email", "") in refuse or "@" not in to.get("email", "") for to in version.get("to", [])):
            return {"code": "invalid_parameter", "message": f"email is not valid in {where}"}
    return None


@contextmanager
def brevo_server() -> Iterator[BrevoProvider]:
    counter = itertools.count(1)

    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            arrived = time.time()
            with provider.lock:
                provider.requests += 1
                throttled = provider.throttle > 0
                provider.throttle -= throttled
            if self.headers.get("api-key") != BREVO_KEY:
                return self._answer(401, {"code": "unauthorized", "message": "Key not found"})
            if self.path.rstrip("/") != "/v3/smtp/email":
                return self._answer(404, {"code": "not_found", "message": "Invalid route"})
            if throttled:
                provider.log.append((arrived, 429))
                limits = {"x-sib-ratelimit-limit": "100", "x-sib-ratelimit-remaining": "0"}
                return self._answer(
                    429,
                    {"code": "too_many_requests", "message": "Too many requests"},
                    {**limits, "x-sib-ratelimit-reset": str(provider.reset)},
                )
            call = json.loads(body)
            refusal = _refusal(call, provider.refuse)
            if refusal is not None:
                provider.log.append((arrived, 400))
                return self._answer(400, refusal)
            key = call.get("headers", {}).get("idempotencyKey")
            with provider.lock:
                if key and key in provider.keys:
                    provider.repeated.append(key)
                    answer = provider.keys[key]
                else:
                    count = len(call.get("messageVersions") or [None])
                    ids = [f"<20261207.{next(counter)}@smtp-relay.mailin.fr>" for _ in range(count)]
                    if provider.expand:
                        emails = _emails(call, ids)
                        provider.delivered += emails
                        provider.calls.append([e.to for e in emails])
                        provider.bodies.append(call)
                    else:
                        provider.calls.append([v["to"][0]["email"] for v in call.get("messageVersions") or []])
                    answer = {"messageIds": ids} if "messageVersions" in call else {"messageId": ids[0]}
                    if key:
                        provider.keys[key] = answer
            provider.log.append((arrived, 201))
            self._hold(provider)
            self._answer(201, answer)

    provider = BrevoProvider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/v3/"
        yield provider


def brevo_events_post(
    provider: BrevoProvider,
    post: Callable[[bytes, str], Any],
    secret: str,
    event: str = "delivered",
    to: set[str] | None = None,
) -> list[Any]:
    """Post Brevo's transactional webhook (`event`: delivered, hard_bounce, …) for every
    email delivered (to the addresses `to`, by default all), as Brevo posts it: one JSON
    event a request, basic auth with the webhook's user and password (`secret`,
    "user:password"). `post(body, authorization)` sends it; returns what each post returned."""
    auth = basic_auth(secret)
    answers = []
    for number, email in enumerate(provider.delivered):
        if to is not None and email.to not in to:
            continue
        now = time.time()
        payload: dict[str, Any] = {
            "event": event,
            "email": email.to,
            "id": 4242,
            "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)),
            "ts": int(now),
            "message-id": email.message_id,
            "ts_event": int(now),
            "subject": email.subject,
            "tag": email.tags[0] if email.tags else "",
            "tags": email.tags,
            "sending_ip": "185.41.28.109",
            "ts_epoch": int(now * 1000) + number,
        }
        if "X-Mailin-custom" in email.headers:
            payload["X-Mailin-custom"] = email.headers["X-Mailin-custom"]
        if event in ("hard_bounce", "soft_bounce", "blocked", "invalid_email", "error"):
            payload["reason"] = "550 5.1.1 mailbox does not exist"
        answers.append(post(json.dumps(payload).encode(), auth))
    return answers
