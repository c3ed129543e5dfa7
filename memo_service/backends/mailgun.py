"""anymail's Mailgun backend, sending many recipients in one API call.

With EMAIL_BACKEND=memo_service.backends.mailgun.EmailBackend a send task hands its
emails to Mailgun in calls of up to `merge_batch_size` recipients: each recipient's own
rendered subject, text and HTML travel as Mailgun recipient-variables (anymail's
merge_data), and our delivery id as per-recipient metadata, so tracking events still
find their delivery. One call instead of one per email.
"""

from __future__ import annotations

from anymail.backends import mailgun


class EmailBackend(mailgun.EmailBackend):
    # Mailgun's limit on recipients in one batch call; a send task carries at most
    # dispatch.BATCH_SIZE deliveries, so that is the usual size of a call.
    merge_batch_size = 1000
