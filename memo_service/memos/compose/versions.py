"""Every version of a memo a template can produce, for the approver and the sender.

A template that tests a developer's values ({% if developer.external_id == 'victim-1' %})
shows each developer a different text, and a preview shows only the developer chosen.
Every template of the memo (every language, reminders too) is read for what depends on
developer values and decides its text (template_reader.py, decisions.py). For each, a
developer of the audience is found per version: for a comparison with constants, each
constant and "everything else" (by a query, so a single developer among millions is
found); for anything else on one field, by rendering (sandboxed, on its render budget)
for each of that field's values (every country and language; the audience's distinct
names, ids and the like, up to MAX_VALUES_EVALUATED) and telling the texts apart with
the value itself taken out (version_keys.py). What depends on two fields at once cannot
be listed: such a memo is refused at save and at approval (`versions_problem`), never
approved unseen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django_countries import countries
from jinja2 import nodes

from memo_service.developers.models import Developer
from memo_service.memos.audience import memo_audience
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import SAMPLE_DEVELOPER, memo_context
from memo_service.memos.compose.decisions import NOT_LISTED, template_decisions
from memo_service.memos.compose.links import link_placeholder
from memo_service.memos.compose.sources import memo_content
from memo_service.memos.compose.template_reader import TemplateReader
from memo_service.memos.compose.version_keys import (
    compare_key,
    condition_id,
    evaluate_key,
    render_key,
    template_of_test,
)
from memo_service.memos.models import Memo

# A test on one field is evaluated for this many of its distinct values at most: every
# country or language, and a sample of names or ids.
MAX_VALUES_EVALUATED = 10_000
# All those evaluations together, per page: each is on its render budget, but a test
# built to be slow, times 10,000 values, must not hold the approver's page for long.
EVALUATION_SECONDS = 2.0


@dataclass(frozen=True)
class Branch:
    label: str  # "CN", "everything else", "true", "false"
    developer: str | None  # external_id of a developer of the audience in this branch
    # What tells this version apart at send (version_check.py): a compared field's value
    # (or that it is none of the constants), a test's outcome, a text's fingerprint.
    key: str = ""


@dataclass
class Condition:
    language: str
    template: str  # the field: subject, html_body, reminder_text, ...
    line: int
    source: str  # the template's line, as written
    depends_on: list[str]  # "developer.country", "ack_url", ...
    branches: list[Branch] = field(default_factory=list)
    note: str = ""  # why the branches could not all be listed
    listed: bool = True  # False: its versions could not be listed at all (the memo is refused)

    @property
    def id(self) -> str:
        """Names the condition in the approval record and at send (the same templates give
        the same ids)."""
        return condition_id(self.language, self.template, self.line, self.depends_on)

    def __str__(self) -> str:
        branches = ", ".join(
            b.label + (f" ({b.developer})" if b.developer else " (nobody in the audience)") for b in self.branches
        )
        return (
            f"{self.language} {self.template} line {self.line}: the text differs by "
            f"{', '.join(self.depends_on)}"
            + (f": {branches}" if branches else "")
            + (f"; {self.note}" if self.note else "")
        )


def _pick(audience: QuerySet[Developer], **lookup: Any) -> str | None:
    return audience.filter(**lookup).order_by("id").values_list("external_id", flat=True).first()


def _pick_excluding(audience: QuerySet[Developer], name: str, values: list[Any]) -> str | None:
    return audience.exclude(**{f"{name}__in": values}).order_by("id").values_list("external_id", flat=True).first()


def _compared(audience: QuerySet[Developer], simple: dict[str, list[Any]]) -> list[Branch]:
    """Branches of a comparison with constants: for each field compared, each constant
    and everything else."""
    branches: list[Branch] = []
    for field_name, values in simple.items():
        branches += [
            Branch(f"{field_name} {v}", _pick(audience, **{field_name: v}), compare_key(field_name, v, values))
            for v in values
        ]
        branches.append(
            Branch(
                f"{field_name}: everything else",
                _pick_excluding(audience, field_name, values),
                compare_key(field_name, None, values),
            )
        )
    return branches


def _evaluate(
    memo: Memo,
    environment: sandbox.MemoSandbox,
    test: nodes.Node,
    name: str,
    audience: QuerySet[Developer],
    deadline: float,
) -> tuple[list[Branch], str]:
    """Branches of a test on one field, by evaluating it for the field's distinct values."""
    template = template_of_test(environment, test)
    values = list(audience.order_by(name).values_list(name, flat=True).distinct()[: MAX_VALUES_EVALUATED + 1])
    note = (
        f"evaluated for the first {MAX_VALUES_EVALUATED:,} of its values in the audience"
        if len(values) > MAX_VALUES_EVALUATED
        else ""
    )
    outcomes: dict[str, Any] = {}
    for n, value in enumerate(values[:MAX_VALUES_EVALUATED]):
        if time.monotonic() > deadline:
            note = f"evaluated for {n:,} of its values in the audience before the time allowed ran out"
            break
        outcomes.setdefault(evaluate_key(memo, template, name, value), value)
    return [Branch(label, _pick(audience, **{name: value}), label) for label, value in sorted(outcomes.items())], note


