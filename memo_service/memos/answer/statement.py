"""What pressing Acknowledge means: the statement of assent the page shows beside the
button, and the hashes an answer keeps of it and of the page.

- The statement is the memo's own (Memo.statement, or its translation's in the page's
  language) when the composer wrote one: it is part of the approved content. Otherwise a
  default built from the memo as approved (its effective date and its audience's
  countries), in the page's language.
- statement_hash: SHA-256 of the statement's UTF-8 bytes, exactly as shown.
- page_hash: SHA-256 of the page's templates (ack/base.html, then ack/memo.html) followed
  by the language's compiled catalog (locale/<locale>/LC_MESSAGES/django.mo; none for
  English), as deployed: `cat base.html memo.html django.mo | sha256sum`.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.template.loader import get_template
from django.utils import formats, translation
from django.utils.translation import gettext, pgettext
from django_countries import countries

from memo_service.memos.models import Memo

PAGE_TEMPLATES = ("ack/base.html", "ack/memo.html")


@dataclass(frozen=True)
class Assent:
    """The statement shown beside the button, and what an answer given there records."""

    text: str
    statement_hash: str
    page_hash: str


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assent_shown(memo: Memo, language: str) -> Assent:
    """The statement on the memo's page in `language`, with its hash and the page's.
    `memo`: as approved (answer/sent_text.sent_memo), its translations loaded."""
    text = statement_text(memo, language)
    return Assent(text=text, statement_hash=sha256_text(text), page_hash=page_hash(language))


def statement_text(memo: Memo, language: str) -> str:
    written = memo.statement
    if language != settings.LANGUAGE_CODE:
        written = next((t.statement for t in memo.translations.all() if t.language == language), "")
    if written.strip():
        return written.strip()
    return default_statement(memo, language)


def default_statement(memo: Memo, language: str) -> str:
    """The statement when none is written, in `language`: “I have read this notice and
    understand that API traffic from <the audience's countries> will be blocked from
    <the effective date>.” (shorter when the memo has no date or no countries)."""
    with translation.override(language):
        places = audience_places(memo)
        day = formats.date_format(memo.effective_date, "DATE_FORMAT") if memo.effective_date else ""
        if places and day:
            return gettext(
                "I have read this notice and understand that API traffic from %(places)s will be blocked from %(day)s."
            ) % {"places": places, "day": day}
        if places:
            return gettext(
                "I have read this notice and understand that API traffic from %(places)s will be blocked."
            ) % {"places": places}
        if day:
            return gettext("I have read this notice and understand that it takes effect on %(day)s.") % {"day": day}
        return gettext("I have read this notice and understand it.")


def audience_places(memo: Memo) -> str:
    """The countries of the memo's audience as approved (its account countries, its
    traffic countries, or both, as its basis says), named in the active language and
    sorted by those names."""
    rules = memo.approved_rules or {}
    codes = set()
    if memo.audience_basis != Memo.Basis.TRAFFIC:
        codes |= set(rules.get("countries") or [])
    if memo.audience_basis != Memo.Basis.ACCOUNT:
        codes |= set(rules.get("traffic_countries") or [])
    names = sorted((str(countries.name(code)) or code for code in codes), key=name_order)
    return pgettext("list separator", ", ").join(names)


def name_order(name: str) -> str:
    """A name's place in a list sorted by name: accents aside (Åland with A), case aside."""
    letters = unicodedata.normalize("NFKD", name).strip().casefold()
    return "".join(c for c in letters if not unicodedata.combining(c))


@functools.cache
def page_hash(language: str) -> str:
    """SHA-256 of the page's templates and the language's compiled catalog, read once a
    process (they change only with a deploy)."""
    digest = hashlib.sha256()
    for name in PAGE_TEMPLATES:
        digest.update(Path(get_template(name).origin.name).read_bytes())  # type: ignore[attr-defined]
    if (catalog := catalog_path(language)) is not None:
        digest.update(catalog.read_bytes())
    return digest.hexdigest()


def catalog_path(language: str) -> Path | None:
    """Our compiled catalog for `language`, or None (English is the source language)."""
    for root in settings.LOCALE_PATHS:
        path = Path(root) / translation.to_locale(language) / "LC_MESSAGES" / "django.mo"
        if path.exists():
            return path
    return None
