import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_countries.fields import CountryField

from memo_service.developers.models import Developer, Region

if TYPE_CHECKING:
    from memo_service.developers.models import ManyCountries, OneCountry


def default_reminder_days() -> list[int]:
    return [7, 1]


class MemoQuerySet(models.QuerySet["Memo"]):
    def by_ref(self, ref: str) -> "Memo":
        """A memo by id or slug, as commands and the API take it; raises DoesNotExist."""
        lookup = {"pk": int(ref)} if ref.isascii() and ref.isdigit() else {"slug": ref}
        return self.get(**lookup)


class Memo(models.Model):
    objects = MemoQuerySet.as_manager()

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        AWAITING_APPROVAL = "awaiting_approval", "awaiting approval"
        APPROVED = "approved", "approved"
        SCHEDULED = "scheduled", "scheduled"
        SENDING = "sending", "sending"
        PAUSED = "paused", "paused"
        SENT = "sent", "sent"
        CANCELLED = "cancelled", "cancelled"

    title = models.CharField(max_length=200, help_text="Internal name, shown to admins.")
    slug = models.SlugField(max_length=100, unique=True)
    # The English (fallback) version; other languages are MemoTranslation rows.
    subject = models.TextField(help_text="Jinja2 template, one line.")
    html_body = models.TextField(help_text="Jinja2 template, HTML (autoescaped).")
    text_body = models.TextField(help_text="Jinja2 template, plain text.")
    effective_date = models.DateField(null=True, blank=True)
    ack_deadline = models.DateTimeField(null=True, blank=True, verbose_name="acknowledgement deadline")

    include_countries: "ManyCountries" = CountryField(multiple=True, blank=True)
    include_regions = models.ManyToManyField(Region, blank=True)
    exclude_countries: "ManyCountries" = CountryField(multiple=True, blank=True)
    active_only = models.BooleanField(default=True, help_text="Only developers whose account is active.")
    active_since = models.DateField(
        null=True, blank=True, help_text="Only developers active on the platform since this day."
    )

    class Basis(models.TextChoices):
        ACCOUNT = "account", "the account's country"
        TRAFFIC = "traffic", "where its API traffic came from"
        EITHER = "either", "either"

    audience_basis = models.CharField(
        max_length=10,
        choices=Basis.choices,
        default=Basis.ACCOUNT,
        help_text="Who is in: by the account's country, by the countries its API traffic came from, or either.",
    )
    traffic_countries: "ManyCountries" = CountryField(multiple=True, blank=True)
    traffic_regions = models.ManyToManyField(Region, blank=True, related_name="+")
    traffic_days = models.PositiveSmallIntegerField(
        default=30, help_text="Traffic of this many days, up to the day of approval, counts."
    )
    traffic_min_requests = models.PositiveIntegerField(
        default=1, help_text="In by traffic: at least this many requests from those countries within the window."
    )
    attribute_filters = models.JSONField(
        default=dict,
        blank=True,
        help_text='Only developers whose attributes have these values, e.g. {"plan": "pro"}.',
    )
    reminder_days = models.JSONField(
        default=default_reminder_days,
        blank=True,
        help_text="Days before the deadline to remind those who have not answered, e.g. [7, 1].",
    )
    # Optional: blank uses the built-in reminder around the memo's own text.
    reminder_subject = models.TextField(
        blank=True, help_text="Jinja2 template; blank: “Reminder: ” + the memo's subject."
    )
    reminder_html = models.TextField(blank=True, help_text="Jinja2 template; blank: a short reminder, then the memo.")
    reminder_text = models.TextField(blank=True, help_text="Jinja2 template; blank: a short reminder, then the memo.")
    deadline_notified_at = models.DateTimeField(null=True, blank=True, editable=False)
    reminders_sent = models.PositiveSmallIntegerField(default=0, editable=False)
    # The last reminder whose deliveries were all created; behind reminders_sent after a crash.
    reminders_dispatched = models.PositiveSmallIntegerField(default=0, editable=False)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    # Whoever asked for approval or edited since: none of them may approve it.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    last_edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The audience rules as approved (the countries of each region at that moment too).
    approved_rules = models.JSONField(default=dict, blank=True, editable=False)
    scheduled_at = models.DateTimeField(null=True, blank=True, editable=False)
    send_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Why it is in its status: a pause's reason, or why a scheduled send did not start.
    status_reason = models.CharField(max_length=300, blank=True, editable=False)
    # Set once every Delivery row exists; until then a rerun of send_memo resumes paging.
    dispatched_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The dispatch's check of a large audience before its first email: how far it is.
    audience_checked = models.PositiveIntegerField(default=0, editable=False)
    audience_to_check = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("approve_memo", "Can approve memos"), ("send_memo", "Can send and schedule memos")]

    def __str__(self) -> str:
        return self.title

    @property
    def is_editable(self) -> bool:
        """Until it starts sending; editing an approved memo returns it to draft."""
        return self.status in MEMO_EDITABLE


