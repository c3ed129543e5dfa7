from typing import TYPE_CHECKING

from django.db import models
from django_countries.fields import CountryField

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django_countries.fields import Country, MultipleCountriesDescriptor

    # The django-stubs plugin takes CountryField for a plain CharField (a str); on an
    # instance it is a Country, or with multiple=True a list of them, and takes codes.
    OneCountry = models.CharField[str | Country, Country]
    ManyCountries = models.CharField[str | Iterable[str | Country], MultipleCountriesDescriptor]


class Developer(models.Model):
    """A developer account on the platform, as the platform knows it."""

    class EmailStatus(models.TextChoices):
        OK = "ok", "ok"
        BOUNCED = "bounced", "bounced"
        COMPLAINED = "complained", "complained"

    external_id = models.CharField(max_length=100, unique=True, help_text="The platform's own account id.")
    email = models.EmailField()
    name = models.CharField(max_length=200, blank=True)
    organization = models.CharField(max_length=200, blank=True)
    org_contact_email = models.EmailField(
        blank=True, help_text="The organisation's contact; the last reminder goes to it as well."
    )
    country: "OneCountry" = CountryField(db_index=True)
    # Any language code: those without a translation of a memo get its English text.
    language = models.CharField(max_length=20, default="en")
    is_active = models.BooleanField(default=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    email_status = models.CharField(max_length=12, choices=EmailStatus.choices, default=EmailStatus.OK)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by erase_developer: the personal fields above were replaced by placeholders.
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.country.code})"


class Region(models.Model):
    """A named set of countries, e.g. "Unsupported regions", with where the list came from."""

    name = models.CharField(max_length=100, unique=True)
    countries: "ManyCountries" = CountryField(multiple=True, blank=True)
    source = models.TextField(
        help_text="Where this list of countries comes from (policy, URL, date).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TrafficObservation(models.Model):
    """One day's API requests of one developer from one country, as one feed (`source`)
    reported them: a rollup, never an IP address. The geolocation database that resolved
    the feed's addresses is kept on each row it produced (blank where the feed gave the
    country itself)."""

    developer = models.ForeignKey(Developer, on_delete=models.CASCADE, related_name="+")
    country = models.CharField(max_length=2)
    day = models.DateField()
    requests = models.PositiveBigIntegerField()
    source = models.CharField(max_length=50)
    geo_database = models.CharField(max_length=100, blank=True, help_text="e.g. “iptocc 3.3.170”.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["developer", "country", "day", "source"], name="one_traffic_rollup")
        ]
        # The audience rule reads by country and day, summing each developer's requests.
        indexes = [models.Index(fields=["country", "day", "developer", "requests"], name="traffic_by_country_day")]

    def __str__(self) -> str:
        return f"{self.developer_id} {self.country} {self.day}: {self.requests}"
