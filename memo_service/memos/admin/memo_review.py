"""What the approver reviews: the memo rendered as developers get it, each version its
templates produce (compose/versions.py) in each language, and for a memo approved before,
how each of those renders differs from the same render of the content last approved (the
chain's approval record, evidence/approved.py)."""

from __future__ import annotations

import copy
import datetime as dt
import difflib
from dataclasses import dataclass, field
from typing import Any

from memo_service.developers.models import Developer
from memo_service.memos.admin.memo_preview import PreviewRendering, preview_render
from memo_service.memos.audience import memo_audience
from memo_service.memos.compose.context import SAMPLE_DEVELOPER
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE, memo_content
from memo_service.memos.compose.versions import Condition
from memo_service.memos.evidence.approved import approval_problem, approval_record, content_differences
from memo_service.memos.models import Memo, MemoTranslation

# Renders on one review page (each twice when there is an approval to compare with): every
# version a memo with a test per country or language can have, most memos one a language.
MAX_VERSIONS = 60
# Lines of context around each change in a diff: enough to find the sentence.
DIFF_CONTEXT = 2


@dataclass
class DiffLine:
    kind: str  # "+" added, "-" removed, " " unchanged, "@" where a hunk starts
    text: str


@dataclass
class Version:
    language: str
    developer: str | None  # external id; None: the language's text does not vary by developer
    labels: list[str]  # which branch of which condition this version is
    shown: PreviewRendering | None = None
    approved: PreviewRendering | None = None  # the last approved content, rendered the same way
    diffs: dict[str, list[DiffLine]] = field(default_factory=dict)  # "subject"/"text"/"html" -> lines

    @property
    def changed(self) -> bool:
        return any(self.diffs.values())


@dataclass
class Review:
    versions: list[Version]
    left_out: int  # versions past MAX_VERSIONS, not rendered here
    approved_at: dt.datetime | None  # when the content compared with was approved; None: never
    differences: list[str]  # the fields that differ from it, by name ("subject (zh-hans)")
    problem: str  # why the last approval cannot be compared with
    compared: bool  # whether there is an approval to compare with
    # The memo's own values (its title, dates) that differ from it: (name, approved, now).
    values: list[tuple[str, str, str]] = field(default_factory=list)


def review_versions(memo: Memo, conditions: list[Condition]) -> list[Version]:
    """One version per developer picked for a branch of a condition, per language; a
    language whose text depends on no condition has one."""
    found: dict[str, dict[str | None, list[str]]] = {language: {} for language in memo_content(memo)["languages"]}
    for c in conditions:
        for b in c.branches:
            if b.developer:
                found.setdefault(c.language, {}).setdefault(b.developer, []).append(
                    f"{c.template} line {c.line}: {b.label}"
                )
    versions = []
    for language, developers in found.items():
        if not developers:
            developers = {None: ["every developer"]}
        versions += [Version(language, dev, labels) for dev, labels in developers.items()]
    return versions


def _developers(memo: Memo, versions: list[Version]) -> dict[str | None, Developer]:
    """The developers to render the versions for; a version for anyone gets the
    audience's first, or (an empty audience) the sample developer the trial render uses."""
    wanted = {v.developer for v in versions if v.developer}
    found: dict[str | None, Developer] = {d.external_id: d for d in Developer.objects.filter(external_id__in=wanted)}
    anyone = memo_audience(memo).order_by("id").first()
    if anyone is None:
        sample = {k: v for k, v in SAMPLE_DEVELOPER.items() if k in ("name", "organization", "email", "external_id")}
        anyone = Developer(**sample, country=SAMPLE_DEVELOPER["country"], language=FALLBACK_LANGUAGE)
    found[None] = anyone
    return found


def approved_memo(memo: Memo, content: dict[str, Any]) -> Memo:
    """An unsaved copy of `memo` holding `content` (sources.memo_content's shape, as an
    approval record keeps it), to render the approved text as the memo's own renders."""
    shadow = copy.copy(memo)
    shadow.title = str(content.get("title", memo.title))
    # memo_content keeps them as str() of the values: "None" for a date not set.
    effective, deadline = (str(content.get(name)) for name in ("effective_date", "ack_deadline"))
    shadow.effective_date = None if effective == "None" else dt.date.fromisoformat(effective)
    shadow.ack_deadline = None if deadline == "None" else dt.datetime.fromisoformat(deadline)
    languages = content.get("languages") or {}
    for name, source in (languages.get(FALLBACK_LANGUAGE) or {}).items():
        setattr(shadow, name, source)
    translations = []
    for language, sources in languages.items():
        if language != FALLBACK_LANGUAGE:
            translation = MemoTranslation(language=language)
            for name, source in sources.items():
                setattr(translation, name, source)
            translations.append(translation)
    # memo.translations.all() of the copy: these, from no query (as a prefetch leaves them).
    kept = MemoTranslation.objects.none()
    kept._result_cache = translations  # QuerySet's cache, as prefetch_related fills it
    shadow._prefetched_objects_cache = {"translations": kept}  # type: ignore[attr-defined]
    return shadow


def diff_lines(was: str, now: str) -> list[DiffLine]:
    lines = difflib.unified_diff(was.splitlines(), now.splitlines(), lineterm="", n=DIFF_CONTEXT)
    out = []
    for line in list(lines)[2:]:  # past the ---/+++ header
        kind = "@" if line.startswith("@@") else line[:1]
        out.append(DiffLine(kind, "…" if kind == "@" else line[1:]))
    return out


def _compare(version: Version) -> None:
    shown, approved = version.shown, version.approved
    if shown is None or approved is None or shown.email is None or approved.email is None:
        return
    for part in ("subject", "text", "html"):
        was, now = getattr(approved.email, part), getattr(shown.email, part)
        if was != now:
            version.diffs[part] = diff_lines(was, now)


def memo_review(memo: Memo, conditions: list[Condition]) -> Review:
    """The memo's versions rendered, each compared with the last approval's when there is one."""
    versions = review_versions(memo, conditions)
    left_out = max(0, len(versions) - MAX_VERSIONS)
    versions = versions[:MAX_VERSIONS]
    developers = _developers(memo, versions)
    record = approval_record(memo.pk)
    problem = approval_problem(record) if record is not None else ""
    approved = record.payload.get("content") if record is not None and not problem else None
    was: dict[str, Any] = approved if isinstance(approved, dict) else {}
    shadow = None
    if isinstance(approved, dict):
        try:
            shadow = approved_memo(memo, approved)
        except (ValueError, TypeError, AttributeError) as exc:  # a record of another shape
            problem = f"its content cannot be read ({type(exc).__name__})"
    was_languages = set(was.get("languages") or {})
    for version in versions:
        developer = developers.get(version.developer) or developers[None]
        version.shown = preview_render(memo, developer, version.language)
        if shadow is not None and version.language in was_languages:
            version.approved = preview_render(shadow, developer, version.language)
            _compare(version)
    current = memo_content(memo)
    return Review(
        versions=versions,
        left_out=left_out,
        approved_at=_approved_at(record.payload) if record is not None and shadow is not None else None,
        differences=content_differences(approved, current) if shadow is not None else [],
        problem=problem,
        compared=shadow is not None,
        values=[
            (name, str(was.get(name, "")), str(now))
            for name, now in current.items()
            if shadow is not None and name != "languages" and now != was.get(name)
        ],
    )


def _approved_at(payload: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(payload.get("approved_at")))
    except ValueError:
        return None
