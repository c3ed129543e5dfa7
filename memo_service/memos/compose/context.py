"""What a template sees: the developer's values (developer_context), as a send keeps
them (stored_values), and the memo's, in the text's language (memo_context)."""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from django.utils import formats, timezone, translation
from django.utils.translation import gettext, ngettext
from django_countries import countries

from memo_service.developers.models import Developer
from memo_service.memos.audience import TrafficFact
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE
from memo_service.memos.compose.substitution import DEVELOPER_KEYS, EARLIER_KEYS
from memo_service.memos.models import Memo

# The variables a template may use, shown beside the fields in the admin.
TEMPLATE_VARIABLES = {
    "developer.name": "the developer's name",
    "developer.organization": "their organization",
    "developer.email": "their email address",
    "developer.external_id": "their account id on the platform",
    "developer.country": "ISO country code, e.g. CN",
    "developer.country_name": "country name, e.g. China",
    "developer.language": "language code, e.g. zh-hans",
    "developer.traffic_countries": "with an audience by traffic: the countries whose traffic put them in, e.g. CN, HK",
    "developer.traffic_summary": "that traffic in their language, e.g. China (CN): 3 days, 2027-05-01 to 2027-05-20",
    "memo.title": "the memo's title",
    "memo.effective_date_text": "effective date as the text's language writes it, e.g. July 9, 2027",
    "memo.ack_deadline_text": "acknowledgement deadline's date, the same way",
    "memo.effective_date": "effective date (a date: memo.effective_date.strftime('%Y-%m-%d'))",
    "memo.ack_deadline": "acknowledgement deadline (a datetime, UTC)",
    "ack_url": "the developer's own acknowledgement link (the layout adds it too)",
}

SAMPLE_DEVELOPER = {
    "name": "Ada Lovelace",
    "organization": "Analytical Engines Ltd",
    "email": "ada@example.com",
    "external_id": "sample-1",
    "country": "CN",
    "country_name": "China",
    "language": "en",
    "traffic_countries": "CN",
    "traffic_summary": "China (CN): 3 days, 2027-05-01 to 2027-05-20",
}


@functools.lru_cache(maxsize=1024)
def country_name(code: str, language: str) -> str:
    """The country's name in the developer's language (django-countries' translations)."""
    with translation.override(language):
        return str(countries.name(code))


@dataclass(slots=True)
class Recipient:
    """What a send reads of a developer (developer_context's fields and the org contact)."""

    pk: int
    name: str
    organization: str
    email: str
    external_id: str
    country: str
    language: str
    org_contact_email: str


# A Developer's columns a Recipient holds, after its id, in order: a read of many
# developers reads these as rows (values_list), not as model instances.
RECIPIENT_FIELDS = [f.name for f in fields(Recipient)][1:]


def developer_context(developer: Developer | Recipient, traffic: Sequence[TrafficFact] = ()) -> dict[str, Any]:
    """What a template sees of a developer: plain values, a copy, nothing to call; with
    an audience by traffic, the traffic that put them in (`traffic`, as the audience's
    snapshot keeps it)."""
    # A Developer's country is a Country object (each access makes one); a send task's
    # rows (Recipient) carry the code.
    country = developer.country
    code = country if isinstance(country, str) else country.code
    return {
        "name": developer.name,
        "organization": developer.organization,
        "email": developer.email,
        "external_id": developer.external_id,
        "country": code,
        "country_name": country_name(code, developer.language),
        "language": developer.language,
        "traffic_countries": ", ".join(f.country for f in traffic),
        "traffic_summary": traffic_summary(traffic, developer.language) if traffic else "",
    }


def traffic_summary(traffic: Sequence[TrafficFact], language: str) -> str:
    """ "China (CN): 3 days, 2027-05-01 to 2027-05-20; Hong Kong (HK): 2027-05-03", in
    the developer's language (its words from the gettext catalogs)."""
    with translation.override(language):
        return "; ".join(
            gettext("%(country)s (%(code)s): %(day)s")
            % {"country": countries.name(f.country), "code": f.country, "day": f.first}
            if f.days == 1
            else ngettext(
                "%(country)s (%(code)s): %(days)d day, %(first)s to %(last)s",
                "%(country)s (%(code)s): %(days)d days, %(first)s to %(last)s",
                f.days,
            )
            % {
                "country": countries.name(f.country),
                "code": f.country,
                "days": f.days,
                "first": f.first,
                "last": f.last,
            }
            for f in traffic
        )


def stored_values(values: dict[str, Any]) -> tuple[Any, ...]:
    """A developer's values (developer_context) as Delivery.rendered_with keeps them (a
    JSON array): in DEVELOPER_KEYS' order, without the keys, which a send writing a
    thousand rows a call would otherwise store in every one. Taken by one itemgetter."""
    return _STORED(values)


_STORED = operator.itemgetter(*DEVELOPER_KEYS)


def values_from_stored(stored: Any) -> dict[str, Any] | None:
    """The developer's values from Delivery.rendered_with, or None when it holds none
    (not kept, or erased). It holds DEVELOPER_KEYS' values in order (a list as read back,
    or the tuple stored_values makes), or only the first EARLIER_KEYS of them (no
    traffic's), or a dict of values by key; a key it lacks is empty."""
    if isinstance(stored, (list, tuple)) and len(stored) in (EARLIER_KEYS, len(DEVELOPER_KEYS)):
        stored = dict(zip(DEVELOPER_KEYS, stored, strict=False))  # EARLIER_KEYS: the traffic's are missing
    if isinstance(stored, dict) and stored:
        return {**dict.fromkeys(DEVELOPER_KEYS, ""), **stored}  # a key it lacks: empty
    return None


def developer_in_language(developer: dict[str, Any], language: str) -> dict[str, Any]:
    """The developer's values as a text in `language` prints them: the country's name in
    the text's language, not the developer's (an English fallback text says "Brazil" to
    a French-speaking developer; an English preview of a Chinese-speaking one, "China")."""
    return {**developer, "country_name": country_name(developer["country"], language)}


def date_in_language(value: dt.date | None, language: str) -> str:
    """A date as a text in `language` writes it ("9 July 2027", "2027年7月9日"), from
    Django's locale formats; strftime's month names are always English."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        value = timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    with translation.override(language):
        return formats.date_format(value, "DATE_FORMAT")


def memo_context(
    memo: Memo, developer: dict[str, Any], ack_url: str, language: str = FALLBACK_LANGUAGE
) -> dict[str, Any]:
    return {
        "developer": developer,
        "memo": {
            "title": memo.title,
            "effective_date": memo.effective_date,
            "ack_deadline": memo.ack_deadline,
            "effective_date_text": date_in_language(memo.effective_date, language),
            "ack_deadline_text": date_in_language(memo.ack_deadline, language),
        },
        "ack_url": ack_url,
    }
