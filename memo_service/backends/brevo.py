"""anymail's Brevo backend, sending up to 1,000 recipients in one API call, each with
their own whole email, under one idempotency key per call.

With EMAIL_BACKEND=memo_service.backends.brevo.EmailBackend a send task hands its emails
to Brevo's POST /v3/smtp/email as `messageVersions`, one version per recipient. Brevo's
template language would fill `{{ params.… }}` from a version's params, but whether it
HTML-escapes them is Brevo's business, not ours: so no params travel. Each version
carries its recipient's own rendered subject, HTML and text instead (payload.merged_message
gives them as the merge data's "subject", "html" and "text": `merge_fields = None`), and
our delivery id in its own X-Mailin-custom header (anymail's merge_metadata), which
Brevo's webhooks hand back for anymail's tracking view.

Brevo answers a call it took with one message id per version, in order, which anymail
gives each recipient (its recipient status): each delivery stores its own. Brevo never
takes a call in part: an address it will not take refuses the whole call (400), which
sending.py then halves (`refuses_a_recipient`) down to that one recipient.

The call carries an idempotency key derived from its deliveries' ids, so the same
deliveries make the same call again: a lost answer, or a dead worker's call sent again by
reconciliation, is answered by Brevo with the first call's message ids and sends nothing
twice, for as long as Brevo keeps the key (`idempotency_window`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from anymail.backends import brevo

from memo_service.backends.base import Capabilities, TakesOurValues

# Our own namespace for the calls' keys (Brevo takes a UUID): a version-5 UUID of the
# call's sorted delivery ids is the same for the same deliveries, on any worker.
CALL_KEYS = uuid.uuid5(uuid.NAMESPACE_URL, "memo-service:brevo-call")

# Brevo takes a subject and an HTML body at the top of a call even when every version
# has its own (a version's own overrides it). When the versions differ, the top carries
# this instead of one recipient's email, so that no one else's link could ever reach a
# recipient; nobody receives it while Brevo honours the versions.
EACH_HAS_ITS_OWN = "(each recipient has a version of their own)"

# A version's field for each of the merge data's values.
CONTENT = {"subject": "subject", "html": "htmlContent", "text": "textContent"}


def call_key(delivery_ids: list[str]) -> str:
    """The call's idempotency key: the same deliveries, the same key."""
    return str(uuid.uuid5(CALL_KEYS, ",".join(sorted(delivery_ids, key=lambda i: (len(i), i)))))


class BrevoPayload(TakesOurValues, brevo.BrevoPayload):
    def serialize_data(self) -> str:
        """anymail's request, with each version's own subject and bodies instead of
        params, and the call's idempotency key."""
        ids = [m.get("delivery_id", "") for m in self.merge_metadata.values()] or [self.metadata.get("delivery_id", "")]
        if all(ids):
            self.data["headers"]["idempotencyKey"] = call_key([str(i) for i in ids])
        if not self.is_batch():
            return str(super().serialize_data())
        versions = []
        for to in self.data.pop("to", []):
            version: dict[str, Any] = {"to": [to]}
            own = self.merge_data.get(to["email"], {})
            for name, field in CONTENT.items():
                if own.get(name):
                    version[field] = own[name]
            if to["email"] in self.merge_metadata:
                # Global metadata, with the recipient's own over it (as anymail does).
                custom = self.serialize_json({**self.metadata, **self.merge_metadata[to["email"]]})
                self.prevent_header_encoding_bug("merge_metadata", custom)
                version["headers"] = {"X-Mailin-custom": custom}
            versions.append(version)
        for field in CONTENT.values():
            values = {version.get(field) for version in versions}
            if len(values) == 1 and None not in values:
                # The same for all: once, at the top.
                self.data[field] = values.pop()
                for version in versions:
                    del version[field]
            elif field != "textContent" and field not in self.data:
                self.data[field] = EACH_HAS_ITS_OWN
        self.data["messageVersions"] = versions
        return str(self.serialize_json(self.data))


class EmailBackend(Capabilities, brevo.EmailBackend):
    # Brevo's limit on message versions in one call; a send task carries this many
    # deliveries (dispatch.send_batch_size), so a task is one call.
    merge_batch_size = 1000
    # None: each version is filled with its recipient's whole email (see the docstring).
    merge_fields = None
    idempotent = True  # the call's idempotencyKey
    # Brevo documents keeping a key 15 minutes (its changelog; a later page says 30):
    # the shorter is the one to trust.
    idempotency_window = dt.timedelta(minutes=15)

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        return BrevoPayload(message, defaults, self)

    def raise_for_status(self, response: Any, payload: Any, message: Any) -> None:
        """Brevo's 429 says when its window resets in `x-sib-ratelimit-reset` (seconds),
        not in Retry-After: given as Retry-After, the send waits exactly that."""
        reset = response.headers.get("x-sib-ratelimit-reset")
        if response.status_code == 429 and reset and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = reset
        super().raise_for_status(response, payload, message)

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """Brevo refuses a whole call (HTTP 400, invalid_parameter, "email is not valid
        in …") for one address it will not take; sending.py then halves the call."""
        response = getattr(error, "response", None)
        if getattr(error, "status_code", None) != 400 or response is None:
            return False
        try:
            answer = response.json()
        except ValueError:
            return False
        return (
            isinstance(answer, dict)
            and answer.get("code") == "invalid_parameter"
            and "email is not valid" in str(answer.get("message", ""))
        )
