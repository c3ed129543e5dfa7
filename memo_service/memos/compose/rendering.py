"""Render a memo for one developer: the admin's sandboxed templates inside our layout."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import operator
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import formats, timezone, translation
from django.utils.translation import gettext, gettext_noop, ngettext
from django_countries import countries
from markupsafe import Markup

from memo_service.developers.models import Developer
from memo_service.memos.audience import TrafficFact
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.substitution import (
    DEVELOPER_KEYS,
    EARLIER_KEYS,
    LAYOUT_NAMES,
    Skeleton,
    placeholder_values,
    substitution_only,
)
from memo_service.memos.compose.template_errors import explain_undefined
from memo_service.memos.compose.trial import trial_run
from memo_service.memos.evidence.approved import approved_or_raise
from memo_service.memos.models import Memo

# What a trial render may use. A real memo renders in well under a millisecond; two
# seconds only trips on a runaway loop. An honest template needs a few MB on top of
# the interpreter; 64 MB more stops a render that builds a huge value in C code.
TRIAL_SECONDS = 2.0
TRIAL_MEMORY_BYTES = 64 * 1024 * 1024
FALLBACK_LANGUAGE = "en"

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

# Previews, test sends and the checks before a send give templates a link of the same
# shape as a developer's own (SITE_URL/ack/<token>/, a token of the same form and
# length), signed for another purpose so that the acknowledgement page refuses it: a
# template cannot tell them from the real send, and nobody can answer with it.
INERT_ACK_SALT = "memo_service.memos.ack.inert"

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

# Our own layout (trusted, from templates/email/), around the admin's body. Its words
# come from Django's gettext catalogs (locale/) through Jinja's i18n extension, rendered
# under the email's language: a new language is a catalog, not code.
layout_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(settings.BASE_DIR) / "templates" / "email"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    extensions=["jinja2.ext.i18n"],
)
layout_env.install_gettext_callables(translation.gettext, translation.ngettext, newstyle=True)  # type: ignore[attr-defined]
layout_env.filters["date"] = lambda value: formats.date_format(value, "DATE_FORMAT")
# The layout's sentences with a value in them, for makemessages (which reads Python for
# them; the plain ones it finds in the templates themselves).
gettext_noop("You have not answered this memo yet. Please read it and acknowledge it by %(date)s.")
gettext_noop("Reminder: %(subject)s")

log = logging.getLogger(__name__)


@functools.cache
def _layout_is_substitution_only() -> bool:
    loader = layout_env.loader
    assert loader is not None  # layout_env is made with a FileSystemLoader, above
    return substitution_only(
        [layout_env.parse(loader.get_source(layout_env, name)[0]) for name in ("layout.html", "layout.txt")],
        LAYOUT_NAMES,
    )


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    skeleton: Skeleton | None = None
    values: tuple[str, ...] = ()


class SubstitutedEmail(RenderedEmail):
    """Rendered by substitution: the skeleton and this recipient's values
    (substitution.py). Subject and bodies are joined on first use: a batch call that
    sends the skeleton with each recipient's values never needs them."""

    skeleton: Skeleton  # always set, by __init__

    escaped: tuple[str, ...]  # the values as the HTML prints them (Skeleton.escape)

    def __init__(self, skeleton: Skeleton, values: tuple[str, ...]) -> None:
        object.__setattr__(self, "skeleton", skeleton)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "escaped", skeleton.escape(values))

    def __getattr__(self, name: str) -> str:  # subject, html and text: only until filled
        if name not in ("subject", "html", "text"):
            raise AttributeError(name)
        filled = dict(zip(("subject", "html", "text"), self.skeleton.fill(self.values, self.escaped), strict=True))
        for field, value in filled.items():
            object.__setattr__(self, field, value)
        return filled[name]