# The sets of memo statuses the code asks about, each named once (memo_status.py writes
# the status itself).
_M = Memo.Status
# Its content may still change; an edit to an approved or scheduled memo voids the approval.
MEMO_EDITABLE = (_M.DRAFT, _M.AWAITING_APPROVAL, _M.APPROVED, _M.SCHEDULED)
MEMO_STARTABLE = (_M.APPROVED, _M.SCHEDULED)  # a send may start
MEMO_STARTED = (_M.SENDING, _M.PAUSED)  # a send started and not finished
MEMO_OUT = (_M.SENDING, _M.SENT)  # its emails (and reminders) may go out
MEMO_SHOWN = (_M.SENDING, _M.PAUSED, _M.SENT)  # its page and notices are shown to developers
MEMO_CANCELLABLE = MEMO_EDITABLE + MEMO_STARTED
MEMO_FINISHED = (_M.SENT, _M.CANCELLED)


class AudienceSnapshot(models.Model):
    """Who the audience held when the memo was approved, to show what changed by send time."""

    memo = models.ForeignKey(Memo, on_delete=models.CASCADE, related_name="+")
    developer_id = models.BigIntegerField()
    country = models.CharField(max_length=2)
    # Why the developer was in, as the rules said at approval (the traffic's evidence too).
    reason = models.CharField(max_length=300, blank=True)
    # With an audience by traffic: [country, days, first day, last day, requests, geo database]
    # per traffic country (audience.TrafficFact), for the developer's page in their language.
    traffic = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "developer_id"], name="one_snapshot_row")]


class MemoTranslation(models.Model):
    memo = models.ForeignKey(Memo, on_delete=models.CASCADE, related_name="translations")
    language = models.CharField(max_length=10, choices=settings.LANGUAGES)
    subject = models.TextField()
    html_body = models.TextField()
    text_body = models.TextField()
    reminder_subject = models.TextField(blank=True)
    reminder_html = models.TextField(blank=True)
    reminder_text = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "language"], name="one_translation_per_language")]

    def __str__(self) -> str:
        return f"{self.memo} [{self.language}]"


class Delivery(models.Model):
    """One email of one memo to one developer, and what became of it."""

    class Kind(models.TextChoices):
        INITIAL = "initial", "initial"
        REMINDER = "reminder", "reminder"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        DELIVERED = "delivered", "delivered"
        BOUNCED = "bounced", "bounced"
        COMPLAINED = "complained", "complained"
        FAILED = "failed", "failed"
        OUTCOME_UNKNOWN = "outcome_unknown", "outcome unknown"
        SKIPPED = "skipped", "skipped"  # a reminder not sent: the developer answered first
        CANCELLED = "cancelled", "cancelled"  # not sent: the memo's send was cancelled

    # No index of its own: the (memo, status) index and the unique constraint start with
    # it. A send writes every row twice (claim, record), and each index costs each write.
    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="deliveries", db_index=False)
    developer = models.ForeignKey(Developer, on_delete=models.PROTECT, related_name="deliveries")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.INITIAL)
    # 0 for the initial email; n for the memo's n-th reminder.
    sequence = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    language = models.CharField(max_length=10, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="The developer's country when the memo was sent.")
    reason = models.CharField(max_length=300, blank=True, help_text="Why this developer is in the cohort.")
    # Indexed in Meta: db_index would add PostgreSQL a second, LIKE-ready index nothing uses.
    provider_message_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # After a transient provider error: not to be tried again before this time.
    not_before = models.DateTimeField(null=True, blank=True)
    # Why it is in its status: the error of a send to be retried, a failure, a skip, a
    # cancellation, an outcome nobody can know; empty once the provider took it.
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # What the email said, kept so the developer's page shows exactly that text: the
    # developer's values the templates were rendered with (a sent memo's templates never
    # change), and the SHA-256 of the email as sent (subject, text and HTML), written
    # with the send. None and "" for an email whose text nobody kept (the provider
    # reported taking it after its worker died: reconcile.py). Erasure blanks the values;
    # the hash, in the evidence chain too, stays. On the row, not a table of its own: a
    # row of its own per email cost PostgreSQL 6-8 ms more per call of 1,000.
    rendered_with = models.JSONField(null=True, blank=True, editable=False)
    text_hash = models.CharField(max_length=64, blank=True, default="", db_default="", editable=False)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["memo", "developer", "kind", "sequence"], name="one_delivery_per_memo_developer_kind"
            )
        ]
        indexes = [
            models.Index(fields=["memo", "status"]),
            models.Index(fields=["provider_message_id"], name="memos_delivery_message_id"),  # tracking events
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"


# The sets of delivery statuses the code asks about, each named once (delivery_status.py
# writes the status itself).
_D = Delivery.Status
DELIVERY_PENDING = (_D.QUEUED, _D.SENDING)  # not yet settled with the provider
DELIVERY_HANDED_OVER = (_D.SENT, _D.DELIVERED, _D.BOUNCED, _D.COMPLAINED)  # the provider took it
DELIVERY_ARRIVED = (_D.DELIVERED, _D.COMPLAINED)  # in the developer's mailbox
DELIVERY_GIVEN_UP = (_D.FAILED, _D.OUTCOME_UNKNOWN)  # a send that ended without a handover we know of
# How far along a delivery is; a tracking event only ever moves it to a higher rank, so
# a late or replayed "delivered" cannot undo a "bounced".
DELIVERY_RANK = {
    _D.QUEUED: 0,
    _D.SENDING: 1,
    _D.OUTCOME_UNKNOWN: 1,
    _D.SENT: 2,
    _D.FAILED: 3,
    _D.DELIVERED: 4,
    _D.BOUNCED: 5,
    _D.COMPLAINED: 6,
}


class DeliveryEvent(models.Model):
    """A tracking event the provider posted to our webhook, kept as it came."""

    provider = models.CharField(max_length=30)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=30)
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    message_id = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="one_event_per_provider_id")]


