"""A loopback HTTP server speaking Mailgun's sending API, as anymail's real Mailgun
backend calls it (POST /v3/<domain>/messages, multipart form). Test tooling, not product
code: point anymail at it with ANYMAIL MAILGUN_API_URL and it records every accepted
message, or answers with the status a test asks for; mailgun_events_post then posts
Mailgun's tracking webhooks for what it accepted back to us. It also serves Mailgun's
events API (GET /v3/<domain>/events, `accepted` events) as the real one does: filtered
by event, tags, recipient and time range, oldest first, paged by `paging.next` URLs,
and each event visible only `events_lag` seconds after it happened (an early page
misses it for good, as Mailgun's polling guide warns). Its Logs API (POST
/v1/analytics/logs, which Mailgun offers instead of the deprecated events API) serves
the same events with the same lag, filtered and paged by token as the real one;
`logs_unavailable` makes it answer as an account without it.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import itertools
import json
import queue
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

API_KEY = "key-loopback"


class Loopback(Protocol):
    """What the fault tests need of a provider's loopback server: where it listens, and
    holding a call's answer (`hold` calls; each held one's client port and release event
    are put in `held`). A server that also has `env()` (the worker's EMAIL_BACKEND and
    ANYMAIL_* variables) can be sent to by test_faults.start_worker."""

    url: str
    hold: int
    held: queue.Queue[tuple[int, threading.Event]]
    lock: threading.Lock


@dataclass
class Accepted:
    domain: str
    fields: dict[str, list[str]]
    message_id: str

    def first(self, name: str) -> str:
        return self.fields.get(name, [""])[0]


@dataclass
class Provider:
    url: str
    accepted: list[Accepted] = field(default_factory=list)
    # Answers to give before accepting normally: (status, json body[, headers]) popped in order.
    failures: list[tuple[Any, ...]] = field(default_factory=list)
    requests: int = 0
    calls: int = 0  # accepted API calls (a batch call accepts many messages)
    delay: float = 0.0  # seconds to wait before answering, to provoke client timeouts
    # Hold the answer to this many accepted calls, recorded but not yet answered, until
    # the test releases them: a worker killed then dies after the provider has its
    # message and before our commit. Each held call's client port and release event
    # are put in `held`.
    hold: int = 0
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    # Answer this share of requests 429 with this Retry-After (seconds), at random.
    throttle_ratio: float = 0.0
    retry_after: str = "1"
    # Addresses refused per recipient (Mailgun answers 400 naming the address).
    refuse: set[str] = field(default_factory=set)
    # (arrival time, status) of every request, for rate and Retry-After checks.
    log: list[tuple[float, int]] = field(default_factory=list)
    # The body of every accepted API call, as it came.
    bodies: list[bytes] = field(default_factory=list)
    # False: record only each message's `to`, neither its substituted text nor the call's
    # body (a benchmark's million messages would not fit in memory), and no events.
    expand: bool = True
    # Hold this many calls before recording them, until released: a call whose client
    # is gone by then is dropped unrecorded (the provider never got it). Put in `held`.
    hold_unrecorded: int = 0
    # The events API: every `accepted` event, and seconds before each becomes visible.
    events: list[dict[str, Any]] = field(default_factory=list)
    events_lag: float = 0.0
    dropped: int = 0  # held unrecorded calls dropped because their client was gone
    event_requests: int = 0
    # The Logs API (POST /v1/analytics/logs) serves the same events; answered with this
    # status instead when set (404: an account without it; 403: a plan without it).
    logs_unavailable: int = 0
    log_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def basic_auth(credentials: str) -> str:
    """The Authorization header of basic auth with `credentials` ("user:password")."""
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def post_json(url: str, payload: Any, auth: str) -> int:
    """POST `payload` as JSON to `url` with basic auth `auth` ("user:password"), as a
    provider posts its webhook; returns the HTTP status (an error status raises)."""
    request = urllib.request.Request(
        url,
        json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": basic_auth(auth)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return int(response.status)


def mailgun_events_post(provider: Provider, url: str, auth: str, signing_key: str, event: str = "delivered") -> int:
    """Post a tracking event for every message the provider accepted to `url`, as Mailgun
    posts its webhooks (signed JSON with the message's user-variables); returns how many
    were posted."""
    import hashlib
    import hmac
    import uuid

    for message in provider.accepted:
        token, timestamp = uuid.uuid4().hex, str(int(time.time()))
        payload = {
            "signature": {
                "timestamp": timestamp,
                "token": token,
                "signature": hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest(),
            },
            "event-data": {
                "event": event,
                "id": uuid.uuid4().hex[:22],
                "timestamp": time.time(),
                "recipient": message.first("to").rsplit("<", 1)[-1].rstrip(">"),
                "message": {"headers": {"message-id": message.message_id.strip("<>")}},
                "user-variables": {
                    name[2:]: values[0] for name, values in message.fields.items() if name.startswith("v:")
                },
            },
        }
        post_json(url, payload, auth)
    return len(provider.accepted)


def _event_time(value: str) -> float:
    """A begin/end parameter: a Unix timestamp or an RFC 2822 date, as Mailgun takes."""
    try:
        return float(value)
    except ValueError:
        return email.utils.parsedate_to_datetime(value).timestamp()


def _events_page(provider: Provider, base: str, domain: str, query: dict[str, Any]) -> dict[str, Any]:
    """One page of the events API: events visible now that match `query` and come after
    its cursor (time, sequence), oldest first; `paging.next` carries the query on."""
    now = time.time()
    limit = min(int(query.get("limit", 100)), 300)
    begin = _event_time(query["begin"]) if query.get("begin") else 0.0
    end = _event_time(query["end"]) if query.get("end") else float("inf")
    after = tuple(query.get("after", (0.0, -1)))
    with provider.lock:
        events = list(provider.events)
    items = [
        e
        for e in events
        if e["timestamp"] + provider.events_lag <= now
        and e["domain"] == domain
        and begin <= e["timestamp"] <= end
        and (e["timestamp"], e["seq"]) > after
        and query.get("event", e["event"]) == e["event"]
        and (not query.get("tags") or query["tags"] in e["tags"])
        and (not query.get("recipient") or query["recipient"] == e["recipient"])
    ][:limit]
    cursor = {**query, "after": [items[-1]["timestamp"], items[-1]["seq"]] if items else list(after)}
    token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
    first = base64.urlsafe_b64encode(json.dumps({**query, "after": [0.0, -1]}).encode()).decode()
    return {
        "items": [{k: v for k, v in e.items() if k not in ("domain", "seq")} for e in items],
        "paging": {
            "next": f"{base}/v3/{domain}/events/{token}",
            "first": f"{base}/v3/{domain}/events/{first}",
            "previous": f"{base}/v3/{domain}/events/{first}",
            "last": f"{base}/v3/{domain}/events/{token}",
        },
    }


def _logs_page(provider: Provider, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, answer) of the Logs API for one request: the events visible now whose
    event is in `events`, that pass every `filter.AND` condition (domain, tags or
    recipient, comparator "="), within start..end (RFC 2822, whole seconds; by default
    the day before now), after the `pagination.token`'s cursor, oldest first."""
    now = time.time()
    try:
        end = email.utils.parsedate_to_datetime(body["end"]).timestamp() if body.get("end") else now
        start = email.utils.parsedate_to_datetime(body["start"]).timestamp() if body.get("start") else end - 86400
        conditions = [
            (c["attribute"], {v["value"] for v in c["values"]}, c["comparator"])
            for c in (body.get("filter") or {}).get("AND", [])
        ]
        if any(name not in ("domain", "tags", "recipient") or comparator != "=" for name, _, comparator in conditions):
            raise ValueError("only domain, tags and recipient, with '=', are served here")
        paging = body.get("pagination") or {}
        limit = int(paging.get("limit", 10))
        if not 0 < limit <= 100 or paging.get("sort", "timestamp:asc") != "timestamp:asc":
            raise ValueError("limit is 1 to 100; sort is timestamp:asc")
        after = tuple(json.loads(base64.urlsafe_b64decode(paging["token"]))) if paging.get("token") else (0.0, -1)
    except (KeyError, TypeError, ValueError) as error:
        return 400, {"message": f"invalid request: {error}"}
    wanted = set(body.get("events") or ())
    with provider.lock:
        events = list(provider.events)

    def passes(e: dict[str, Any]) -> bool:
        values = {"domain": {e["domain"]}, "tags": set(e["tags"]), "recipient": {e["recipient"]}}
        return all(values[name] & allowed for name, allowed, _ in conditions)

    items = [
        e
        for e in events
        if e["timestamp"] + provider.events_lag <= now
        and start <= e["timestamp"] <= end
        and (e["timestamp"], e["seq"]) > after
        and (not wanted or e["event"] in wanted)
        and passes(e)
    ][:limit]
    cursor = [items[-1]["timestamp"], items[-1]["seq"]] if items else list(after)
    return 200, {
        "start": email.utils.formatdate(start),
        "end": email.utils.formatdate(end),
        "items": [
            {
                "id": e["id"],
                "event": e["event"],
                "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e["timestamp"]))
                + f".{int(e['timestamp'] % 1 * 1000):03d}Z",
                "account": {"id": "loopback"},
                "domain": {"name": e["domain"]},
                "recipient": e["recipient"],
                "recipient-domain": e["recipient"].rsplit("@", 1)[-1],
                "tags": e["tags"],
                "message": e["message"],
                "user-variables": json.dumps(e["user-variables"]),  # a JSON string, as Mailgun gives it
            }
            for e in items
        ],
        "pagination": {
            "next": base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode(),
            "first": base64.urlsafe_b64encode(json.dumps([0.0, -1]).encode()).decode(),
        },
    }


def _form_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        return urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
    parsed = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP)
    fields: dict[str, list[str]] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)  # bytes: each part is a leaf
        fields.setdefault(str(name), []).append(
            payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        )
    return fields


