"""The providers bench/send.py sends through (PROVIDER=…): for each, its loopback server
from tests/, our backend, its batch size, and the floor's request, a batch call built by
hand in the provider's documented shape (what anymail's backend would send for the same
recipients), with no framework.

Every floor call carries each recipient's whole rendered email, as the Mailgun floor
always has: in the provider's merge values where it has them (Mailgun, SES, SendGrid,
SparkPost), as each message's own content where it takes a message per recipient
(Postmark, Brevo, Resend).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

FROM = "notices@example.com"


class Email(NamedTuple):
    """One recipient's email, rendered by the floor."""

    address: str
    name: str
    subject: str
    html: str
    text: str
    delivery_id: str  # the floor's stand-in for our id, in metadata as the product puts it


# (path under the server's URL, headers, body) of one batch call.
Request = tuple[str, dict[str, str], bytes]


@dataclass(frozen=True)
class BenchProvider:
    name: str
    backend: str
    batch: int  # recipients a call, the product's (Capabilities.merge_batch_size) and the floor's
    server: Callable[[], AbstractContextManager[Any]]
    env: Callable[[Any], dict[str, str]]  # a worker's EMAIL_BACKEND and ANYMAIL_* for the server
    recipients: Callable[[Any], int]  # recipients the server took, all calls
    addresses: Callable[[Any], Iterable[str]]  # each recipient of each call the server took
    calls: Callable[[Any], int]  # API calls the server took
    floor_request: Callable[[str, list[Email]], Request]


def _quiet(server: Callable[[], AbstractContextManager[Any]]) -> Callable[[], AbstractContextManager[Any]]:
    """The server, recording only each call's recipients (a benchmark's emails would not
    fit in memory, and expanding them would cost the server what both sides pay)."""
    from contextlib import contextmanager

    @contextmanager
    def quiet() -> Iterator[Any]:
        with server() as provider:
            provider.expand = False
            yield provider

    return quiet


def _recording_calls(
    name: str,
    batch: int,
    server: Callable[[], AbstractContextManager[Any]],
    request: Callable[[str, list[Email]], Request],
) -> BenchProvider:
    """A provider whose loopback records each call's recipients (`calls`) and says how a
    worker reaches it (`env()`): every one but Mailgun's."""
    return BenchProvider(
        name=name,
        backend=f"memo_service.backends.{name}.EmailBackend",
        batch=batch,
        server=_quiet(server),
        env=lambda p: p.env(),
        recipients=lambda p: sum(map(len, p.calls)),
        addresses=lambda p: (r for call in p.calls for r in call),
        calls=lambda p: len(p.calls),
        floor_request=request,
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- Mailgun -----------------------------------------------------------------------


def _mailgun_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_provider import API_KEY

    body = urllib.parse.urlencode(
        {
            "from": FROM,
            "to": [f"{e.name} <{e.address}>" for e in emails],
            "subject": "%recipient.subject%",
            "text": "%recipient.text%",
            "html": "%recipient.html%",
            "recipient-variables": json.dumps(
                {e.address: {"subject": e.subject, "html": e.html, "text": e.text} for e in emails}
            ),
        },
        doseq=True,
    ).encode()
    auth = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    path = f"{urllib.parse.urlsplit(url).path}/example.com/messages"
    return path, {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}, body


def _mailgun() -> BenchProvider:
    from tests.loopback_provider import API_KEY, mailgun_server

    return BenchProvider(
        name="mailgun",
        backend="memo_service.backends.mailgun.EmailBackend",
        batch=1000,
        server=_quiet(mailgun_server),
        env=lambda p: {
            "EMAIL_BACKEND": "memo_service.backends.mailgun.EmailBackend",
            "ANYMAIL_MAILGUN_API_KEY": API_KEY,
            "ANYMAIL_MAILGUN_API_URL": p.url,
        },
        recipients=lambda p: len(p.accepted),
        addresses=lambda p: (a.first("to") for a in p.accepted),
        calls=lambda p: p.calls,
        floor_request=_mailgun_request,
    )


# -- Amazon SES ----------------------------------------------------------------------


def _sigv4(host: str, path: str, body: bytes, key_id: str, secret: str, region: str) -> dict[str, str]:
    """AWS Signature Version 4 for a JSON POST, as boto3 signs each SES call."""
    now = dt.datetime.now(dt.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"content-type": "application/json", "host": host, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload_hash])
    scope = f"{day}/{region}/ses/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (day, region, "ses", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Amz-Date": stamp,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={signature}",
    }


