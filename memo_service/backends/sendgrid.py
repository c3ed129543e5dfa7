"""anymail's SendGrid backend, sending up to 1,000 recipients in one API call.

With EMAIL_BACKEND=memo_service.backends.sendgrid.EmailBackend a send task hands its
emails to SendGrid's v3 /mail/send in calls of up to `merge_batch_size` recipients:
anymail turns the merge data into one personalization per recipient with legacy
`substitutions`, which SendGrid applies as plain string replacement (never escaping:
our HTML values come escaped already). anymail makes each recipient's message id
(custom_args "anymail_id") and puts our delivery id beside it, so SendGrid's events
come back to anymail's tracking view with both.

What SendGrid does not do, and what that means here:
- It refuses a whole call (HTTP 400, naming the field, e.g.
  "personalizations.3.to.0.email") for one bad recipient: `refuses_a_recipient`, and
  sending.py halves the call until the refusal is down to that recipient.
- A personalization's substitutions are capped (SUBSTITUTIONS_LIMIT), and SendGrid
  substitutes inside substituted values too. A memo whose template tests a value
  travels as each recipient's whole email under three merge fields, which a long memo
  overflows; and a value carrying one of our merge fields would be substituted again.
  A whole email over the cap goes in a call of its own (`merge_email_limit`: sending.py
  never batches it); any other call that would overflow, or whose values carry our
  merge field, is refused here before it goes (`NotBatchable`, a refusal like the 400)
  and halved until each part fits.
- It has no idempotency key and nothing we can ask what it accepted: a worker that
  died mid-call leaves its deliveries outcome_unknown (memos/send/reconcile.py).
- Its throttling answer (429) says when the window resets in X-RateLimit-Reset, not
  Retry-After: it is given to failures.py as the Retry-After it reads.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from anymail.backends import sendgrid
from anymail.exceptions import AnymailError
from anymail.utils import EmailAddress

from memo_service.backends.base import Capabilities, MergeField, MergeFields, TakesOurValues

# SendGrid's cap on one personalization's substitutions (keys and values), in bytes.
SUBSTITUTIONS_LIMIT = 10_000
# The field a 400 names when SendGrid will not take one recipient of a call.
RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.(?:to|cc|bcc)\.\d+\.(?:email|name)")
# SendGrid refuses a recipient's display name containing these.
NAME_REFUSES = re.compile(r"[,;]")


class NotBatchable(AnymailError):
    """This message cannot go to SendGrid as one call with substitutions; each of its
    recipients can, alone (a message of one recipient carries no merge data)."""


class SendGridPayload(TakesOurValues, sendgrid.SendGridPayload):
    def email_object(self, email: EmailAddress) -> Any:
        """SendGrid refuses a recipient whose name has a comma or a semicolon ("Smith,
        John"): the name goes without them rather than the memo not at all."""
        if NAME_REFUSES.search(email.display_name):
            email = EmailAddress(" ".join(NAME_REFUSES.sub(" ", email.display_name).split()), email.addr_spec)
        return super().email_object(email)


class EmailBackend(Capabilities, sendgrid.EmailBackend):
    # SendGrid's limit on personalizations (and on recipients) in one call; a send task
    # carries this many deliveries (dispatch.send_batch_size), so a task is one call.
    merge_batch_size = 1000
    # A whole email this long in UTF-8 (with room for JSON's escapes) never goes in a batch.
    merge_email_limit = SUBSTITUTIONS_LIMIT * 9 // 10
    # Substitution keys are matched as plain text anywhere in subject and bodies, so the
    # marks are ones a memo does not contain by accident (a memo that does goes whole).
    merge_fields = MergeFields.same(MergeField("[[memo:", "]]"))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # anymail builds each substitution's key with this: the keys merge_fields gives.
        self.merge_field_format = self.merge_fields.text.format("{}")

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        if len(message.to) > 1 and message.merge_data:
            if reason := self._not_batchable(message.merge_data):
                raise NotBatchable(reason, email_message=message, backend=self)
        return SendGridPayload(message, defaults, self)

    def _not_batchable(self, merge_data: dict[str, dict[str, Any]]) -> str:
        before = self.merge_fields.text.before
        for values in merge_data.values():
            size = sum(
                len(self.merge_field_format.format(k).encode()) + len(str(v).encode()) for k, v in values.items()
            )
            if size > SUBSTITUTIONS_LIMIT:
                return f"a recipient's substitutions take {size} bytes, over SendGrid's {SUBSTITUTIONS_LIMIT}"
            if any(before in str(v) for v in values.values()):
                return "a recipient's value contains a merge field, which SendGrid would substitute again"
        return ""

    def raise_for_status(self, response: Any, payload: Any, message: Any) -> None:
        reset = response.headers.get("X-RateLimit-Reset")
        if response.status_code == 429 and reset and "Retry-After" not in response.headers:
            try:
                response.headers["Retry-After"] = str(max(1, math.ceil(float(reset) - time.time())))
            except ValueError:
                pass  # not a time: failures.py backs off as for any 429
        super().raise_for_status(response, payload, message)

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """SendGrid refuses a whole call (HTTP 400) for one recipient it will not take,
        naming that recipient's field; or the call could not go as one (NotBatchable)."""
        if isinstance(error, NotBatchable):
            return True
        response = getattr(error, "response", None)
        if getattr(error, "status_code", None) != 400 or response is None:
            return False
        try:
            errors = json.loads(response.text).get("errors") or []
        except (ValueError, AttributeError):
            return False
        return any(isinstance(e, dict) and RECIPIENT_FIELD.fullmatch(str(e.get("field"))) for e in errors)
