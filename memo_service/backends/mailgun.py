"""anymail's Mailgun backend, sending many recipients in one API call.

With EMAIL_BACKEND=memo_service.backends.mailgun.EmailBackend a send task hands its
emails to Mailgun in calls of up to `merge_batch_size` recipients (anymail's batch
sending), our delivery id in each recipient's metadata so tracking events still find
their delivery. A memo rendered by substitution (memos/compose/substitution.py) travels once,
with Mailgun's `%recipient.…%` merge fields where the values go and only each
recipient's values in recipient-variables; any other memo travels as each recipient's
own rendered subject, text and HTML. One call instead of one per email.

anymail re-parses every address and copies every merge value of a message; at 1,000
recipients that was a fifth of a send task's time. Recipients given as anymail's own
`EmailAddress` objects (send/addresses.py makes them) are taken as they are,
and merge data whose values are all plain strings is taken without a copy per value.
Anything else goes through anymail's own conversion, so the request is the same
either way (tests/test_sending.py).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests
from anymail.backends import mailgun
from django.conf import settings

from memo_service.backends.base import (
    Acceptance,
    Capabilities,
    MergeField,
    MergeFields,
    ReportsAcceptance,
    TakesOurValues,
)

# The most events one page holds: Mailgun's events API gives up to 300, its Logs API 100.
EVENTS_PAGE_LIMIT = 300
LOGS_PAGE_LIMIT = 100
# How Mailgun answers an account that has no Logs API: 404 (not there), 403 (a plan
# without it); such an account is asked through the events API.
LOGS_API_ABSENT = frozenset({403, 404})


class MailgunPayload(TakesOurValues, mailgun.MailgunPayload):
    pass


class EmailBackend(Capabilities, mailgun.EmailBackend, ReportsAcceptance):
    # Mailgun's limit on recipients in one batch call; a send task carries this many
    # deliveries (dispatch.send_batch_size), so a task is one call.
    merge_batch_size = 1000
    # How Mailgun's batch sending marks a per-recipient value in subject and bodies.
    merge_fields = MergeFields.same(MergeField("%recipient.", "%"))

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        return MailgunPayload(message, defaults, self)

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """Mailgun refuses a whole batch call (HTTP 400) for one address it will not
        take, naming the 'to' parameter; sending.py then halves the call."""
        return getattr(error, "status_code", None) == 400 and "'to' parameter" in str(error)

    def accepted_delivery_ids(
        self, *, tag: str, delivery_ids: set[int], begin: dt.datetime, end: dt.datetime
    ) -> dict[int, Acceptance]:
        """Every `accepted` event of the tag in the time range, from Mailgun's Logs API, or
        from its events API on an account without the Logs API (Mailgun marks the events
        API deprecated, yet older plans have only it); each event carries our delivery id
        in its user-variables (sending.py puts it in each recipient's metadata)."""
        domain = self.sender_domain or settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1].strip(">")
        found: dict[int, Acceptance] = {}
        with requests.Session() as session:
            session.auth = ("api", self.api_key)
            try:
                events = list(self._logs(session, domain=domain, tag=tag, begin=begin, end=end))
            except requests.HTTPError as error:
                if error.response is None or error.response.status_code not in LOGS_API_ABSENT:
                    raise
                events = list(self._events(session, domain=domain, tag=tag, begin=begin, end=end))
        for variables, message_id, at in events:
            try:
                delivery_id = int(variables.get("delivery_id", ""))
            except ValueError:
                continue  # not one of ours
            if delivery_id in delivery_ids:
                # As the send call's answer gives it (anymail's message_id).
                found[delivery_id] = Acceptance(f"<{message_id.strip('<>')}>" if message_id else "", at)
        return found

    def _logs(
        self, session: requests.Session, *, domain: str, tag: str, begin: dt.datetime, end: dt.datetime
    ) -> Iterator[tuple[dict[str, Any], str, dt.datetime]]:
        """(user-variables, message id, when) of each event from the Logs API (POST
        /v1/analytics/logs, account-wide, so filtered on the domain too), oldest first,
        page by page (`pagination.next` until a page comes back empty). Its range is in
        whole seconds (RFC 2822): widened to the seconds around `begin` and `end`."""
        url = urllib.parse.urljoin(self.api_url, "../v1/analytics/logs")  # the API's root, not /v3
        query: dict[str, Any] = {
            "start": email.utils.format_datetime(begin.astimezone(dt.UTC).replace(microsecond=0)),
            "end": email.utils.format_datetime(
                (end.astimezone(dt.UTC) + dt.timedelta(seconds=1)).replace(microsecond=0)
            ),
            "events": ["accepted"],
            "filter": {"AND": [_equals("domain", domain), _equals("tags", tag)]},
            "include_subaccounts": False,
            "pagination": {"sort": "timestamp:asc", "limit": LOGS_PAGE_LIMIT},
        }
        while True:
            response = session.post(url, json=query, timeout=self.timeout)
            response.raise_for_status()
            page = response.json()
            items = page.get("items") or []
            for item in items:
                variables = item.get("user-variables") or {}
                if isinstance(variables, str):  # the Logs API gives them as a JSON string
                    variables = json.loads(variables or "{}")
                yield (
                    variables,
                    (item.get("message") or {}).get("headers", {}).get("message-id", ""),
                    dt.datetime.fromisoformat(item["@timestamp"]),
                )
            token = (page.get("pagination") or {}).get("next")
            if not items or not token:
                return  # an empty page is the end
            query["pagination"] = {**query["pagination"], "token": token}

    def _events(
        self, session: requests.Session, *, domain: str, tag: str, begin: dt.datetime, end: dt.datetime
    ) -> Iterator[tuple[dict[str, Any], str, dt.datetime]]:
        """The same from the events API (GET /v3/<domain>/events), oldest first, page by
        page (`paging.next` until a page comes back empty)."""
        url: str | None = f"{self.api_url}{domain}/events"
        params: dict[str, Any] | None = {
            "event": "accepted",
            "tags": tag,
            "begin": f"{begin.timestamp():.6f}",
            "end": f"{end.timestamp():.6f}",
            "ascending": "yes",
            "limit": EVENTS_PAGE_LIMIT,
        }
        while url:
            response = session.get(url, params=params, timeout=self.timeout)
            response.raise_for_status()
            page = response.json()
            for event in page.get("items", []):
                yield (
                    event.get("user-variables") or {},
                    (event.get("message") or {}).get("headers", {}).get("message-id", ""),
                    dt.datetime.fromtimestamp(float(event["timestamp"]), tz=dt.UTC),
                )
            # The next page's URL carries the query on; an empty page is the end.
            url, params = (page.get("paging") or {}).get("next") if page.get("items") else None, None


def _equals(attribute: str, value: str) -> dict[str, Any]:
    """A Logs API filter condition: `attribute` is `value`."""
    return {"attribute": attribute, "comparator": "=", "values": [{"label": value, "value": value}]}
