"""What is approved is what is sent: an email whose text is not one of the versions its
approver could preview does not go out.

For each condition of a memo's templates on developer values (compose/versions.py), the
approval record keeps the keys of the versions its approver could preview: a branch
with a developer of the audience at approval. Before a send (dispatch's check of the
whole audience) and at send, each developer's key for each condition of their
language's templates is worked out the same way, with the same functions. One the
approver could not preview (an `if` on a country nobody was from at approval, a name
past the values evaluated) stops the email and pauses the memo, naming the developer
and where in the templates; never a value of theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import SAMPLE_DEVELOPER, memo_context
from memo_service.memos.compose.decisions import template_decisions
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
from memo_service.memos.evidence.approved import approval_record
from memo_service.memos.models import Memo


@dataclass(frozen=True)
class _Condition:
    id: str
    where: str  # "en text_body line 3"
    fields: tuple[str, ...]  # the developer values it reads
    keys: Callable[[dict[str, Any]], list[str]]  # a developer's values (in the text's language) -> their keys


class VersionCheck:
    """The conditions of a memo's templates, each with the versions its approver could
    preview (`shown`, the approval record's; None for an approval record that keeps
    none: nothing is checked)."""

    def __init__(self, memo: Memo, shown: dict[str, list[str]] | None) -> None:
        self.shown = {cid: set(keys) for cid, keys in (shown or {}).items()}
        self.by_language: dict[str, list[_Condition]] = {}
        if not self.shown:
            return
        for language, sources in memo_content(memo)["languages"].items():  # as approved, reminders too
            base = memo_context(memo, SAMPLE_DEVELOPER, link_placeholder(), language)
            for name, source in sources.items():
                self.by_language.setdefault(language, []).extend(self._conditions(memo, language, name, source, base))

    def _conditions(self, memo: Memo, language: str, name: str, source: str, base: dict[str, Any]) -> list[_Condition]:
        environment = sandbox.environment_for(name)
        try:
            reader = TemplateReader(environment.parse(source))
        except Exception:  # noqa: BLE001  (it did not parse: it was never approved, nothing to check)
            return []
        found = []
        for decision in template_decisions(reader):
            cid = condition_id(language, name, decision.node.lineno, decision.depends)
            where = f"{language} {name} line {decision.node.lineno}"
            field = decision.field
            if decision.how == "compare" and decision.simple:
                found.append(_Condition(cid, where, tuple(decision.simple), partial(_compared, decision.simple)))
            elif decision.how == "evaluate":
                test = template_of_test(environment, decision.test)
                found.append(_Condition(cid, where, (field,), partial(_evaluated, memo, test, field)))
            elif decision.how == "render":
                template = sandbox.template_for(name, source)
                found.append(_Condition(cid, where, (field,), partial(_rendered, template, base, language, field)))
        return found

    def unseen(self, values: dict[str, Any], language: str) -> str:
        """Where the text for a developer (their values, rendered in `language`) is not a
        version its approver could preview, or ""."""
        for condition in self.by_language.get(language, []):
            shown = self.shown.get(condition.id, set())
            if any(key not in shown for key in condition.keys(values)):
                return (
                    f"{condition.where}: the version for this developer's {', '.join(condition.fields)} "
                    "is not one its approver could preview"
                )
        return ""


def _compared(simple: dict[str, list[Any]], values: dict[str, Any]) -> list[str]:
    return [compare_key(field, values.get(field), constants) for field, constants in simple.items()]


def _evaluated(memo: Memo, test: Any, field: str, values: dict[str, Any]) -> list[str]:
    return [evaluate_key(memo, test, field, values[field])]


def _rendered(template: Any, base: dict[str, Any], language: str, field: str, values: dict[str, Any]) -> list[str]:
    return [render_key(template, base, language, field, values[field])]


def version_check(memo: Memo) -> VersionCheck:
    """The check for an approved memo, from its newest approval record."""
    record = approval_record(memo.pk)
    shown = record.payload.get("versions") if record is not None and isinstance(record.payload, dict) else None
    return VersionCheck(memo, shown if isinstance(shown, dict) else None)