def _ses_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_amazon_ses import ACCESS_KEY, REGION, SECRET_KEY

    body = _json(
        {
            "FromEmailAddress": FROM,
            "DefaultContent": {
                "Template": {
                    "TemplateContent": {"Subject": "{{{subject}}}", "Html": "{{{html}}}", "Text": "{{{text}}}"},
                    "TemplateData": "{}",
                }
            },
            "BulkEmailEntries": [
                {
                    "Destination": {"ToAddresses": [f"{e.name} <{e.address}>"]},
                    "ReplacementEmailContent": {
                        "ReplacementTemplate": {
                            "ReplacementTemplateData": json.dumps(
                                {"subject": e.subject, "html": e.html, "text": e.text}
                            )
                        }
                    },
                    "ReplacementHeaders": [
                        {"Name": "X-Metadata", "Value": json.dumps({"delivery_id": e.delivery_id})},
                        {"Name": "X-Tag", "Value": "memo-1"},
                    ],
                }
                for e in emails
            ],
        }
    )
    path = "/v2/email/outbound-bulk-emails"
    host = urllib.parse.urlsplit(url).netloc
    return path, _sigv4(host, path, body, ACCESS_KEY, SECRET_KEY, REGION), body


def _amazon_ses() -> BenchProvider:
    from tests.loopback_amazon_ses import ses_server

    return _recording_calls("amazon_ses", 50, ses_server, _ses_request)


# -- Postmark ------------------------------------------------------------------------


