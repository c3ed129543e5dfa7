"""The text a developer was sent, as their page and the console show it: rendered again
from the memo's approved templates with the values the email was rendered with."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.utils import translation
from jinja2 import meta

from memo_service.developers.models import Developer
from memo_service.memos.answer.tokens import AnswerTarget, answer_target
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import developer_context, values_from_stored
from memo_service.memos.compose.rendering import MemoRenderer, approved_renderer
from memo_service.memos.compose.sources import memo_sources
from memo_service.memos.evidence.approved import NotApproved
from memo_service.memos.models import Delivery, Memo

RENDERERS_CACHED = 64  # memos whose templates stay compiled: far more than are open at once


@functools.lru_cache(maxsize=RENDERERS_CACHED)
def _sent_renderer(memo_id: int, content_hash: str) -> MemoRenderer:
    """A sent memo's compiled templates. Keyed on the content hash frozen at approval,
    which covers every language's templates and the dates: they cannot change under it."""
    memo = Memo.objects.prefetch_related("translations").get(pk=memo_id)
    return approved_renderer(memo)


def _renderer(memo: Memo) -> MemoRenderer:
    return _sent_renderer(memo.pk, memo.content_hash) if memo.content_hash else approved_renderer(memo)


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
    record since. An email without them (no `rendered_with`: one the provider reported
    taking after its worker died, reconcile.py, say) has the developer's record stand
    in, and the memo's content hash for the text's.
    `delivery` needs its memo (id, content hash) and, without `rendered_with`, its developer."""
    memo = delivery.memo
    renderer = _renderer(memo)
    language, subject, html, text = renderer.render_parts(
        values_from_stored(rendered_with) or developer_context(delivery.developer), ack_url
    )
    return ShownText(language=language, subject=subject, html=html, text=text, text_hash=text_hash or memo.content_hash)


def delivery_shown(target: AnswerTarget) -> Delivery | None:
    """The email whose text the developer's page shows (its `rendered_with` and
    `text_hash`): the first email's (the memo itself), else the latest one's; None when
    no email of theirs kept its text."""
    return (
        Delivery.objects.filter(memo=target.memo, developer=target.developer)
        .exclude(text_hash="")
        .only("rendered_with", "text_hash", "sent_at")
        .order_by("sequence", "-sent_at")
        .first()
    )


def target_text(target: AnswerTarget, link: str) -> ShownText:
    """The memo as sent to the target's developer (delivery_shown's email), with `link`
    where the email had theirs. Raises what a render raises (NotApproved among them)."""
    shown = delivery_shown(target)
    return sent_text(
        target.delivery,
        link,
        shown.rendered_with if shown is not None else None,
        shown.text_hash if shown is not None else "",
    )


def subject_sent(memo: Memo, developer: Developer) -> str:
    """How an email to `developer` about `memo` names it: the subject of the memo as sent
    to them (delivery_shown's email), else the memo's subject rendered for them; "" when
    the memo's templates cannot be shown (not the approved ones). Never the memo's title,
    an internal name in the admins' language."""
    target = answer_target(memo_id=memo.pk, developer_id=developer.pk)
    try:
        if target is not None:
            return target_text(target, "").subject
        return sent_text(Delivery(memo=memo, developer=developer), "", None, "").subject
    except NotApproved:
        return ""


class SubjectInLanguage:
    """The memo's subject in the language a notification is being rendered in (the active
    one), for a notice rendered once per language (a withdrawal's): the subject of that
    language's version, or false (a template then names the notice by its date) when it
    has values of each developer's, which no one text for all of them can show."""

    def __init__(self, memo: Memo) -> None:
        self.memo = sent_memo(memo)

    def _subject(self) -> str:
        language, sources = memo_sources(self.memo, translation.get_language() or "en")
        source = sources["subject"]
        names = meta.find_undeclared_variables(sandbox.environment_for("subject").parse(source))
        if names - {"memo"}:
            return ""
        anyone = developer_context(Developer(language=language))
        try:
            return _renderer(self.memo).render_parts(anyone, "", language)[1]
        except NotApproved:
            return ""

    def __str__(self) -> str:
        return self._subject()

    def __bool__(self) -> bool:
        return bool(self._subject())