def email_text_hash(email: RenderedEmail) -> str:
    """SHA-256 of an email as the recipient got it: subject, text and HTML (our layout
    included), each ended by a NUL so no two emails share one."""
    if isinstance(email, SubstitutedEmail) and "html" not in vars(email):
        return email.skeleton.text_hash(email.values, email.escaped)  # the same digest, without joining the email
    digest = hashlib.sha256()
    for part in (email.subject, email.text, email.html):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def memo_sources(memo: Memo, language: str, reminder: bool = False) -> tuple[str, dict[str, str]]:
    """The templates for a language, falling back to English; returns the language used.

    For a reminder, each reminder template that is filled in replaces the memo's own;
    blank ones keep the memo's (the layout then adds the reminder's opening lines).
    """
    obj: Any = memo
    if language != FALLBACK_LANGUAGE:
        obj = next((t for t in memo.translations.all() if t.language == language), memo)
    used = language if obj is not memo else FALLBACK_LANGUAGE
    sources = _sources(obj)
    if reminder:
        for field, reminder_field in zip(sandbox.TEMPLATE_FIELDS, sandbox.REMINDER_FIELDS, strict=True):
            if getattr(obj, reminder_field):
                sources[field] = getattr(obj, reminder_field)
    return used, sources


def _sources(obj: Any) -> dict[str, str]:
    return {field: getattr(obj, field) for field in sandbox.TEMPLATE_FIELDS}


def reminder_sources(obj: Any) -> dict[str, str]:
    """The reminder templates an admin filled in, under the field they replace."""
    return {
        reminder_field: getattr(obj, reminder_field)
        for reminder_field in sandbox.REMINDER_FIELDS
        if getattr(obj, reminder_field)
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
    JSON array): in DEVELOPER_KEYS' order, without the keys. A send writes a thousand a
    call, and the database took a fifth longer over the UPDATE to store each with its
    keys. Taken by one itemgetter: 0.09 µs a developer, against 0.36 for a loop over
    the keys."""
    return _STORED(values)


_STORED = operator.itemgetter(*DEVELOPER_KEYS)


def values_from_stored(stored: Any) -> dict[str, Any] | None:
    """The developer's values from Delivery.rendered_with (stored_values), or None when
    it holds none (not kept, or erased): a list as read back, or the tuple stored_values
    makes. Emails sent before kept them with their keys."""
    if isinstance(stored, (list, tuple)) and len(stored) == len(DEVELOPER_KEYS):
        return dict(zip(DEVELOPER_KEYS, stored, strict=True))
    if isinstance(stored, (list, tuple)) and len(stored) == EARLIER_KEYS:  # kept before the traffic's keys
        return dict(zip(DEVELOPER_KEYS, [*stored, "", ""], strict=True))
    return stored if isinstance(stored, dict) and stored else None


# The link as the admin's templates see it: one constant, at preview, check, approval and
# send alike, for every developer, so no template logic can tell them apart or read the
# time out of a token (a "time bomb"); the real link replaces it in what they produced,
# as a merge field is. A template may print it, never take it apart.
LINK_MARK = "memo-link-3f9a0c5d7e21b846"


def link_placeholder() -> str:
    return f"{settings.SITE_URL}/ack/{LINK_MARK}/"


def _linked(text: str, placeholder: str, ack_url: str) -> str:
    """`text` with the link in place of its placeholder; a template that took the
    placeholder apart (sliced, changed its case) is an error, named without the link."""
    text = text.replace(placeholder, ack_url)
    if LINK_MARK in text.lower():
        raise LinkAltered("ack_url may only be printed as it is, not taken apart or changed")
    return text


class LinkAltered(jinja2.TemplateError):
    pass


# What of a developer's values names them (country and language do not).
PERSONAL_KEYS = ("name", "organization", "email", "external_id")


def error_reason(exc: BaseException, values: dict[str, Any]) -> str:
    """A render error as a delivery's reason or a log line may say it: the template's
    line and what went wrong, with none of the developer's values in it (a reason is
    shown to Viewers; "'dict object' has no attribute 'Olga Petrova'" would name her),
    and never a link (templates see only the placeholder)."""
    text = sandbox.describe(exc)
    personal = [(key, values.get(key)) for key in PERSONAL_KEYS]
    for key, value in sorted(personal, key=lambda item: -len(str(item[1]))):
        if isinstance(value, str) and len(value) >= 3:  # shorter, it would eat words, not name anyone
            text = text.replace(value, f"[developer.{key}]")
    line = sandbox.template_line(exc)
    return f"line {line}: {text}" if line else text


def inert_ack_url(memo_id: int | None, developer_id: int | None) -> str:
    """A developer's link as a template sees it, that the acknowledgement page refuses."""
    payload = signing.b64_encode(b"[%d,%d]" % (memo_id or 0, developer_id or 0)).decode()
    token = signing.TimestampSigner(salt=INERT_ACK_SALT).sign(payload)
    return settings.SITE_URL + reverse("ack", args=[token])