RECIPIENT_VAR = re.compile(r"%recipient\.([^%]+)%")


def _per_recipient(fields: dict[str, list[str]], expand: bool = True) -> list[dict[str, list[str]]]:
    """A batch call is one message per `to`, with %recipient.X% substituted from its
    recipient-variables, as Mailgun delivers it; a plain call is one message."""
    if not expand:
        return [{"to": [to]} for to in fields["to"]]
    if "recipient-variables" not in fields:
        return [fields]
    variables = json.loads(fields["recipient-variables"][0])
    messages = []
    for to in fields["to"]:
        address = to.rsplit("<", 1)[-1].rstrip(">").strip()
        values = variables.get(address, {})
        messages.append(
            {
                **{
                    name: [RECIPIENT_VAR.sub(lambda m: str(values.get(m.group(1), "")), v) for v in vs]  # noqa: B023
                    for name, vs in fields.items()
                    if name != "recipient-variables"
                },
                "to": [to],
            }
        )
    return messages


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 makes concurrent clients retry for a second (DESIGN.md).
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client killed while it waited for the answer (the fault tests)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Nagle's algorithm would add 40 ms to each answer (DESIGN.md).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _hold(self, provider: Any, counter: str = "hold") -> bool:
        """Hold the answer if the provider's `counter` says so; True if held."""
        release = threading.Event()
        with provider.lock:
            if getattr(provider, counter) <= 0:
                return False
            setattr(provider, counter, getattr(provider, counter) - 1)
            provider.held.put((self.client_address[1], release))
        release.wait(60)
        return True

    def do_POST(self) -> None:
        """The request's whole body to `_post`; none when the client went before sending all
        of it (a killed worker's half-sent request is no request: a real provider drops it)."""
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) == length:
            self._post(body)

    def _post(self, body: bytes) -> None:
        """What the server does with a POST request and its whole body."""
        self._answer(405, {"message": "method not allowed"})

    def _client_gone(self) -> bool:
        """Has the client closed its end (a killed process's socket is closed by the kernel)?"""
        self.connection.setblocking(False)
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.connection.setblocking(True)

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve on a free loopback port in a thread; yields http://127.0.0.1:PORT."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def mailgun_server() -> Iterator[Provider]:
    counter = itertools.count(1)
    throttle_rng = random.Random(7)  # the same 429s on every run

    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            expected = basic_auth(f"api:{API_KEY}")
            if self.path.rstrip("/") == "/v1/analytics/logs":
                return self._logs(body, expected)
            if provider.delay:
                time.sleep(provider.delay)
            with provider.lock:
                provider.requests += 1
                failure = provider.failures.pop(0) if provider.failures else None
            if self.headers.get("Authorization") != expected:
                return self._answer(401, {"message": "Invalid private key"})
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "v3" or parts[2] != "messages":
                return self._answer(404, {"message": "not found"})
            arrived = time.time()
            if failure:
                provider.log.append((arrived, failure[0]))
                return self._answer(*failure)
            if provider.throttle_ratio and throttle_rng.random() < provider.throttle_ratio:
                provider.log.append((arrived, 429))
                return self._answer(429, {"message": "Too many requests"}, {"Retry-After": provider.retry_after})
            fields = _form_fields(self.headers["Content-Type"], body)
            if not fields.get("to"):
                provider.log.append((arrived, 400))
                return self._answer(400, {"message": "'to' parameter is missing"})
            refused = [to for to in fields.get("to", []) if any(a in to for a in provider.refuse)]
            if refused:
                provider.log.append((arrived, 400))
                return self._answer(400, {"message": f"'to' parameter is not a valid address: {refused[0]}"})
            if self._hold(provider, "hold_unrecorded") and self._client_gone():
                with provider.lock:
                    provider.dropped += 1
                return  # the provider never got it
            provider.log.append((arrived, 200))
            message_id = f"<{next(counter)}.loopback@{parts[1]}>"
            with provider.lock:
                provider.calls += 1
                if provider.expand:
                    provider.bodies.append(body)
                messages = [Accepted(parts[1], f, message_id) for f in _per_recipient(fields, provider.expand)]
                provider.accepted += messages
                if provider.expand:
                    accepted_at = time.time()
                    provider.events += [
                        {
                            "event": "accepted",
                            "id": f"{message_id.strip('<>')}-{n}",
                            "timestamp": accepted_at,
                            "recipient": m.first("to").rsplit("<", 1)[-1].rstrip(">").strip(),
                            "domain": parts[1],
                            "tags": m.fields.get("o:tag", []),
                            "seq": len(provider.events) + n,
                            "message": {"headers": {"message-id": message_id.strip("<>")}},
                            "user-variables": {k[2:]: v[0] for k, v in m.fields.items() if k.startswith("v:")},
                        }
                        for n, m in enumerate(messages)
                    ]
            self._hold(provider)
            self._answer(200, {"id": message_id, "message": "Queued. Thank you."})

        def _logs(self, body: bytes, expected: str) -> None:
            if self.headers.get("Authorization") != expected:
                return self._answer(401, {"message": "Invalid private key"})
            with provider.lock:
                provider.log_requests += 1
            if provider.logs_unavailable:
                return self._answer(
                    provider.logs_unavailable,
                    {"message": "forbidden" if provider.logs_unavailable == 403 else "not found"},
                )
            try:
                query = json.loads(body)
            except ValueError:
                return self._answer(400, {"message": "invalid JSON"})
            self._answer(*_logs_page(provider, query))

        def do_GET(self) -> None:
            expected = basic_auth(f"api:{API_KEY}")
            if self.headers.get("Authorization") != expected:
                return self._answer(401, {"message": "Invalid private key"})
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "v3" and parts[2] == "events":
                query: dict[str, Any] = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            elif len(parts) == 4 and parts[0] == "v3" and parts[2] == "events":
                try:
                    query = json.loads(base64.urlsafe_b64decode(parts[3]))
                except ValueError:
                    return self._answer(400, {"message": "invalid page token"})
            else:
                return self._answer(404, {"message": "not found"})
            with provider.lock:
                provider.event_requests += 1
            self._answer(200, _events_page(provider, base, parts[1], query))

    provider = Provider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/v3"
        yield provider


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # Status codes to answer with, popped in order; then 200.
    answers: list[int] = field(default_factory=list)


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A loopback HTTP server standing in for the platform's webhook endpoint."""

    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            receiver.requests.append((dict(self.headers), body))
            self._answer(receiver.answers.pop(0) if receiver.answers else 200, b"ok")

    receiver = Receiver(url="")
    with _serving(Handler) as base:
        receiver.url = f"{base}/hooks/memo"
        yield receiver


