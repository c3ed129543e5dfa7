"""anymail's Mailgun backend, sending many recipients in one API call.

With EMAIL_BACKEND=memo_service.backends.mailgun.EmailBackend a send task hands its
emails to Mailgun in calls of up to `merge_batch_size` recipients (anymail's batch
sending), our delivery id in each recipient's metadata so tracking events still find
their delivery. A memo rendered by substitution (memos/substitution.py) travels once,
with Mailgun's `%recipient.…%` merge fields where the values go and only each
recipient's values in recipient-variables; any other memo travels as each recipient's
own rendered subject, text and HTML. One call instead of one per email.
"""

from __future__ import annotations

from anymail.backends import mailgun


class EmailBackend(mailgun.EmailBackend):
    # Mailgun's limit on recipients in one batch call; a send task carries at most
    # dispatch.BATCH_SIZE deliveries, so that is the usual size of a call.
    merge_batch_size = 1000
    # How Mailgun's batch sending marks a per-recipient value in subject and bodies.
    merge_field_format = "%recipient.{}%"

    @staticmethod
    def refuses_a_recipient(error: Exception) -> bool:
        """Mailgun refuses a whole batch call (HTTP 400) for one address it will not
        take, naming the 'to' parameter; sending.py then halves the call."""
        return getattr(error, "status_code", None) == 400 and "'to' parameter" in str(error)
