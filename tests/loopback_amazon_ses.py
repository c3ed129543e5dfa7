"""A loopback HTTP server speaking Amazon SES v2's sending API as boto3's sesv2 client
calls it for anymail's Amazon SES backend (REST JSON): POST /v2/email/outbound-bulk-emails
(SendBulkEmail with an inline template) and POST /v2/email/outbound-emails (SendEmail,
raw MIME as anymail sends it). Test tooling, not product code.

It answers as SES does: a bulk call is HTTP 200 with one result per entry (its own
message id, or a refusal with Status and Error for an address in `refuse`); an error is
its HTTP status with the error's name in the x-amzn-ErrorType header and {"message": …}.
Each accepted entry is expanded into the email SES would deliver, the inline template's
Handlebars fields filled from the entry's replacement data as SES fills them ({{x}}
HTML-escaped, {{{x}}} as it is). `ses_events_post` then posts SES's event notifications
through SNS, as anymail's tracking view for SES reads them.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import itertools
import json
import queue
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from tests.loopback_provider import _Handler, _serving, basic_auth

ACCESS_KEY = "AKIALOOPBACK"
SECRET_KEY = "loopback-secret"
REGION = "us-east-1"
TOPIC_ARN = f"arn:aws:sns:{REGION}:123456789012:ses-events"
# SES's words for an address a sandboxed account may not send to.
NOT_VERIFIED = "Email address is not verified. The following identities failed the check in region US-EAST-1: "


@dataclass
class Delivered:
    """One email as SES would deliver it."""

    to: str  # as the call gave it: "Name <address>"
    address: str
    source: str
    subject: str
    html: str
    text: str
    headers: list[dict[str, str]]  # the custom headers, as SES's notifications list them
    message_id: str


@dataclass
class SESProvider:
    url: str
    accepted: list[Delivered] = field(default_factory=list)
    # Addresses of each accepted call (refused entries included: SES took the call).
    calls: list[list[str]] = field(default_factory=list)
    # Errors to answer with before accepting normally, popped in order:
    # (HTTP status, error name, message), e.g. (429, "TooManyRequestsException", "…").
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    # (Status, Error) SES gives every entry of a bulk call instead of accepting it, popped
    # one per call: e.g. ("ACCOUNT_THROTTLED", "…") is SES pacing the account in an HTTP 200.
    entry_failures: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0  # seconds to wait before answering a call it took (client timeouts)
    requests: int = 0
    # Addresses (or parts of them) SES refuses in an entry of its own.
    refuse: set[str] = field(default_factory=set)
    # Addresses (or parts of them) whose entries SES answers ACCOUNT_THROTTLED (for now).
    busy: set[str] = field(default_factory=set)
    # False: record only each call's recipients, not the emails (a benchmark's would not fit).
    expand: bool = True
    # Hold the answer to this many accepted calls, as the Mailgun loopback does (the
    # Loopback protocol of tests/loopback_provider.py).
    hold: int = 0
    held: queue.Queue[tuple[int, threading.Event]] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self) -> dict[str, str]:
        """A worker process's environment for sending here: our backend, and boto3's own
        variables for where SES is and whose keys to sign with."""
        return {
            "EMAIL_BACKEND": "memo_service.backends.amazon_ses.EmailBackend",
            "AWS_ENDPOINT_URL_SESV2": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client_params(self) -> dict[str, str]:
        """ANYMAIL["AMAZON_SES_CLIENT_PARAMS"] for sending here from this process."""
        return {
            "endpoint_url": self.url,
            "region_name": REGION,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        }


# Handlebars' escapeExpression, as SES's template engine applies it to {{x}}.
_HANDLEBARS_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}
_FIELD = re.compile(r"\{\{\{\s*([\w.]+)\s*\}\}\}|\{\{\s*([\w.]+)\s*\}\}")


def handlebars(template: str, data: dict[str, Any]) -> str:
    """Simple substitution as SES does it for an inline template: {{{x}}} inserts the
    value as it is, {{x}} HTML-escaped; a missing value is empty."""

    def value(match: re.Match[str]) -> str:
        raw, escaped = match.groups()
        text = str(data.get(raw or escaped, ""))
        return text if raw else "".join(_HANDLEBARS_ESCAPES.get(c, c) for c in text)

    return _FIELD.sub(value, template)


def address_of(to: str) -> str:
    return email.utils.parseaddr(to)[1]


def _refused(provider: SESProvider, to: str) -> bool:
    return any(part in to for part in provider.refuse)


def _bulk(
    provider: SESProvider, request: dict[str, Any], new_id: Iterator[str]
) -> tuple[dict[str, Any], list[Delivered]]:
    """SendBulkEmail: one result per entry, and the emails SES would deliver."""
    template = request["DefaultContent"]["Template"]
    content = template["TemplateContent"]
    defaults = json.loads(template.get("TemplateData") or "{}")
    results, delivered = [], []
    with provider.lock:
        whole = provider.entry_failures.pop(0) if provider.entry_failures else None
    if whole is not None:
        return {
            "BulkEmailEntryResults": [{"Status": whole[0], "Error": whole[1]} for _ in request["BulkEmailEntries"]]
        }, []
    for entry in request["BulkEmailEntries"]:
        to = entry["Destination"]["ToAddresses"][0]
        if _refused(provider, to):
            results.append({"Status": "MESSAGE_REJECTED", "Error": NOT_VERIFIED + address_of(to)})
            continue
        if any(part in to for part in provider.busy):
            results.append({"Status": "ACCOUNT_THROTTLED", "Error": "Maximum sending rate exceeded."})
            continue
        message_id = next(new_id)
        results.append({"Status": "SUCCESS", "MessageId": message_id})
        if not provider.expand:
            continue
        replacement = entry.get("ReplacementEmailContent", {}).get("ReplacementTemplate", {})
        data = {**defaults, **json.loads(replacement.get("ReplacementTemplateData") or "{}")}
        delivered.append(
            Delivered(
                to=to,
                address=address_of(to),
                source=request.get("FromEmailAddress", ""),
                subject=handlebars(content.get("Subject", ""), data),
                html=handlebars(content.get("Html", ""), data),
                text=handlebars(content.get("Text", ""), data),
                headers=[{"name": h["Name"], "value": h["Value"]} for h in entry.get("ReplacementHeaders", [])],
                message_id=message_id,
            )
        )
    return {"BulkEmailEntryResults": results}, delivered


def _single(request: dict[str, Any], message_id: str) -> Delivered:
    """SendEmail with raw MIME: the email as it came."""
    mime = email.message_from_bytes(base64.b64decode(request["Content"]["Raw"]["Data"]), policy=email.policy.default)
    assert isinstance(mime, EmailMessage)
    to = request["Destination"]["ToAddresses"][0]

    def body(kind: str) -> str:
        part = mime.get_body(preferencelist=(kind,))
        return str(part.get_content()) if part is not None and part.get_content_subtype() == kind else ""

    return Delivered(
        to=str(mime["To"]),
        address=address_of(to),
        source=str(mime["From"]),
        subject=str(mime["Subject"]),
        html=body("html"),
        text=body("plain"),
        headers=[{"name": k, "value": str(v)} for k, v in mime.items() if k.lower().startswith("x-")],
        message_id=message_id,
    )


@contextmanager
def ses_server() -> Iterator[SESProvider]:
    counter = itertools.count(1)

    def new_id() -> Iterator[str]:
        while True:
            yield f"0100{next(counter):012x}-loopback-000000"

    ids = new_id()

    class Handler(_Handler):
        def error(self, status: int, name: str, message: str) -> None:
            self._answer(
                status, {"message": message}, {"x-amzn-ErrorType": name, "x-amzn-RequestId": str(uuid.uuid4())}
            )

        def _post(self, body: bytes) -> None:
            with provider.lock:
                provider.requests += 1
                failure = provider.failures.pop(0) if provider.failures else None
            # Signatures are not checked, only that the request is signed with our key.
            if f"Credential={ACCESS_KEY}/" not in self.headers.get("Authorization", ""):
                return self.error(
                    403, "UnrecognizedClientException", "The security token included in the request is invalid."
                )
            if failure:
                return self.error(*failure)
            request = json.loads(body)
            if self.path == "/v2/email/outbound-bulk-emails":
                answer, delivered = _bulk(provider, request, ids)
                recipients = [address_of(e["Destination"]["ToAddresses"][0]) for e in request["BulkEmailEntries"]]
            elif self.path == "/v2/email/outbound-emails":
                to = request["Destination"]["ToAddresses"][0]
                if _refused(provider, to):
                    return self.error(400, "MessageRejected", NOT_VERIFIED + address_of(to))
                message_id = next(ids)
                answer, delivered = {"MessageId": message_id}, [_single(request, message_id)]
                recipients = [delivered[0].address]
            else:
                return self.error(404, "NotFoundException", f"no such operation: {self.path}")
            with provider.lock:
                provider.calls.append(recipients)
                provider.accepted += delivered
            time.sleep(provider.delay)
            self._hold(provider)
            self._answer(200, answer, {"x-amzn-RequestId": str(uuid.uuid4())})

    provider = SESProvider(url="")
    with _serving(Handler) as base:
        provider.url = base
        yield provider


def _notification(delivered: Delivered, event_type: str) -> dict[str, Any]:
    """SES's event notification (event publishing) of one delivered email."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    event: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "timestamp": now,
            "source": delivered.source,
            "sendingAccountId": "123456789012",
            "messageId": delivered.message_id,
            "destination": [delivered.address],
            "headersTruncated": False,
            "headers": [{"name": "To", "value": delivered.to}, *delivered.headers],
            "commonHeaders": {"to": [delivered.to], "subject": delivered.subject, "messageId": delivered.message_id},
            "tags": {"ses:configuration-set": ["loopback"]},
        },
    }
    if event_type == "Delivery":
        event["delivery"] = {
            "timestamp": now,
            "processingTimeMillis": 812,
            "recipients": [delivered.address],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        }
    elif event_type == "Bounce":
        event["bounce"] = {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": delivered.address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": now,
            "feedbackId": f"{uuid.uuid4()}-000000",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        }
    else:
        raise ValueError(f"no notification for {event_type}")
    return event