def _postmark_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_postmark import SERVER_TOKEN

    body = _json(
        [
            {
                "From": FROM,
                "To": f"{e.name} <{e.address}>",
                "Subject": e.subject,
                "HtmlBody": e.html,
                "TextBody": e.text,
                "Tag": "memo-1",
                "Metadata": {"delivery_id": e.delivery_id},
            }
            for e in emails
        ]
    )
    headers = {
        "X-Postmark-Server-Token": SERVER_TOKEN,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    return f"{urllib.parse.urlsplit(url).path}email/batch", headers, body


def _postmark() -> BenchProvider:
    from tests.loopback_postmark import postmark_server

    return _recording_calls("postmark", 500, postmark_server, _postmark_request)


# -- Brevo ---------------------------------------------------------------------------


def _brevo_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_brevo import BREVO_KEY

    key = str(uuid.uuid5(uuid.NAMESPACE_URL, ",".join(e.delivery_id for e in emails)))
    body = _json(
        {
            "sender": {"email": FROM},
            "subject": "(each recipient has a version of their own)",
            "htmlContent": "(each recipient has a version of their own)",
            "headers": {"idempotencyKey": key},
            "tags": ["memo-1"],
            "messageVersions": [
                {
                    "to": [{"email": e.address, "name": e.name}],
                    "subject": e.subject,
                    "htmlContent": e.html,
                    "textContent": e.text,
                    "headers": {"X-Mailin-custom": json.dumps({"delivery_id": e.delivery_id})},
                }
                for e in emails
            ],
        }
    )
    headers = {"api-key": BREVO_KEY, "Content-Type": "application/json", "Accept": "application/json"}
    return f"{urllib.parse.urlsplit(url).path}smtp/email", headers, body  # the URL ends in /v3/


def _brevo() -> BenchProvider:
    from tests.loopback_brevo import brevo_server

    return _recording_calls("brevo", 1000, brevo_server, _brevo_request)


# -- SendGrid ------------------------------------------------------------------------

SENDGRID_FIELD = "[[memo:{}]]"  # as our backend marks a merge field


def _sendgrid_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_sendgrid import API_KEY

    body = _json(
        {
            "from": {"email": FROM},
            "subject": SENDGRID_FIELD.format("subject"),
            "content": [
                {"type": "text/plain", "value": SENDGRID_FIELD.format("text")},
                {"type": "text/html", "value": SENDGRID_FIELD.format("html")},
            ],
            "categories": ["memo-1"],
            "personalizations": [
                {
                    "to": [{"email": e.address, "name": e.name}],
                    "substitutions": {
                        SENDGRID_FIELD.format("subject"): e.subject,
                        SENDGRID_FIELD.format("text"): e.text,
                        SENDGRID_FIELD.format("html"): e.html,
                    },
                    "custom_args": {"anymail_id": str(uuid.uuid4()), "delivery_id": e.delivery_id},
                }
                for e in emails
            ],
        }
    )
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    return f"{urllib.parse.urlsplit(url).path}mail/send", headers, body  # the URL ends in /v3/


def _sendgrid() -> BenchProvider:
    from tests.loopback_sendgrid import sendgrid_server

    return _recording_calls("sendgrid", 1000, sendgrid_server, _sendgrid_request)


# -- Resend --------------------------------------------------------------------------


def _resend_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_resend import API_KEY

    ids = sorted(e.delivery_id for e in emails)
    body = _json(
        [
            {
                "from": FROM,
                "to": [f"{e.name} <{e.address}>"],
                "subject": e.subject,
                "html": e.html,
                "text": e.text,
                "headers": {"X-Metadata": json.dumps({"delivery_id": e.delivery_id})},
                "tags": [{"name": "memo", "value": "memo-1"}],
            }
            for e in emails
        ]
    )
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        "x-batch-validation": "permissive",
        "Idempotency-Key": "memo-batch-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:40],
    }
    return f"{urllib.parse.urlsplit(url).path}emails/batch", headers, body


def _resend() -> BenchProvider:
    from tests.loopback_resend import resend_batch_server

    return _recording_calls("resend", 100, resend_batch_server, _resend_request)


# -- SparkPost -----------------------------------------------------------------------


def _sparkpost_request(url: str, emails: list[Email]) -> Request:
    from tests.loopback_sparkpost import SPARKPOST_KEY

    body = _json(
        {
            "content": {"from": FROM, "subject": "{{{subject}}}", "text": "{{{text}}}", "html": "{{{html}}}"},
            "campaign_id": "memo-1",
            "recipients": [
                {
                    "address": {"email": e.address, "name": e.name},
                    "substitution_data": {"subject": e.subject, "html": e.html, "text": e.text},
                    "metadata": {"delivery_id": e.delivery_id},
                }
                for e in emails
            ],
        }
    )
    headers = {"Authorization": SPARKPOST_KEY, "Content-Type": "application/json"}
    return f"{urllib.parse.urlsplit(url).path}transmissions", headers, body  # the URL ends in /api/v1/


def _sparkpost() -> BenchProvider:
    from tests.loopback_sparkpost import sparkpost_server

    return _recording_calls("sparkpost", 2000, sparkpost_server, _sparkpost_request)


PROVIDERS: dict[str, Callable[[], BenchProvider]] = {
    "mailgun": _mailgun,
    "amazon_ses": _amazon_ses,
    "postmark": _postmark,
    "sendgrid": _sendgrid,
    "brevo": _brevo,
    "resend": _resend,
    "sparkpost": _sparkpost,
}


def bench_provider(name: str) -> BenchProvider:
    if name not in PROVIDERS:
        raise SystemExit(f"PROVIDER={name!r}: one of {', '.join(PROVIDERS)}")
    return PROVIDERS[name]()