def is_inert_ack_token(token: str) -> bool:
    """Is this the link of a preview, a test email or a check (inert_ack_url)? Its page
    refuses it, saying what it is."""
    try:
        signing.TimestampSigner(salt=INERT_ACK_SALT).unsign(token)
    except signing.BadSignature:
        return False
    return True


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


def templates_check(*, memo: Memo, sources: dict[str, str], language: str) -> dict[str, str]:
    """Trial-render templates for a sample developer; returns {field: error} (empty if fine)."""
    return templates_check_languages(memo=memo, sources_by_language={language: sources}).get(language, {})


def templates_check_languages(
    *, memo: Memo, sources_by_language: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """Trial-render each language's templates for a sample developer speaking it;
    returns {language: {field: error}} for those that fail.

    Runs in a child process with a memory limit and a deadline (trial.py), so a runaway
    template is reported instead of hanging the admin.
    """
    jobs = []
    for language, sources in sources_by_language.items():
        sample = developer_in_language({**SAMPLE_DEVELOPER, "language": language}, language)
        context = memo_context(memo, sample, link_placeholder(), language)  # what the send's templates see
        context = json.loads(json.dumps(context, default=str))
        jobs += [
            {"key": f"{language}/{field}", "field": field, "source": source, "context": context}
            for field, source in sources.items()
        ]
    request = {"jobs": jobs, "seconds": TRIAL_SECONDS, "memory_bytes": TRIAL_MEMORY_BYTES}
    results = {r["key"]: r for r in map(json.loads, trial_run(request))}
    problems: dict[str, dict[str, str]] = {}
    for job in jobs:
        language, field = job["key"].split("/", 1)
        result = results.get(job["key"])
        if result is None:
            problems.setdefault(language, {})[field] = "the template could not be rendered (too slow or too big)"
        elif not result["ok"]:
            where = f"line {result['line']}: " if result.get("line") else ""
            error = explain_undefined(result["error"], job["source"], result.get("line"), TEMPLATE_VARIABLES)
            problems.setdefault(language, {})[field] = f"{where}{error}"
    return problems


def problems_text(problems: dict[str, dict[str, str]]) -> str:
    """{language: {field: error}} as one line for a message: "zh-hans subject: line 2: …"."""
    return "; ".join(f"{lang} {field}: {err}" for lang, errs in problems.items() for field, err in errs.items())


def memo_check(memo: Memo) -> dict[str, dict[str, str]]:
    """Trial-render every language of a saved memo, reminders too; {language: {field: error}}."""
    return templates_check_languages(
        memo=memo,
        sources_by_language={
            getattr(obj, "language", FALLBACK_LANGUAGE): {**_sources(obj), **reminder_sources(obj)}
            for obj in [memo, *memo.translations.all()]
        },
    )


class MemoRenderer:
    """Compiles a memo's templates once, then renders them for many developers: by
    substitution into a skeleton where the templates allow it (substitution.py), in
    full otherwise."""

    def __init__(self, memo: Memo, reminder: bool = False) -> None:
        self.memo = memo
        self.reminder = reminder
        self._compiled: dict[str, tuple[str, dict[str, jinja2.Template]]] = {}
        self._skeletons: dict[str, Skeleton | None] = {}
        self._verified: set[str] = set()
        self._layout_html = layout_env.get_template("layout.html")
        self._layout_text = layout_env.get_template("layout.txt")

    def _templates(self, language: str) -> tuple[str, dict[str, jinja2.Template]]:
        if language not in self._compiled:
            used, sources = memo_sources(self.memo, language, self.reminder)
            self._compiled[language] = (
                used,
                {field: sandbox.template_for(field, source) for field, source in sources.items()},
            )
        return self._compiled[language]

    def _custom_reminder(self, language: str) -> bool:
        obj = next((t for t in self.memo.translations.all() if t.language == language), self.memo)
        return bool(reminder_sources(obj))

    def render_parts(
        self, developer: dict[str, Any], ack_url: str, language: str | None = None
    ) -> tuple[str, str, str, str]:
        """(language used, subject, html body, text body), without our layout; in the
        developer's language unless `language` says which templates to use."""
        language = self._templates(language or developer["language"])[0]
        return self._render_parts(developer_in_language(developer, language), ack_url, language)

    def _render_parts(self, developer: dict[str, Any], ack_url: str, language: str) -> tuple[str, str, str, str]:
        """render_parts for values already in the text's language (or placeholders)."""
        language, templates = self._templates(language)
        placeholder = link_placeholder()
        context = memo_context(self.memo, developer, placeholder, language)
        # In HTML the link as autoescape would have printed it.
        links = {"html_body": str(markupsafe.escape(ack_url))}
        subject, html, text = (
            _linked(sandbox.render_limited(templates[field], context), placeholder, links.get(field, ack_url))
            for field in sandbox.TEMPLATE_FIELDS
        )
        return language, " ".join(subject.split()), html, text  # a header is one line

    def render(self, developer: dict[str, Any], ack_url: str) -> tuple[str, RenderedEmail]:
        """Returns (language used, email in our layout). Raises on a template error."""
        if "traffic_summary" not in developer:  # values kept, with their keys, before the traffic's existed
            developer = {"traffic_countries": "", "traffic_summary": "", **developer}
        language = self._templates(developer["language"])[0]
        developer = developer_in_language(developer, language)
        skeleton = self._skeleton(language)
        values = (*(developer[key] for key in DEVELOPER_KEYS), ack_url)
        if (
            skeleton is not None
            and skeleton.fits(values)
            and skeleton.fill_size(values) <= sandbox.MAX_OUTPUT_CHARS  # past it, the full render says why
        ):
            email = SubstitutedEmail(skeleton, values)
            if language in self._verified or self._verify(language, email, developer, ack_url):
                return language, email
        return self._render_full(developer, ack_url)

    def _verify(self, language: str, email: RenderedEmail, developer: dict[str, Any], ack_url: str) -> bool:
        """The first email made by substitution is compared with a full render: should a
        template ever slip past the check, everyone gets a full render."""
        full = self._render_full(developer, ack_url)[1]
        if (email.subject, email.html, email.text) != (full.subject, full.html, full.text):
            log.error(
                "memo %s (%s): substitution differs from a full render; rendering in full", self.memo.pk, language
            )
            self._skeletons[language] = None
            return False
        self._verified.add(language)
        return True

    def _render_full(
        self, developer: dict[str, Any], ack_url: str, language: str | None = None
    ) -> tuple[str, RenderedEmail]:
        language, subject, html, text = self._render_parts(
            developer, ack_url, self._templates(language or developer["language"])[0]
        )
        # The built-in reminder: our opening lines and prefix around the memo's own text.
        built_in_reminder = self.reminder and not self._custom_reminder(language)
        with translation.override(language):
            if built_in_reminder:
                subject = translation.gettext("Reminder: %(subject)s") % {"subject": subject}
            layout = {
                "subject": subject,
                "ack_url": ack_url,
                "language": language,
                "reminder": built_in_reminder,
                "deadline": self.memo.ack_deadline,
            }
            return language, RenderedEmail(
                subject=subject,
                html=self._layout_html.render(body=Markup(html), **layout),
                text=self._layout_text.render(body=text, **layout),
            )

    def _skeleton(self, language: str) -> Skeleton | None:
        """The language's skeleton, made on first use, or None when its templates do more
        than print values."""
        if language not in self._skeletons:
            self._skeletons[language] = None
            templates = [
                sandbox.environment_for(field).parse(source)
                for field, source in memo_sources(self.memo, language, self.reminder)[1].items()
            ]
            if substitution_only(templates) and _layout_is_substitution_only():
                nonce = secrets.token_hex(8)
                try:
                    _, email = self._render_full(*placeholder_values(nonce), language=language)
                except Exception:  # e.g. too long with placeholders: each developer's render says
                    return None
                self._skeletons[language] = Skeleton.parse(nonce, email.subject, email.html, email.text)
        return self._skeletons[language]


def memo_content(memo: Memo) -> dict[str, Any]:
    """Everything a recipient reads: every language's templates, reminders included,
    and the dates. Approval keeps it whole in the evidence (approval.py)."""
    return {
        "title": memo.title,
        "effective_date": str(memo.effective_date),
        "ack_deadline": str(memo.ack_deadline),
        "languages": {
            getattr(obj, "language", FALLBACK_LANGUAGE): {**_sources(obj), **reminder_sources(obj)}
            for obj in [memo, *memo.translations.all()]
        },
    }


def content_hash_of(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def memo_content_hash(memo: Memo) -> str:
    """SHA-256 of memo_content."""
    return content_hash_of(memo_content(memo))


def approved_renderer(memo: Memo, reminder: bool = False) -> MemoRenderer:
    """A renderer of the memo's templates, once they are shown to be the ones its
    approval record holds (evidence/approved.py); raises NotApproved otherwise."""
    content = memo_content(memo)
    approved_or_raise(memo.pk, content, memo.content_hash or content_hash_of(content))
    return MemoRenderer(memo, reminder=reminder)


# --- the text a developer was sent, as their page and the console show it ----------------

RENDERERS_CACHED = 64  # memos whose templates stay compiled: far more than are open at once


@functools.lru_cache(maxsize=RENDERERS_CACHED)
def _sent_renderer(memo_id: int, content_hash: str) -> MemoRenderer:
    """A sent memo's compiled templates. Keyed on the content hash frozen at approval,
    which covers every language's templates and the dates: they cannot change under it."""
    memo = Memo.objects.prefetch_related("translations").get(pk=memo_id)
    return approved_renderer(memo)


def sent_memo(memo: Memo) -> Memo:
    """The sent memo as loaded with its compiled templates (title, dates, translations):
    `memo` needs only its id and content hash."""
    if not memo.content_hash:
        return Memo.objects.get(pk=memo.pk)
    return _sent_renderer(memo.pk, memo.content_hash).memo


@dataclass(frozen=True)
class ShownText:
    language: str
    subject: str
    html: str
    text: str
    text_hash: str  # what an answer to it records, and a console must send back


def sent_text(delivery: Any, ack_url: str, rendered_with: Any, text_hash: str) -> ShownText:
    """The memo as sent to the delivery's developer, without our layout: what the
    acknowledgement page shows and the console's notices carry, the one place both read
    it from. The memo's templates cannot change once sent; rendered with the values the
    email was rendered with (`rendered_with`, Delivery.rendered_with as stored_values
    keeps them), it is the text that was sent, whatever became of the developer's
    record since. An email sent before texts were kept, or one the
    provider reported taking after its worker died (reconcile.py), has none: the
    developer's record stands in, and the memo's content hash for the text's.
    `delivery` needs its memo (id, content hash) and, without `rendered_with`, its developer."""
    memo = delivery.memo
    renderer = _sent_renderer(memo.pk, memo.content_hash) if memo.content_hash else approved_renderer(memo)
    language, subject, html, text = renderer.render_parts(
        values_from_stored(rendered_with) or developer_context(delivery.developer), ack_url
    )
    return ShownText(language=language, subject=subject, html=html, text=text, text_hash=text_hash or memo.content_hash)
