"""Settings for the django-post_office comparison (bench/post_office_send.py): the
service's own settings plus post_office, set up the way its README tells a user to.

Everything still comes from the environment, as in memo_service.settings:
    DATABASE_URL                 the bench database (post_office's tables are migrated into it)
    ANYMAIL_MAILGUN_API_URL      the loopback Mailgun (tests.loopback_provider.mailgun_server())
    ANYMAIL_MAILGUN_API_KEY      defaults to the loopback's key (tests.loopback_provider.API_KEY)
    PO_BATCH_SIZE, PO_THREADS_PER_PROCESS   override the two tuning knobs below
Bench only: not part of the service.
"""

from memo_service.settings import *  # noqa: F403
from memo_service.settings import ANYMAIL, INSTALLED_APPS, env

INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]

# Django's own send_mail() goes to post_office's queue too, as its README sets it up;
# the benchmark queues with post_office.mail.send_many() directly.
EMAIL_BACKEND = "post_office.EmailBackend"

ANYMAIL = {"MAILGUN_API_KEY": "key-loopback", **ANYMAIL}  # = tests.loopback_provider.API_KEY

POST_OFFICE = {
    # Where send_queued_mail hands each email: anymail's Mailgun backend, one API call per
    # email (post_office sends every Email row on its own; it has no batch sending).
    "BACKENDS": {"default": "anymail.backends.mailgun.EmailBackend"},
    # Emails send_queued_mail takes from the queue per round (default 100). Each round
    # forks a new pool of `--processes` workers, splits the batch between them and
    # waits for all. 1,000 spends less of the run on forking and per-round queries: of
    # 100 / 1,000 / 2,000 it delivered 2,000 emails fastest here (5.4 / 4.1 / 5.6 s).
    "BATCH_SIZE": env.int("PO_BATCH_SIZE", default=1000),
    # Threads each worker process sends with (post_office's default, 5): the calls are
    # I/O bound, so 2 processes x 5 threads keep 10 requests in flight (10 threads
    # measured the same, 2 slower).
    "THREADS_PER_PROCESS": env.int("PO_THREADS_PER_PROCESS", default=5),
    # A round must finish within this many seconds (default 180); raised so a slow
    # machine does not mark a 1,000-email round as failed.
    "BATCH_DELIVERY_TIMEOUT": 600,
    # post_office's default: one Log row per email sent or failed (delivery records, as
    # the service keeps them too).
    "LOG_LEVEL": 2,
    # Nothing is retried in the benchmark: a failure shows as a missing message.
    "MAX_RETRIES": 0,
}
