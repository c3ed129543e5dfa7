"""A loopback HTTP server speaking Postmark's API as anymail's real Postmark backend
calls it. Test tooling, not product code.

- POST /email/batch (a JSON list of messages) and POST /email (one), authenticated by
  the X-Postmark-Server-Token header: HTTP 200 with one entry per message, in order,
  {"ErrorCode": 0, "Message": "OK", "MessageID", "To", "SubmittedAt"}, or for an address
  in `refuse` Postmark's ErrorCode 406 (inactive recipient) for that message alone (a
  single /email call gets it as HTTP 422, as Postmark answers). `throttle` calls are
  answered 429 first, as Postmark's rate limit does.
- Each accepted message is an email as Postmark delivers it: a message with its own
  Subject, HtmlBody and TextBody goes out as it came (Postmark substitutes nothing
  outside its stored templates, and escapes nothing).
- GET /messages/outbound, Postmark's Messages API: the accepted messages filtered by tag,
  recipient and fromdate/todate (Eastern Time, to the second), newest first, paged by
  count (at most 500) and offset (count + offset at most 10,000).
- postmark_events_post posts Postmark's Delivery or Bounce webhook for accepted emails,
  with basic auth, as Postmark posts them to anymail's tracking view.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import queue
import threading
import time
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from tests.loopback_provider import _Handler, _serving, post_json

SERVER_TOKEN = "postmark-loopback-token"
BACKEND = "memo_service.backends.postmark.EmailBackend"
EASTERN = zoneinfo.ZoneInfo("America/New_York")
INACTIVE = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {}. "
    "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression."
)


@dataclass
class PostmarkProvider:
    url: str
    # Every email Postmark took, as it delivers it: the message's fields plus its MessageID
    # and ReceivedAt (aware datetime).
    accepted: list[dict[str, Any]] = field(default_factory=list)
    # The recipients (addr_spec) of each accepted API call, refused ones included.
    calls: list[list[str]] = field(default_factory=list)
    requests: int = 0
    search_requests: int = 0
    # Addresses (or parts of them) Postmark holds inactive: refused per message, ErrorCode 406.
    refuse: set[str] = field(default_factory=set)
    # Answer this many calls 429 before taking any, with this Retry-After ("": none, as Postmark).
    throttle: int = 0
    retry_after: str = ""
    delay: float = 0.0  # seconds before answering
    # False: record only each call's recipients, not the emails (a benchmark's would not fit).
    expand: bool = True
    # As loopback_provider.Provider's: hold the answer to this many recorded calls until
    # the test releases them (client port and release event put in `held`).
    hold: int = 0
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self) -> dict[str, str]:
        """A worker's environment to send through this server (test_faults.start_worker)."""
        return {
            "EMAIL_BACKEND": BACKEND,
            "ANYMAIL_POSTMARK_SERVER_TOKEN": SERVER_TOKEN,
            "ANYMAIL_POSTMARK_API_URL": self.url,
        }

    def settings(self) -> dict[str, str]:
        """The same, as Django's ANYMAIL setting of the test process."""
        return {"POSTMARK_SERVER_TOKEN": SERVER_TOKEN, "POSTMARK_API_URL": self.url}


def recipient(email: dict[str, Any]) -> str:
    return parseaddr(email["To"])[1]


def _refused(provider: PostmarkProvider, to: str) -> bool:
    return any(part in recipient({"To": to}) for part in provider.refuse)


