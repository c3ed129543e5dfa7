"""anymail's Mailgun backend, sending many recipients in one API call.

With EMAIL_BACKEND=memo_service.backends.mailgun.EmailBackend a send task hands its
emails to Mailgun in calls of up to `merge_batch_size` recipients (anymail's batch
sending), our delivery id in each recipient's metadata so tracking events still find
their delivery. A memo rendered by substitution (memos/substitution.py) travels once,
with Mailgun's `%recipient.…%` merge fields where the values go and only each
recipient's values in recipient-variables; any other memo travels as each recipient's
own rendered subject, text and HTML. One call instead of one per email.

anymail re-parses every address and copies every merge value of a message; at 1,000
recipients that was a fifth of a send task's time. Recipients given as anymail's own
`EmailAddress` objects (sending.recipient_address makes them) are taken as they are,
and merge data whose values are all plain strings is taken without a copy per value.
Anything else goes through anymail's own conversion, so the request is the same
either way (tests/test_sending.py).
"""

from __future__ import annotations

from typing import Any

from anymail.backends import mailgun
from anymail.utils import EmailAddress, force_non_lazy_dict, parse_address_list


def _addresses(value: Any) -> list[EmailAddress]:
    """The `to` list (the only field it converts)."""
    if all(isinstance(item, EmailAddress) for item in value):
        return list(value)
    return parse_address_list(value, field="to")


def _plain_dicts(value: dict[str, Any]) -> dict[str, Any]:
    if all(type(values) is dict and all(type(v) is str for v in values.values()) for values in value.values()):
        return value
    return force_non_lazy_dict(value)


def _converted(attrs: tuple, replacements: dict[str, Any]) -> tuple:
    return tuple((attr, combiner, replacements.get(attr, converter)) for attr, combiner, converter in attrs)


class MailgunPayload(mailgun.MailgunPayload):
    base_message_attrs = _converted(mailgun.MailgunPayload.base_message_attrs, {"to": _addresses})
    anymail_message_attrs = _converted(
        mailgun.MailgunPayload.anymail_message_attrs, {"merge_data": _plain_dicts, "merge_metadata": _plain_dicts}
    )


class EmailBackend(mailgun.EmailBackend):
    # Mailgun's limit on recipients in one batch call; a send task carries at most
    # dispatch.BATCH_SIZE deliveries, so that is the usual size of a call.
    merge_batch_size = 1000
    # How Mailgun's batch sending marks a per-recipient value in subject and bodies.
    merge_field_format = "%recipient.{}%"

    def build_message_payload(self, message: Any, defaults: Any) -> Any:
        return MailgunPayload(message, defaults, self)

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """Mailgun refuses a whole batch call (HTTP 400) for one address it will not
        take, naming the 'to' parameter; sending.py then halves the call."""
        return getattr(error, "status_code", None) == 400 and "'to' parameter" in str(error)
