"""anymail's SparkPost backend, sending many recipients in one transmission.

With EMAIL_BACKEND=memo_service.backends.sparkpost.EmailBackend a send task hands its
emails to SparkPost (POST /api/v1/transmissions) in calls of up to `merge_batch_size`
recipients: the subject and bodies once, each recipient with its own
substitution_data (our merge values) and metadata (our delivery id, which SparkPost's
tracking events hand back as rcpt_meta: tracking finds the delivery by it).

SparkPost's template language HTML-escapes `{{x}}` in the HTML part; our HTML values
come escaped already, so every merge field is `{{{x}}}`, inserted as it is (in the
text and the subject a value is never escaped; the triple braces mean the same there).
A memo whose own text holds "{{" would be read as SparkPost's template language: its
braces there travel as a global value instead (`_literal_braces`).

What SparkPost cannot tell us, we do not guess:
- its answer carries one transmission id for the call, no id per recipient: each
  delivery stores the transmission id;
- a transmission it took while rejecting some of its recipients says how many it
  rejected, never which ("rcpt_to_errors" name no address). Each recipient of such a
  call may or may not get the email, so the call is reported as an answer we cannot
  read (`RecipientsUncertain`): its deliveries become "outcome unknown" (never sent
  again), and SparkPost's own injection or delivery events, carrying each one's
  delivery id, settle those it took;
- it cannot be asked afterwards what it accepted (no ReportsAcceptance), and it has no
  idempotency key: a worker killed while its call was on its way leaves that call's
  deliveries "outcome unknown".
"""

from __future__ import annotations

import json
import re
from typing import Any

from anymail.backends import sparkpost
from anymail.exceptions import AnymailRequestsAPIError

from memo_service.backends.base import Capabilities, MergeField, MergeFields, TakesOurValues

# The global substitution value that stands for a "{" of the memo's own text where
# SparkPost would read it as the start of an expression.
LITERAL_BRACE = "memo_open_brace"
_LITERAL_BRACE_FIELD = "{{{" + LITERAL_BRACE + "}}}"
# Our merge fields, as merge_template (memos/compose/substitution.py) names them, and
# the whole-email values "subject", "html" and "text".
_OUR_FIELD = re.compile(r"\{\{\{(?:[vh]\d+|subject|html|text)\}\}\}")


class RecipientsUncertain(AnymailRequestsAPIError):
    """SparkPost took the transmission but rejected some of its recipients without
    naming them. No status code: to failures.py this is an answer that never came
    (the call's deliveries may or may not have been sent: outcome unknown)."""


def _literal_braces(content: str) -> str:
    """`content` with the "{" of its own text (outside our merge fields) written as the
    global value LITERAL_BRACE wherever SparkPost could read one as (part of) an
    expression's opening: in a stretch holding "{{" or ending in "{" before a field."""
    parts, at = [], 0
    for field in _OUR_FIELD.finditer(content):
        parts += [_literal(content[at : field.start()], before_field=True), field.group()]
        at = field.end()
    parts.append(_literal(content[at:], before_field=False))
    return "".join(parts)


def _literal(text: str, before_field: bool) -> str:
    if "{{" in text or (before_field and text.endswith("{")):
        return text.replace("{", _LITERAL_BRACE_FIELD)
    return text


class SparkPostPayload(TakesOurValues, sparkpost.SparkPostPayload):
    def serialize_data(self) -> str:
        content = self.data["content"]
        literal = False
        for part in ("subject", "html", "text"):
            if "{" in content.get(part, ""):
                written = _literal_braces(content[part])
                literal = literal or written != content[part]
                content[part] = written
        if literal:
            self.data.setdefault("substitution_data", {})[LITERAL_BRACE] = "{"
        return str(super().serialize_data())


class EmailBackend(Capabilities, sparkpost.EmailBackend):
    # SparkPost's transmissions take thousands of recipients; 2,000 keeps a call's body
    # (each recipient's whole email, on the whole-email path) to a few megabytes, well
    # under its 20 MB limit on a transmission's content.
    merge_batch_size = 2000
    # `{{{x}}}`: inserted as it is in the HTML (our values come escaped), and in the
    # subject and text, where SparkPost never escapes.
    merge_fields = MergeFields.same(MergeField("{{{", "}}}"))

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        return SparkPostPayload(message, defaults, self)

    @staticmethod
    def throttled(error: Exception) -> bool:
        """HTTP 420: the account's hourly or daily sending limit; SparkPost sent none of
        the call, so it is waited out as a 429 is (429: too many requests)."""
        return getattr(error, "status_code", None) == 420

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """SparkPost answers 422 for a whole transmission when a recipient's address is
        invalid, naming it; sending.py then halves the call."""
        return getattr(error, "status_code", None) == 422 and "recipient" in str(error).lower()

    def parse_recipient_status(self, response: Any, payload: Any, message: Any) -> dict[str, Any]:
        """anymail's reading of the answer ("queued" for all, or "rejected" for all),
        except for a transmission taken with some recipients rejected, which anymail
        reports as "unknown" and we as `RecipientsUncertain`."""
        statuses: dict[str, Any] = super().parse_recipient_status(response, payload, message)
        results = response.json()["results"]
        if results["total_rejected_recipients"] and results["total_accepted_recipients"]:
            raise RecipientsUncertain(
                f"SparkPost took {results['total_accepted_recipients']} of the transmission's "
                f"{len(payload.recipients)} recipients and rejected {results['total_rejected_recipients']} "
                f"without naming them ({json.dumps(results.get('rcpt_to_errors', []))}): "
                f"transmission {results['id']}",
                email_message=message,
                payload=payload,
                backend=self,
            )
        return statuses