def _search(provider: PostmarkProvider, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One page of GET /messages/outbound."""
    try:
        count, offset = int(query["count"]), int(query["offset"])
    except (KeyError, ValueError):
        return 422, {"ErrorCode": 600, "Message": "Count and offset are required."}
    if count > 500 or count + offset > 10_000:
        return 422, {"ErrorCode": 600, "Message": "Count + Offset cannot exceed 10,000 messages; count at most 500."}

    def eastern(name: str) -> dt.datetime | None:
        value = query.get(name)
        return dt.datetime.fromisoformat(value).replace(tzinfo=EASTERN) if value else None

    begin, end = eastern("fromdate"), eastern("todate")
    with provider.lock:
        emails = list(provider.accepted)
    found = [
        e
        for e in reversed(emails)  # newest first
        if query.get("tag", e.get("Tag")) == e.get("Tag")
        and query.get("recipient", recipient(e)) == recipient(e)
        and all(
            str((e.get("Metadata") or {}).get(name.removeprefix("metadata_"))) == value
            for name, value in query.items()
            if name.startswith("metadata_")
        )
        and (begin is None or e["ReceivedAt"].replace(microsecond=0) >= begin)
        and (end is None or e["ReceivedAt"].replace(microsecond=0) <= end)
    ]
    return 200, {
        "TotalCount": len(found),
        "Messages": [
            {
                "Tag": e.get("Tag", ""),
                "MessageID": e["MessageID"],
                "MessageStream": "outbound",
                "To": [{"Email": recipient(e), "Name": parseaddr(e["To"])[0] or None}],
                "Cc": [],
                "Bcc": [],
                "Recipients": [recipient(e)],
                "ReceivedAt": e["ReceivedAt"].astimezone(EASTERN).isoformat(),
                "From": e.get("From", ""),
                "Subject": e.get("Subject", ""),
                "Attachments": [],
                "Status": "Sent",
                "TrackOpens": False,
                "TrackLinks": "None",
                "Metadata": e.get("Metadata", {}),
                "Sandboxed": False,
            }
            for e in found[offset : offset + count]
        ],
    }


@contextmanager
def postmark_server() -> Iterator[PostmarkProvider]:
    counter = itertools.count(1)

    class Handler(_Handler):
        def _post(self, body: bytes) -> None:
            if provider.delay:
                time.sleep(provider.delay)
            with provider.lock:
                provider.requests += 1
                throttled = provider.throttle > 0
                provider.throttle -= throttled
            if self.headers.get("X-Postmark-Server-Token") != SERVER_TOKEN:
                return self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            path = self.path.rstrip("/")
            if path not in ("/email", "/email/batch"):
                return self._answer(404, {"ErrorCode": 404, "Message": "Not found."})
            if throttled:
                headers = {"Retry-After": provider.retry_after} if provider.retry_after else {}
                return self._answer(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}, headers)
            messages = json.loads(body)
            batch = path == "/email/batch"
            if not batch:
                messages = [messages]
            elif len(messages) > 500:
                return self._answer(422, {"ErrorCode": 300, "Message": "The batch is limited to 500 messages."})
            answers: list[dict[str, Any]] = []
            with provider.lock:
                received_at = dt.datetime.now(dt.UTC)
                provider.calls.append([recipient(m) for m in messages])
                for message in messages:
                    if _refused(provider, message["To"]):
                        answers.append({"ErrorCode": 406, "Message": INACTIVE.format(recipient(message).lower())})
                        continue
                    message_id = str(uuid.UUID(int=next(counter)))
                    if provider.expand:
                        provider.accepted.append({**message, "MessageID": message_id, "ReceivedAt": received_at})
                    answers.append(
                        {
                            "ErrorCode": 0,
                            "Message": "OK",
                            "MessageID": message_id,
                            "SubmittedAt": received_at.isoformat(),
                            "To": message["To"],
                        }
                    )
            self._hold(provider)
            if batch:
                return self._answer(200, answers)
            self._answer(422 if answers[0]["ErrorCode"] else 200, answers[0])

        def do_GET(self) -> None:
            if self.headers.get("X-Postmark-Server-Token") != SERVER_TOKEN:
                return self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            url = urllib.parse.urlsplit(self.path)
            if url.path.rstrip("/") != "/messages/outbound":
                return self._answer(404, {"ErrorCode": 404, "Message": "Not found."})
            with provider.lock:
                provider.search_requests += 1
            self._answer(*_search(provider, {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}))

    provider = PostmarkProvider(url="")
    with _serving(Handler) as base:
        provider.url = f"{base}/"
        yield provider


def postmark_events(
    provider: PostmarkProvider, record_type: str = "Delivery", to: set[str] | None = None
) -> list[dict[str, Any]]:
    """Postmark's `record_type` webhook body ("Delivery", or "Bounce": a hard bounce) for
    every accepted email, or those to the addresses in `to`, as Postmark posts it."""
    events = []
    for n, email in enumerate(list(provider.accepted)):
        address = recipient(email)
        if to is not None and address not in to:
            continue
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")  # Postmark's seven digits
        common = {
            "RecordType": record_type,
            "ServerID": 23,
            "MessageStream": "outbound",
            "MessageID": email["MessageID"],
            "Tag": email.get("Tag", ""),
            "Metadata": email.get("Metadata", {}),
        }
        if record_type == "Bounce":
            events.append(
                {
                    **common,
                    "ID": 4_000_000 + n,
                    "Type": "HardBounce",
                    "TypeCode": 1,
                    "Name": "Hard bounce",
                    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
                    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
                    "Email": address,
                    "From": email.get("From", ""),
                    "BouncedAt": now,
                    "DumpAvailable": True,
                    "Inactive": True,
                    "CanActivate": True,
                    "Subject": email.get("Subject", ""),
                }
            )
        else:
            events.append({**common, "Recipient": address, "DeliveredAt": now, "Details": "smtp;250 2.0.0 OK"})
    return events


def postmark_events_post(
    provider: PostmarkProvider, url: str, auth: str, record_type: str = "Delivery", to: set[str] | None = None
) -> int:
    """Post those webhooks to `url` with basic auth `auth` ("user:password"), as Postmark
    is configured to post to anymail's tracking view; returns how many were posted."""
    events = postmark_events(provider, record_type, to)
    for event in events:
        post_json(url, event, auth)
    return len(events)
