"""The developer's answers to a memo, and the admin's decisions on their disputes."""

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django_countries.fields import CountryField

from memo_service.developers.models import Developer
from memo_service.memos.models.memo import Memo

if TYPE_CHECKING:
    from memo_service.developers.models import OneCountry


class Answer(models.Model):
    """Evidence that a developer pressed the button on the memo's page."""

    class Response(models.TextChoices):
        ACKNOWLEDGED = "acknowledged", "acknowledged"
        DISPUTES_REGION = "disputes_region", "disputes region"
        # "This traffic is not mine, or it comes through a proxy or a cloud region": an
        # audience by traffic put them in.
        DISPUTES_TRAFFIC = "disputes_traffic", "disputes traffic"
        NEEDS_HELP = "needs_help", "needs help"
        # "I object", with a required reason: recorded, and a case for a person to read.
        OBJECTS = "objects", "objects"

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
    # The SHA-256 of the statement of assent the page showed beside the button, and of the
    # page itself (its template and the language's catalog): answer/statement.py.
    statement_hash = models.CharField(max_length=64, blank=True)
    page_hash = models.CharField(max_length=64, blank=True)
    # The statement itself, as hashed: a default one is built from code, country names and
    # date formats that an upgrade may change. Blank for an answer without one.
    statement = models.TextField(blank=True)
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
    # The developer's country before a correction: the original stays visible beside it.
    previous_country: "OneCountry" = CountryField(blank=True)
    # True when, with the corrected country, the developer is outside the memo's audience.
    exempt = models.BooleanField(default=False)
    note = models.TextField(blank=True, help_text="The rationale, shown to the developer.")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    resolved_at = models.DateTimeField(auto_now_add=True)


class Dispute(Answer):
    """The "my region is wrong" and "this traffic is not mine" answers, as the admin's queue."""

    class Meta:
        proxy = True
        verbose_name = "dispute"