def ses_notifications(
    provider: SESProvider, auth: str, event_type: str = "Delivery", only: str = ""
) -> list[tuple[bytes, dict[str, str]]]:
    """(body, headers) of SES's `event_type` notification (Delivery or Bounce) for every
    email the provider accepted (or only those to addresses containing `only`), as SNS
    posts it to an HTTPS subscription: its JSON envelope as text/plain, its type and id
    in x-amz-sns-* headers, and the webhook secret `auth` ("user:password") as the URL's
    basic auth (anymail checks that; it does not verify SNS's signature)."""
    posts = []
    for delivered in provider.accepted:
        if only not in delivered.address:
            continue
        sns_id = str(uuid.uuid4())
        envelope = {
            "Type": "Notification",
            "MessageId": sns_id,
            "TopicArn": TOPIC_ARN,
            "Message": json.dumps(_notification(delivered, event_type)),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "SignatureVersion": "1",
            "Signature": "bG9vcGJhY2s=",
            "SigningCertURL": f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-loopback.pem",
            "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC_ARN}:1",
        }
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": sns_id,
            "x-amz-sns-topic-arn": TOPIC_ARN,
            "Authorization": basic_auth(auth),
        }
        posts.append((json.dumps(envelope).encode(), headers))
    return posts


def ses_events_post(provider: SESProvider, url: str, auth: str, event_type: str = "Delivery", only: str = "") -> int:
    """Post `ses_notifications` to `url` (a live server) as SNS does; returns how many."""
    posts = ses_notifications(provider, auth, event_type, only)
    for body, headers in posts:
        urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=10).read()
    return len(posts)
