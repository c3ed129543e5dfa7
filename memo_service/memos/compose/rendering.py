"""Render a memo for one developer: the admin's sandboxed templates inside our layout."""

from __future__ import annotations

import functools
import logging
import secrets
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from django.conf import settings
from django.utils import formats, translation
from django.utils.translation import gettext_noop
from markupsafe import Markup

from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import developer_in_language, memo_context
from memo_service.memos.compose.emails import RenderedEmail, SubstitutedEmail
from memo_service.memos.compose.links import link_placeholder, linked
from memo_service.memos.compose.sources import content_hash_of, memo_content, memo_sources, reminder_sources
from memo_service.memos.compose.substitution import (
    DEVELOPER_KEYS,
    LAYOUT_NAMES,
    Skeleton,
    placeholder_values,
    substitution_only,
)
from memo_service.memos.evidence.approved import approved_or_raise
from memo_service.memos.models import Memo

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
            linked(sandbox.render_limited(templates[field], context), placeholder, links.get(field, ack_url))
            for field in sandbox.TEMPLATE_FIELDS
        )
        return language, " ".join(subject.split()), html, text  # a header is one line

    def render(self, developer: dict[str, Any], ack_url: str) -> tuple[str, RenderedEmail]:
        """Returns (language used, email in our layout). Raises on a template error."""
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


def approved_renderer(memo: Memo, reminder: bool = False) -> MemoRenderer:
    """A renderer of the memo's templates, once they are shown to be the ones its
    approval record holds (evidence/approved.py); raises NotApproved otherwise."""
    content = memo_content(memo)
    approved_or_raise(memo.pk, content, memo.content_hash or content_hash_of(content))
    return MemoRenderer(memo, reminder=reminder)
