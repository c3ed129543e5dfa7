"""A loopback HTTP server speaking Mailgun's sending API, as anymail's real Mailgun
backend calls it (POST /v3/<domain>/messages, multipart form). Test tooling, not product
code: point anymail at it with ANYMAIL MAILGUN_API_URL and it records every accepted
message, or answers with the status a test asks for; mailgun_events_post then posts
Mailgun's tracking webhooks for what it accepted back to us.
"""

from __future__ import annotations

import base64
import email
import email.policy
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "key-loopback"


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
    # body (a benchmark's million messages would not fit in memory).
    expand: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


def mailgun_events_post(provider: Provider, url: str, auth: str, signing_key: str, event: str = "delivered") -> int:
    """Post a tracking event for every message the provider accepted to `url`, as Mailgun
    posts its webhooks (signed JSON with the message's user-variables); returns how many
    were posted."""
    import hashlib
    import hmac
    import urllib.request
    import uuid

    for message in provider.accepted:
        token, timestamp = uuid.uuid4().hex, str(int(time.time()))
        payload = {
            "signature": {"timestamp": timestamp, "token": token, "signature": hmac.new(
                signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()},
            "event-data": {
                "event": event, "id": uuid.uuid4().hex[:22], "timestamp": time.time(),
                "recipient": message.first("to").rsplit("<", 1)[-1].rstrip(">"),
                "message": {"headers": {"message-id": message.message_id.strip("<>")}},
                "user-variables": {name[2:]: values[0] for name, values in message.fields.items() if name.startswith("v:")},
            },
        }
        request = urllib.request.Request(url, json.dumps(payload).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
        urllib.request.urlopen(request, timeout=10).read()
    return len(provider.accepted)


def _form_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        return urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
    parsed = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    fields: dict[str, list[str]] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields.setdefault(str(name), []).append(payload.decode("utf-8", "replace"))
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
        messages.append({
            **{name: [RECIPIENT_VAR.sub(lambda m: str(values.get(m.group(1), "")), v) for v in vs]
               for name, vs in fields.items() if name != "recipient-variables"},
            "to": [to],
        })
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

    def _hold(self, provider: Any) -> None:
        release = threading.Event()
        with provider.lock:
            if provider.hold <= 0:
                return
            provider.hold -= 1
            provider.held.put((self.client_address[1], release))
        release.wait(60)

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
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if provider.delay:
                time.sleep(provider.delay)
            expected = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
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
            refused = [to for to in fields.get("to", []) if any(a in to for a in provider.refuse)]
            if refused:
                provider.log.append((arrived, 400))
                return self._answer(400, {"message": f"'to' parameter is not a valid address: {refused[0]}"})
            provider.log.append((arrived, 200))
            message_id = f"<{next(counter)}.loopback@{parts[1]}>"
            with provider.lock:
                provider.calls += 1
                if provider.expand:
                    provider.bodies.append(body)
                provider.accepted += [Accepted(parts[1], f, message_id) for f in _per_recipient(fields, provider.expand)]
            self._hold(provider)
            self._answer(200, {"id": message_id, "message": "Queued. Thank you."})

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
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
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
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
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
