"""anymail's Amazon SES (v2) backend, sending up to 50 recipients in one API call.

anymail uses SES's SendBulkEmail only with a template stored at SES. Ours sends a batch
(a message with merge data) as SendBulkEmail with the message's own subject, HTML and
text as an inline template (`DefaultContent.Template.TemplateContent`), one entry per
recipient with its replacement data and, as anymail writes them, our delivery id in an
X-Metadata header and the memo's tag in X-Tag headers: SES copies a message's headers
into its event notifications, and anymail's SES tracking view reads them back there.
A single email still goes as anymail's SendEmail.

SES answers each entry apart: its own message id, or a refusal (Status and Error) while
the call's other entries were taken; a refused entry's Error becomes its reason
(`message.anymail_refusals`). SES cannot be asked afterwards what it accepted and takes
no idempotency key: a call a dead worker left is `outcome_unknown`.

boto3 raises its own errors; they are re-raised as the HTTP answers they were (status,
headers, body), so the failure policy (memos/send/failures.py) reads SES as it reads any
HTTP provider. boto3's own retries are off: a retried call that SES had taken would be a
second email, and what to retry is the failure policy's decision.

anymail makes a boto3 client for each connection, and a send task opens one: making a
client (loading SES's service model) cost a task of 100 recipients about a tenth of a
second, more than sending them. One client is made per process and settings and reused
(boto3's clients are thread-safe); closing a connection leaves it open.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import requests
from anymail.backends import amazon_ses
from anymail.exceptions import AnymailAPIError, AnymailRequestsAPIError
from anymail.utils import UNSET
from botocore.client import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from requests.structures import CaseInsensitiveDict

from memo_service.backends.base import Capabilities, MergeField, MergeFields, TakesOurValues, TransientRefusal

# SES's ways of saying "too fast": v2's HTTP 429, and the older Throttling answer whose
# message says which limit ("Maximum sending rate exceeded.").
THROTTLING_CODES = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException", "MaxSendRateExceeded"})
# A bulk call's entries all refused with one of these (HTTP 200) is SES pacing the
# account, not refusing the recipients: waited out as a 429 is.
THROTTLING_STATUSES = frozenset({"ACCOUNT_THROTTLED", "ACCOUNT_DAILY_QUOTA_EXCEEDED"})


class BulkRefused(AnymailAPIError):
    """SES refused every entry of a bulk call for one reason (`status`): the call failed
    whole (as anymail says), and the reason may be SES pacing us."""

    def __init__(self, *args: Any, status: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ses_status = status


class BulkEmailPayload(TakesOurValues, amazon_ses.AmazonSESV2SendBulkEmailPayload):
    """SendBulkEmail with the message's subject and bodies as an inline template."""

    def init_payload(self) -> None:
        super().init_payload()
        self.content: dict[str, str] = {}

    def set_subject(self, subject: str) -> None:
        self.content["Subject"] = subject

    def set_text_body(self, body: str) -> None:
        self.content["Text"] = body

    def set_html_body(self, body: str) -> None:
        self.content["Html"] = body

    def finalize_payload(self) -> None:
        super().finalize_payload()
        template = self.params.setdefault("DefaultContent", {}).setdefault("Template", {})
        template["TemplateContent"] = self.content
        # SES requires template data; every value of ours is the recipient's own.
        template.setdefault("TemplateData", "{}")

    def parse_recipient_status(self, response: Any) -> Any:
        """anymail's per-recipient status, and each refused entry's reason in SES's words."""
        try:
            statuses = super().parse_recipient_status(response)
        except AnymailAPIError as exc:
            results = response.get("BulkEmailEntryResults") if isinstance(response, dict) else None
            if not results or len({result.get("Status") for result in results}) != 1:
                raise
            # Without SES's parsed answer as `response`: the failure policy reads an
            # error's response as an HTTP answer.
            raise BulkRefused(
                *exc.args, status=results[0]["Status"], backend=self.backend, email_message=self.message, payload=self
            ) from None
        # An entry refused because the account is throttled is refused for now: tried again.
        self.message.anymail_refusals = {
            address: (TransientRefusal if result["Status"] in THROTTLING_STATUSES else str)(
                result.get("Error") or result["Status"]
            )
            for address, result in zip(statuses, response["BulkEmailEntryResults"], strict=True)
            if result["Status"] != "SUCCESS"
        }
        return statuses


