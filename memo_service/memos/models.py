from django.conf import settings
from django.db import models
from django_countries.fields import CountryField

from memo_service.developers.models import Developer, Region


class MemoQuerySet(models.QuerySet["Memo"]):
    def by_ref(self, ref: str) -> "Memo":
        """A memo by id or slug, as commands and the API take it; raises DoesNotExist."""
        lookup = {"pk": int(ref)} if ref.isascii() and ref.isdigit() else {"slug": ref}
        return self.get(**lookup)


class Memo(models.Model):
    objects = MemoQuerySet.as_manager()

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        APPROVED = "approved", "approved"
        SCHEDULED = "scheduled", "scheduled"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        CANCELLED = "cancelled", "cancelled"

    title = models.CharField(max_length=200, help_text="Internal name, shown to admins.")
    slug = models.SlugField(max_length=100, unique=True)
    # The English (fallback) version; other languages are MemoTranslation rows.
    subject = models.TextField(help_text="Jinja2 template, one line.")
    html_body = models.TextField(help_text="Jinja2 template, HTML (autoescaped).")
    text_body = models.TextField(help_text="Jinja2 template, plain text.")
    effective_date = models.DateField(null=True, blank=True)
    ack_deadline = models.DateTimeField(
        null=True, blank=True, verbose_name="acknowledgement deadline"
    )

    include_countries = CountryField(multiple=True, blank=True)
    include_regions = models.ManyToManyField(Region, blank=True)
    exclude_countries = CountryField(multiple=True, blank=True)
    active_only = models.BooleanField(
        default=True, help_text="Only developers whose account is active."
    )

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    send_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set once every Delivery row exists; until then a rerun of send_memo resumes paging.
    dispatched_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.DRAFT


class MemoTranslation(models.Model):
    memo = models.ForeignKey(Memo, on_delete=models.CASCADE, related_name="translations")
    language = models.CharField(max_length=10, choices=settings.LANGUAGES)
    subject = models.TextField()
    html_body = models.TextField()
    text_body = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["memo", "language"], name="one_translation_per_language")
        ]

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

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="deliveries")
    developer = models.ForeignKey(Developer, on_delete=models.PROTECT, related_name="deliveries")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.INITIAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    language = models.CharField(max_length=10, blank=True)
    reason = models.CharField(
        max_length=200, blank=True, help_text="Why this developer is in the cohort."
    )
    provider_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["memo", "developer", "kind"], name="one_delivery_per_memo_developer_kind"
            )
        ]
        indexes = [models.Index(fields=["memo", "status"])]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"


class DeliveryEvent(models.Model):
    """A tracking event the provider posted to our webhook, kept as it came."""

    provider = models.CharField(max_length=30)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=30)
    delivery = models.ForeignKey(
        Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    message_id = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="one_event_per_provider_id")
        ]


class Acknowledgement(models.Model):
    """Evidence that a developer pressed the button on the memo's page."""

    class Response(models.TextChoices):
        ACKNOWLEDGED = "acknowledged", "acknowledged"
        DISPUTES_REGION = "disputes_region", "disputes region"
        NEEDS_HELP = "needs_help", "needs help"

    memo = models.ForeignKey(Memo, on_delete=models.PROTECT, related_name="acknowledgements")
    developer = models.ForeignKey(
        Developer, on_delete=models.PROTECT, related_name="acknowledgements"
    )
    response = models.CharField(
        max_length=20, choices=Response.choices, default=Response.ACKNOWLEDGED
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    content_hash = models.CharField(max_length=64)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    seconds_since_delivery = models.FloatField(null=True, blank=True)
    suspected_automation = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["memo", "developer"], name="one_ack_per_memo_developer")
        ]
