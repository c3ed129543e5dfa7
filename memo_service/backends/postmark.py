"""anymail's Postmark backend, sending up to 500 emails in one call to /email/batch.

With EMAIL_BACKEND=memo_service.backends.postmark.EmailBackend a send task hands its
emails to Postmark's batch endpoint: one message per recipient, each with its own
Subject, HtmlBody and TextBody (the recipient's whole rendered email: Postmark's own
merge fields live only in its stored templates, and its Mustache would escape our
already-escaped HTML again), its own To, and our delivery id in its Metadata so
Postmark's tracking webhooks find the delivery.

Postmark answers a batch with HTTP 200 and one entry per message, in order: a
MessageID, or an ErrorCode and a Message for that recipient alone. anymail's own parser
raises for the whole call on any error it does not recognise, although Postmark sent the
others (a retry would send them twice), and with every recipient refused it raises one
error for all instead of each one's reason; so each entry is read here, and a refused
recipient fails with Postmark's Message while the others are sent with their own ids.

A worker that dies during a call is reconciled by asking Postmark's Messages API which
of our delivery ids (in Metadata) it took, so nobody is flagged "outcome unknown".
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

import requests
from anymail.backends import postmark
from anymail.message import AnymailRecipientStatus

from memo_service.backends.base import Acceptance, Capabilities, ReportsAcceptance, TakesOurValues

# Postmark's limit on messages in one /email/batch call.
BATCH_LIMIT = 500
# The Messages API's page limit, and how far its offset reaches (count + offset).
SEARCH_PAGE = 500
SEARCH_REACH = 10_000
# The Messages API reads fromdate/todate as Eastern Time (UTC-5, or UTC-4 in summer),
# to the second: a range's start written at UTC-5 and its end at UTC-4 covers it in
# either season, without a time zone database.
EASTERN_WINTER = dt.timezone(dt.timedelta(hours=-5))
EASTERN_SUMMER = dt.timezone(dt.timedelta(hours=-4))
# Postmark's ErrorCode for a recipient it will not take: an invalid address (300),
# an address inactive after a bounce or complaint (406); any other code in a batch entry
# is also that message's alone.
ANYMAIL_STATUS_FOR = {300: "invalid", 406: "rejected"}


class PostmarkPayload(TakesOurValues, postmark.PostmarkPayload):
    """Each batch message filled from its recipient's merge data ("subject", "html",
    "text"), kept apart from anymail's merge_data, which Postmark reads as a template
    model (and anymail refuses without a template)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.emails: dict[str, dict[str, str]] = {}
        super().__init__(*args, **kwargs)

    def set_merge_data(self, merge_data: dict[str, dict[str, str]]) -> None:
        self.emails = merge_data

    def data_for_recipient(self, to: Any) -> dict[str, Any]:
        data: dict[str, Any] = super().data_for_recipient(to)
        email = self.emails.get(to.addr_spec)
        if email is not None:
            data["Subject"], data["HtmlBody"], data["TextBody"] = email["subject"], email["html"], email["text"]
        return data


