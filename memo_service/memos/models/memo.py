"""The memo itself, from draft to sent: its text and translations, its audience rules,
its status, and the audience as it stood at approval."""

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django_countries.fields import CountryField

from memo_service.developers.models import Region

if TYPE_CHECKING:
    from memo_service.developers.models import ManyCountries


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
        # Sent, then taken back: its page says so and takes no new answers (withdrawal.py).
        WITHDRAWN = "withdrawn", "withdrawn"

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

    # What pressing Acknowledge means, shown beside the button and hashed into each
    # answer; blank: the default statement (answer/statement.py), in the page's language.
    statement = models.TextField(
        blank=True,
        help_text="What the developer agrees to by pressing Acknowledge, e.g. “I have read this notice and "
        "understand that API traffic from … will be blocked from …”. Blank: a default statement.",
    )
    email_receipt = models.BooleanField(
        default=False, help_text="Email each developer a receipt of their answer (they can always download one)."
    )
    # A correction: the earlier memo this one corrects (correction.py).
    supersedes = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
        help_text="The earlier memo this one corrects.",
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True, editable=False)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    withdrawal_reason = models.TextField(blank=True, editable=False)

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
_Status = Memo.Status
# Its content may still change; an edit to an approved or scheduled memo voids the approval.
MEMO_EDITABLE = (_Status.DRAFT, _Status.AWAITING_APPROVAL, _Status.APPROVED, _Status.SCHEDULED)
MEMO_STARTABLE = (_Status.APPROVED, _Status.SCHEDULED)  # a send may start
MEMO_STARTED = (_Status.SENDING, _Status.PAUSED)  # a send started and not finished
MEMO_MAY_SEND = (_Status.SENDING, _Status.SENT)  # its emails (and reminders) may go out
# its page and notices are shown to developers (a withdrawn memo's page says so, and takes no answers)
MEMO_SHOWN = (_Status.SENDING, _Status.PAUSED, _Status.SENT, _Status.WITHDRAWN)
MEMO_CANCELLABLE = MEMO_EDITABLE + MEMO_STARTED
MEMO_WITHDRAWABLE = (*MEMO_STARTED, _Status.SENT)  # some of its emails may have gone out
MEMO_FINISHED = (_Status.SENT, _Status.CANCELLED, _Status.WITHDRAWN)


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


# A translation's own texts, in the order the form shows them (the admin's form, a
# correction's copy).
TRANSLATION_FIELDS = (
    "language",
    "subject",
    "html_body",
    "text_body",
    "reminder_subject",
    "reminder_html",
    "reminder_text",
    "statement",
)


class MemoTranslation(models.Model):
    memo = models.ForeignKey(Memo, on_delete=models.CASCADE, related_name="translations")
    language = models.CharField(max_length=10, choices=settings.LANGUAGES)
    subject = models.TextField()
    html_body = models.TextField()
    text_body = models.TextField()
    reminder_subject = models.TextField(blank=True)
    reminder_html = models.TextField(blank=True)
    reminder_text = models.TextField(blank=True)
    statement = models.TextField(blank=True, help_text="The statement of assent in this language; blank: the default.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["memo", "language"], name="one_translation_per_language")]

    def __str__(self) -> str:
        return f"{self.memo} [{self.language}]"