@dataclass
class ResendProvider:
    url: str
    accepted: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> email id
    repeated: list[str] = field(default_factory=list)  # keys presented again, answered with the first email
    requests: int = 0
    delay: float = 0.0
    hold: int = 0  # as Provider's
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)


RESEND_KEY = "re_loopback"


@contextmanager
def resend_server() -> Iterator[ResendProvider]:
    """Resend's POST /emails as anymail's Resend backend calls it, honouring the
    Idempotency-Key header: a repeated key gets the first email's id and sends nothing."""
    counter = itertools.count(1)

    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            if provider.delay:
                time.sleep(provider.delay)
            if self.headers.get("Authorization") != f"Bearer {RESEND_KEY}" or self.path.rstrip("/") != "/emails":
                status, answer = 401, {"message": "API key is invalid"}
            else:
                key = self.headers.get("Idempotency-Key")
                with provider.lock:
                    provider.requests += 1
                    if key and key in provider.keys:
                        email_id = provider.keys[key]
                        provider.repeated.append(key)
                    else:
                        email_id = f"loopback-{next(counter)}"
                        provider.accepted.append({**json.loads(body), "id": email_id, "idempotency_key": key})
                        if key:
                            provider.keys[key] = email_id
                status, answer = 200, {"id": email_id}
                self._hold(provider)
            self._answer(status, answer)

    provider = ResendProvider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/"
        yield provider