def _field_values(name: str, audience: QuerySet[Developer]) -> tuple[list[Any], str]:
    """The values a field is rendered with to tell a template's versions apart: every
    country and language (a version for a country nobody in the audience is from is
    still a version), else the audience's distinct values, up to MAX_VALUES_EVALUATED."""
    if name == "country":
        return [code for code, _ in countries], ""
    if name == "language":
        return [code for code, _ in settings.LANGUAGES], ""
    values = list(audience.order_by(name).values_list(name, flat=True).distinct()[: MAX_VALUES_EVALUATED + 1])
    if len(values) > MAX_VALUES_EVALUATED:
        return values[
            :MAX_VALUES_EVALUATED
        ], f"rendered for the first {MAX_VALUES_EVALUATED:,} of its values in the audience"
    return values, ""


def _render_versions(
    memo: Memo,
    template: Any,
    language: str,
    name: str,
    audience: QuerySet[Developer],
    deadline: float,
) -> tuple[list[Branch], str]:
    """Branches of a whole template that depends on one field: rendered for each of the
    field's values (the rest the sample developer's), each text with the value itself
    taken out (printing a name is not a version), grouped."""
    values, note = _field_values(name, audience)
    base = memo_context(memo, SAMPLE_DEVELOPER, link_placeholder(), language)  # the dates, formatted once
    versions: dict[str, list[Any]] = {}
    for n, value in enumerate(values):
        if time.monotonic() > deadline:
            note = f"rendered for {n:,} of its values before the time allowed ran out"
            break
        versions.setdefault(render_key(template, base, language, name, value), []).append(value)
    branches = []
    for n, (key, with_values) in enumerate(sorted(versions.items(), key=lambda item: str(item[1][0])), start=1):
        shown = ", ".join(str(v) for v in with_values[:5]) + (
            f" and {len(with_values) - 5} more" if len(with_values) > 5 else ""
        )
        picked = _pick(audience, **{f"{name}__in": with_values[:MAX_VALUES_EVALUATED]})
        branches.append(Branch(f"version {n} ({name} {shown})", picked, key))
    return branches, note


def memo_versions(memo: Memo) -> list[Condition]:
    """Every condition on developer values in the memo's templates, with a developer of
    the audience for each branch where one exists."""
    audience = memo_audience(memo)
    conditions: list[Condition] = []
    deadline = time.monotonic() + EVALUATION_SECONDS
    for language, sources in memo_content(memo)["languages"].items():
        for name, source in sources.items():
            environment = sandbox.environment_for(name)
            try:
                reader = TemplateReader(environment.parse(source))
            except Exception:  # noqa: S112  (a syntax error: the trial render at save reports it)
                continue
            lines = source.splitlines()
            rendered: dict[str, tuple[list[Branch], str]] = {}  # field -> the whole template's versions
            for decision in template_decisions(reader):
                lineno = decision.node.lineno
                line = lines[lineno - 1].strip() if lineno <= len(lines) else ""
                condition = Condition(language, name, lineno, line[:200], decision.depends)
                if decision.how == "compare":
                    assert decision.simple is not None  # set with "compare"
                    condition.branches = _compared(audience, decision.simple)
                elif decision.how == "evaluate":
                    condition.branches, condition.note = _evaluate(
                        memo, environment, decision.test, decision.field, audience, deadline
                    )
                elif decision.how == "render":
                    if decision.field not in rendered:
                        template = sandbox.template_for(name, source)
                        rendered[decision.field] = _render_versions(
                            memo, template, language, decision.field, audience, deadline
                        )
                    condition.branches, condition.note = rendered[decision.field]
                else:
                    condition.note, condition.listed = NOT_LISTED, False
                conditions.append(condition)
    return conditions


def versions_problem(memo: Memo, conditions: list[Condition] | None = None) -> str:
    """Why the memo's versions cannot all be shown to its approver, or "" when they can."""
    unlisted = [c for c in (memo_versions(memo) if conditions is None else conditions) if not c.listed]
    return "; ".join(f"{c.language} {c.template} line {c.line}: {c.note} ({', '.join(c.depends_on)})" for c in unlisted)


def versions_shown(conditions: list[Condition]) -> dict[str, list[str]]:
    """{condition id: the keys of its versions the approver could preview (a branch with a
    developer of the audience)}: what the approval record keeps, and the send checks."""
    return {c.id: sorted({b.key for b in c.branches if b.developer}) for c in conditions}
