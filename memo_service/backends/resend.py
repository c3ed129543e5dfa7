"""anymail's Resend backend: up to 100 emails a call, each call under one idempotency key.

A send task's emails go to Resend's POST /emails/batch, each recipient's whole email
(subject, HTML, text: Resend has no merge fields, so merge_fields is None and
payload.merged_message hands over each one's own render), our delivery id in each
email's X-Metadata header, which anymail's Resend tracking view reads back. A lone email
goes to POST /emails as before.

Every call carries an Idempotency-Key made from its deliveries: a delivery's id alone, or
for a batch a digest of the call's sorted delivery ids. Resend keeps a key for 24 hours,
and within them a call sent again (a lost answer, a worker killed mid-call and its rows
sent again by reconciliation) is answered with the first call's emails instead of
sending them twice. A call sent again is the same to the byte (each link is signed at
its delivery's creation), and Resend answers it with the first call's ids. Resend
answers 409 `invalid_idempotent_request` when a repeated request differs from the
first: ours can only if a developer's record changed between the call and its retry
(an import renamed them), and that answer still means Resend took the call the first
time: its recipients are recorded sent, without the ids Resend does not repeat (the
text hash kept is then the retry's).

Batches are sent in Resend's permissive validation mode (`x-batch-validation`): an
email Resend will not take comes back in the answer's `errors` (by its index in the
call) while the others are sent; that recipient alone fails, with Resend's message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from anymail.backends import resend
from anymail.exceptions import AnymailRequestsAPIError
from anymail.message import AnymailRecipientStatus

from memo_service.backends.base import Capabilities, TakesOurValues

# Resend's names for its 409 answers (its API's error reference).
KEY_REUSED = "invalid_idempotent_request"  # the key's first request differs from this one
KEY_BUSY = "concurrent_idempotent_requests"  # the key's first request is still being processed


def _error_name(response: Any) -> str:
    """The `name` of Resend's error answer ("" for anything else)."""
    try:
        return str(response.json().get("name", "")) if response is not None else ""
    except (ValueError, AttributeError):
        return ""


class ResendPayload(TakesOurValues, resend.ResendPayload):
    def __init__(self, message: Any, defaults: Any, backend: Any, *args: Any, **kwargs: Any) -> None:
        self.merge_data: dict[str, dict[str, str]] = {}
        super().__init__(message, defaults, backend, *args, **kwargs)

    def set_merge_data(self, merge_data: dict[str, dict[str, str]]) -> None:
        # anymail's Resend backend refuses merge data (Resend renders nothing); ours is
        # each recipient's whole email, filled in by serialize_data.
        if any(set(values) - {"subject", "html", "text"} for values in merge_data.values()):
            self.unsupported_feature("merge_data other than each recipient's subject, html and text")
        self.merge_data = merge_data

    def serialize_data(self) -> str:
        if not self.is_batch():
            return str(super().serialize_data())
        shared = {name: value for name, value in self.data.items() if name != "to"}
        emails = []
        for formatted, to in zip(self.data.get("to", []), self.to_recipients, strict=True):
            email = {**shared, "to": [formatted], **self.merge_data.get(to.addr_spec, {})}
            headers = dict(shared.get("headers", {}))
            if to.addr_spec in self.merge_metadata:
                headers["X-Metadata"] = self.serialize_json({**self.metadata, **self.merge_metadata[to.addr_spec]})
            headers.update(self.merge_headers.get(to.addr_spec, {}))
            if headers:
                email["headers"] = headers
            emails.append(email)
        return str(self.serialize_json(emails))

    def delivery_ids(self) -> list[str]:
        return sorted(str(values.get("delivery_id", "")) for values in self.merge_metadata.values())


class EmailBackend(Capabilities, resend.EmailBackend):
    idempotent = True  # the Idempotency-Key below
    idempotency_window = dt.timedelta(hours=24)  # how long Resend keeps a key
    # Resend's most emails in one /emails/batch call; a send task carries this many.
    merge_batch_size = 100
    merge_fields = None  # no merge fields: each recipient's whole email

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        payload = ResendPayload(message, defaults, self)
        if payload.is_batch():
            ids = ",".join(payload.delivery_ids())
            payload.headers["Idempotency-Key"] = "memo-batch-" + hashlib.sha256(ids.encode()).hexdigest()
            payload.headers["x-batch-validation"] = "permissive"
        elif delivery_id := (getattr(message, "metadata", None) or {}).get("delivery_id"):
            payload.headers["Idempotency-Key"] = f"memo-delivery-{delivery_id}"
        return payload

    def raise_for_status(self, response: Any, payload: Any, message: Any) -> None:
        if response.status_code == 409 and _error_name(response) == KEY_REUSED:
            return  # Resend took this call the first time (see the module's docstring)
        super().raise_for_status(response, payload, message)

    def parse_recipient_status(self, response: Any, payload: Any, message: Any) -> dict[str, AnymailRecipientStatus]:
        if response.status_code == 409:
            # The first call's recipients, whose ids Resend does not repeat.
            return {to.addr_spec: AnymailRecipientStatus(message_id=None, status="queued") for to in payload.recipients}
        if not payload.is_batch():
            return dict(super().parse_recipient_status(response, payload, message))
        answer = self.deserialize_json_response(response, payload, message)
        try:
            created = [str(item["id"]) for item in answer["data"]]
            errors = {int(error["index"]): str(error.get("message", "")) for error in answer.get("errors") or []}
        except (KeyError, TypeError, ValueError) as err:
            raise AnymailRequestsAPIError(
                "Invalid Resend API response format", email_message=message, payload=payload, response=response
            ) from err
        if len(created) + len(errors) != len(payload.to_recipients):
            raise AnymailRequestsAPIError(
                f"Resend answered {len(created)} ids and {len(errors)} errors for {len(payload.to_recipients)} emails",
                email_message=message,
                payload=payload,
                response=response,
            )
        # `data` lists the emails Resend created, in the call's order, leaving out those in `errors`.
        ids = iter(created)
        statuses: dict[str, AnymailRecipientStatus] = {}
        refusals: dict[str, str] = {}
        for index, to in enumerate(payload.to_recipients):
            if index in errors:
                # "failed", not "rejected": anymail raises when every recipient is
                # rejected, and then Resend's reason would be lost.
                statuses[to.addr_spec] = AnymailRecipientStatus(message_id=None, status="failed")
                refusals[to.addr_spec] = f"refused by Resend: {errors[index]}"
            else:
                statuses[to.addr_spec] = AnymailRecipientStatus(message_id=next(ids), status="queued")
        message.anymail_refusals = refusals
        return statuses

    @staticmethod
    def throttled(error: Exception) -> bool:
        """Resend's 409 for a key whose first request it is still processing: try again
        later, as after a 429."""
        return getattr(error, "status_code", None) == 409 and _error_name(getattr(error, "response", None)) == KEY_BUSY