class Answer(models.Model):
    """Evidence that a developer pressed the button on the memo's page."""

    class Response(models.TextChoices):
        ACKNOWLEDGED = "acknowledged", "acknowledged"
        DISPUTES_REGION = "disputes_region", "disputes region"
        # "This traffic is not mine, or it comes through a proxy or a cloud region": an
        # audience by traffic put them in.
        DISPUTES_TRAFFIC = "disputes_traffic", "disputes traffic"
        NEEDS_HELP = "needs_help", "needs help"

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="answers")
    developer = models.ForeignKey(Developer, on_delete=models.PROTECT, related_name="answers")

    class Channel(models.TextChoices):
        EMAIL_LINK = "email_link", "email link"  # the page the emailed link opens
        CONSOLE = "console", "console"  # the platform's console, relayed through the sync API

    response = models.CharField(max_length=20, choices=Response.choices, default=Response.ACKNOWLEDGED)
    comment = models.TextField(blank=True)
    country_claimed: "OneCountry" = CountryField(
        blank=True, help_text="With a dispute: where the developer says they are."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    content_hash = models.CharField(max_length=64)
    # The hash of the email whose text the page showed (Delivery.text_hash).
    text_hash = models.CharField(max_length=64, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    seconds_since_delivery = models.FloatField(null=True, blank=True)
    suspected_automation = models.BooleanField(default=False)
    automation_reasons = models.JSONField(default=list, blank=True)
    channel = models.CharField(max_length=12, choices=Channel.choices, default=Channel.EMAIL_LINK)
    # With the console channel: the API client that relayed the answer. PROTECT: a client
    # named in evidence is deactivated, never deleted.
    api_client = models.ForeignKey("api.ApiClient", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        # Answers are appended, never changed: a dispute later followed by an
        # acknowledgement leaves both. Each kind of answer is recorded once.
        constraints = [models.UniqueConstraint(fields=["memo", "developer", "response"], name="one_answer_per_kind")]


class DisputeResolution(models.Model):
    """An admin's decision on a "my region is wrong" answer."""

    class Outcome(models.TextChoices):
        CORRECTED = "corrected", "region corrected"
        CONFIRMED = "confirmed", "confirmed as recorded"
        EXEMPTED = "exempted", "exempted from the memo"

    answer = models.OneToOneField(Answer, on_delete=models.PROTECT, related_name="resolution")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    new_country: "OneCountry" = CountryField(blank=True)
    # True when, with the corrected country, the developer is outside the memo's audience.
    exempt = models.BooleanField(default=False)
    note = models.TextField(blank=True, help_text="Shown to the developer.")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(auto_now_add=True)


class AuditEvent(models.Model):
    """Who changed what, for changes made by people rather than the flow."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=50)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=50)
    detail = models.JSONField(default=dict)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]


class EvidenceRecord(models.Model):
    """The memo's append-only evidence chain: its approval (the approved text, rules and
    approvers: the chain's first record), each answer, provider event, handover to the
    provider (a record per call, listing its emails) and later change of an email's
    status, with a hash that covers the record and the one before it.

    The writer inserts a record pending (seq empty) with its tag (evidence/tags.py); one
    sequencer per memo (evidence.evidence_seal) later gives the pending records whose
    tag holds their place in the chain, and marks the others refused, never chained."""

    class Kind(models.TextChoices):
        APPROVAL = "approval", "approval of the memo's text"
        ANSWER = "answer", "answer"
        EVENT = "event", "delivery event"
        HANDOVER = "handover", "handover to the provider, one call"
        STATUS = "status", "delivery status change"

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="evidence")
    seq = models.PositiveIntegerField(null=True, blank=True)  # null: pending, not chained yet
    kind = models.CharField(max_length=10, choices=Kind.choices)
    object_id = models.BigIntegerField()
    payload = models.JSONField(default=dict)
    # What the record weighs in a sequencer's step: the emails a handover lists, any
    # other record 1. Kept beside the payload so that a step can be measured out
    # without reading a thousand emails' payloads to use one.
    size = models.PositiveIntegerField(default=1, db_default=1)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)
    # Set by the writer, and covered by its tag: not the database's clock.
    created_at = models.DateTimeField(default=timezone.now)
    tag = models.CharField(max_length=80, blank=True, default="")  # evidence/tags.py
    # A pending record whose tag did not hold: the sequencer will not chain it, and
    # verification names it as not written by memo-service.
    refused = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "seq"], name="one_record_per_seq")]
        indexes = [
            # The sequencer's queue: a memo's pending records in the order they came.
            models.Index(fields=["memo", "id"], condition=models.Q(seq__isnull=True), name="memos_evidence_pending"),
        ]


class EvidenceCheckpoint(models.Model):
    """A signed statement of a memo's chain after a sealing step (CloudTrail's digest
    files, Certificate Transparency's signed tree heads): how many records, the head's
    hash, the previous checkpoint's body hash. Signed with EVIDENCE_SIGNING_KEY, which is
    not in the database: whoever can write the database cannot make a new one."""

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="checkpoints")
    seq = models.PositiveIntegerField()  # the last record it covers
    head_hash = models.CharField(max_length=64)
    count = models.PositiveIntegerField()
    prev = models.CharField(max_length=64)  # SHA-256 of the previous checkpoint's body
    at = models.DateTimeField()
    key_id = models.CharField(max_length=64)  # SHA-256 of the public key
    signature = models.CharField(max_length=100)  # base64 Ed25519 over the body

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "seq"], name="one_checkpoint_per_seq")]


def webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """A URL of the platform's that is told about answers and passed deadlines."""

    class Event(models.TextChoices):
        ACKNOWLEDGED = "memo.acknowledged", "memo.acknowledged"
        DISPUTED = "memo.disputed", "memo.disputed"
        DEADLINE_PASSED = "memo.deadline_passed", "memo.deadline_passed"
        CHECKPOINT = "evidence.checkpoint", "evidence.checkpoint"

    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=100,
        default=webhook_secret,
        help_text='Signs each request: X-Memo-Signature: t=<unix time>,v1=<HMAC-SHA256 of "t.body">.',
    )
    events = models.JSONField(
        default=list, help_text="Any of memo.acknowledged, memo.disputed, memo.deadline_passed, evidence.checkpoint."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class WebhookMessage(models.Model):
    """One event for one endpoint, retried until it is answered with 2xx or gives up."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)


class WebhookAttempt(models.Model):
    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)


class Dispute(Answer):
    """The "my region is wrong" and "this traffic is not mine" answers, as the admin's queue."""

    class Meta:
        proxy = True
        verbose_name = "dispute"


class ProviderThrottle(models.Model):
    """The send rate limiter's shared state when the broker is not Redis (see throttle.py)."""

    provider = models.CharField(max_length=100, primary_key=True)
    next_slot = models.FloatField(default=0.0)  # unix time of the next free send slot
    blocked_until = models.FloatField(default=0.0)  # unix time a Retry-After asked us to wait for


class SendLease(models.Model):
    """A send task's claim on its deliveries: who holds them and until when.

    A worker process takes one when a send task starts and renews it while the task runs
    (memos/send/leases.py); a lease that was not renewed in time belongs to a process that is
    gone, and beat's sweeper hands its deliveries to reconciliation (memos/send/reconcile.py).
    """

    holder = models.CharField(max_length=200, help_text="host:pid of the worker process holding it.")
    memo = models.ForeignKey(Memo, on_delete=models.CASCADE, related_name="+")
    # The task's delivery ids: one row per task, not a write per delivery.
    delivery_ids = models.JSONField(default=list)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    # The dead holder's last sign of life, kept when reconciliation takes the lease over.
    last_renewed_at = models.DateTimeField()
    # Why it is being reconciled (blank while its first holder works).
    note = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.holder})"