class EmailBackend(Capabilities, postmark.EmailBackend, ReportsAcceptance):
    # A send task carries this many deliveries (dispatch.send_batch_size): one call.
    merge_batch_size = BATCH_LIMIT
    merge_fields = None  # a message per recipient, each its whole email

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        return PostmarkPayload(message, defaults, self)

    def parse_recipient_status(self, response: Any, payload: Any, message: Any) -> dict[str, Any]:
        answer = self.deserialize_json_response(response, payload, message)
        entries = answer if isinstance(answer, list) else [answer]
        if payload.cc_and_bcc_emails or len(entries) != len(payload.to_emails):
            return dict(super().parse_recipient_status(response, payload, message))  # not one of our calls
        statuses: dict[str, AnymailRecipientStatus] = {}
        refusals: dict[str, str] = {}
        for to, entry in zip(payload.to_emails, entries, strict=True):
            code = entry.get("ErrorCode", 0) if isinstance(entry, dict) else None
            if code == 0 and entry.get("MessageID"):
                delayed = "delivery may be delayed" in str(entry.get("Message", ""))
                statuses[to.addr_spec] = AnymailRecipientStatus(
                    message_id=entry["MessageID"], status="queued" if delayed else "sent"
                )
            elif isinstance(code, int) and code:
                statuses[to.addr_spec] = AnymailRecipientStatus(
                    message_id=None, status=ANYMAIL_STATUS_FOR.get(code, "failed")
                )
                refusals[to.addr_spec] = f"refused by Postmark (ErrorCode {code}): {entry.get('Message', '')}"
            else:
                return dict(super().parse_recipient_status(response, payload, message))  # raises: not Postmark's shape
        message.anymail_refusals = refusals
        return statuses

    def raise_for_recipient_status(self, anymail_status: Any, response: Any, payload: Any, message: Any) -> None:
        """A memo's email (our delivery id in its metadata) whose every recipient was
        refused is not an error of the call: each delivery fails with Postmark's reason
        for it (sending.py reads anymail_refusals), where anymail's one error would say
        only "all rejected". Other mail (an organisation contact's copy) still raises."""
        ours = payload.is_batch() or "delivery_id" in (getattr(message, "metadata", None) or {})
        if not ours:
            super().raise_for_recipient_status(anymail_status, response, payload, message)

    def accepted_delivery_ids(
        self, *, tag: str, delivery_ids: set[int], begin: dt.datetime, end: dt.datetime
    ) -> dict[int, Acceptance]:
        """Postmark's Messages API: the tag's outbound messages between `begin` and `end`
        (a minute wider each side, in either season's Eastern Time), newest first, page by
        page; each carries our delivery id in Metadata. When the range holds more than the
        search reaches (10,000: a big send's other workers fill it), each delivery is asked
        for by its id in Metadata instead (`metadata_delivery_id`), one request each."""
        params: dict[str, Any] = {
            "tag": tag,
            "count": SEARCH_PAGE,
            "offset": 0,
            "fromdate": _postmark_time(begin - dt.timedelta(minutes=1), EASTERN_WINTER),
            "todate": _postmark_time(end + dt.timedelta(minutes=1), EASTERN_SUMMER),
        }
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self.server_token}
        with requests.Session() as session:

            def search(**query: Any) -> dict[str, Any]:
                response = session.get(
                    f"{self.api_url}messages/outbound",
                    params={**params, **query},
                    headers=headers,
                    timeout=self.timeout,
                )
                response.raise_for_status()
                return dict(response.json())

            first = search()
            total = int(first.get("TotalCount", 0))
            pages: Iterable[dict[str, Any]]
            if total <= SEARCH_REACH:
                pages = itertools.chain([first], (search(offset=o) for o in range(SEARCH_PAGE, total, SEARCH_PAGE)))
            else:
                pages = (search(count=1, metadata_delivery_id=str(i)) for i in sorted(delivery_ids))
            found: dict[int, Acceptance] = {}
            for page in pages:
                for sent in page.get("Messages") or []:
                    try:
                        delivery_id = int((sent.get("Metadata") or {}).get("delivery_id", ""))
                    except ValueError:
                        continue  # not one of ours
                    if delivery_id in delivery_ids:
                        found[delivery_id] = Acceptance(str(sent["MessageID"]), _received_at(sent["ReceivedAt"]))
            return found


def _postmark_time(moment: dt.datetime, offset: dt.timezone) -> str:
    return moment.astimezone(offset).strftime("%Y-%m-%dT%H:%M:%S")


def _received_at(value: str) -> dt.datetime:
    """Postmark's ReceivedAt ("2026-12-07T15:04:05.1234567-05:00"); Eastern if it has no offset."""
    at = dt.datetime.fromisoformat(value)
    return at if at.tzinfo is not None else at.replace(tzinfo=EASTERN_WINTER)