def _http_answer(error: ClientError) -> requests.Response:
    """The HTTP answer a boto3 ClientError came from, as `requests` would have given it."""
    meta = error.response.get("ResponseMetadata", {})
    details = error.response.get("Error", {})
    answer = requests.Response()
    answer.status_code = int(meta.get("HTTPStatusCode") or 400)
    answer.headers = CaseInsensitiveDict(meta.get("HTTPHeaders") or {})
    answer.reason = str(details.get("Code", ""))
    answer._content = json.dumps({"message": details.get("Message", "")}).encode()
    return answer


_CLIENTS: dict[str, Any] = {}


def _client(session_params: dict[str, Any], client_params: dict[str, Any]) -> Any:
    """One sesv2 client per process and settings (anymail's open() makes one a connection)."""
    config = client_params.get("config")
    options = getattr(config, "_user_provided_options", {})
    key = repr(
        (
            sorted(session_params.items()),
            sorted((k, v) for k, v in client_params.items() if k != "config"),
            sorted(options.items()),
        )
    )
    if key not in _CLIENTS:
        _CLIENTS[key] = boto3.session.Session(**session_params).client("sesv2", **client_params)
    return _CLIENTS[key]


class EmailBackend(Capabilities, amazon_ses.EmailBackend):
    # SES's limit on destinations in one SendBulkEmail call.
    merge_batch_size = 50
    # SES templates are Handlebars: {{x}} HTML-escapes a value, {{{x}}} inserts it as it
    # is (our HTML values come escaped already, and subject and text must stay plain).
    # Any "{{" in the memo's own text is Handlebars to SES: such a memo goes as whole emails.
    merge_fields = MergeFields.same(MergeField("{{{", "}}}", reserved="{{"))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No retries of its own (above); and no checking of each request against SES's
        # model before it goes, which cost a 50-recipient call more than building it
        # (SES checks what it gets, and answers what is wrong).
        self.client_params["config"] = self.client_params["config"].merge(
            Config(retries={"total_max_attempts": 1}, parameter_validation=False)
        )

    def open(self) -> bool:
        if self.client:
            return False
        try:
            self.client: Any = _client(self.session_params, self.client_params)
        except Exception:
            if not self.fail_silently:
                raise
            return False
        return True

    def close(self) -> None:
        self.client = None  # the process's client stays open for the next connection

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        if (
            getattr(message, "merge_data", UNSET) not in (UNSET, None)
            and getattr(message, "template_id", UNSET) is UNSET
        ):
            return BulkEmailPayload(message, defaults, self)
        return super().build_message_payload(message, defaults)

    def post_to_esp(self, payload: Any, message: Any) -> Any:
        try:
            return super().post_to_esp(payload, message)
        except AnymailAPIError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError):
                answer: requests.Response | None = _http_answer(cause)
            elif isinstance(cause, (HTTPClientError, BotoConnectionError)):
                # No answer: a read timeout or a dropped connection (SES may have taken
                # it), or no connection at all (a connect timeout is a requests one).
                answer = None
            else:
                raise
            raise AnymailRequestsAPIError(
                str(cause), backend=self, email_message=message, payload=payload, response=answer
            ) from cause

    @staticmethod
    def throttled(error: Exception) -> bool:
        if isinstance(error, BulkRefused):
            return error.ses_status in THROTTLING_STATUSES
        cause = error.__cause__
        if not isinstance(cause, ClientError):
            return False
        details = cause.response.get("Error", {})
        return details.get("Code") in THROTTLING_CODES or "Maximum sending rate exceeded" in str(
            details.get("Message", "")
        )
