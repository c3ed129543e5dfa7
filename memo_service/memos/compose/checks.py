"""Trial renders of a memo's templates for a sample developer, before a save, an
approval or a send: {language: {field: error}}."""

from __future__ import annotations

import json

from memo_service.memos.compose.context import SAMPLE_DEVELOPER, TEMPLATE_VARIABLES, developer_in_language, memo_context
from memo_service.memos.compose.links import link_placeholder
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE, reminder_sources, template_sources
from memo_service.memos.compose.template_errors import explain_undefined
from memo_service.memos.compose.trial import trial_run
from memo_service.memos.models import Memo

# What a trial render may use. Two seconds is far more than a real memo takes to
# render: only a runaway loop trips it. An honest template needs a few MB on top of
# the interpreter; 64 MB more stops a render that builds a huge value in C code.
TRIAL_SECONDS = 2.0
TRIAL_MEMORY_BYTES = 64 * 1024 * 1024


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
            getattr(obj, "language", FALLBACK_LANGUAGE): {**template_sources(obj), **reminder_sources(obj)}
            for obj in [memo, *memo.translations.all()]
        },
    )
