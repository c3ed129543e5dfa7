"""The keys that tell a template's versions apart, worked out the same way for the
approver's listing (versions.py) and for each developer at send (version_check.py): a
compared field's value, a test's outcome, a whole text's fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

from jinja2 import nodes
from markupsafe import escape

from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import SAMPLE_DEVELOPER, developer_in_language
from memo_service.memos.models import Memo


def condition_id(language: str, template: str, line: int, depends: list[str]) -> str:
    return f"{language} {template} {line} {','.join(depends)}"


def compare_key(name: str, value: Any, constants: list[Any]) -> str:
    """A compared field's branch: its value when it is one of the constants, else one key
    for all the rest."""
    return f"{name}={value}" if value in constants else f"{name}: everything else"


def evaluate_key(memo: Memo, template: Any, name: str, value: Any) -> str:
    """A test's outcome for a value of the one field it reads ("true", "false", or how it fails)."""
    context = {"memo": {"title": memo.title, "effective_date": memo.effective_date, "ack_deadline": memo.ack_deadline}}
    try:
        return str(sandbox.render_limited(template, {**context, "developer": {name: str(value)}}))
    except Exception as exc:  # a failing render is a version too: the developer gets no email
        return f"fails: {sandbox.describe(exc)}"


def template_of_test(environment: sandbox.MemoSandbox, test: nodes.Node) -> Any:
    """The test alone, as a template printing "true" or "false" (for evaluate_key)."""
    tree = nodes.Template([nodes.Output([nodes.CondExpr(test, nodes.Const("true"), nodes.Const("false"))])], lineno=1)
    tree.set_environment(environment)
    return environment.from_string(tree)


def render_key(template: Any, base: dict[str, Any], language: str, name: str, value: Any) -> str:
    """A whole template's version for a value of the one field it depends on (the rest the
    sample developer's): its text with the value itself taken out, as a digest."""
    developer = developer_in_language({**SAMPLE_DEVELOPER, "language": language, name: str(value)}, language)
    try:
        text = sandbox.render_limited(template, {**base, "developer": developer})
    except Exception as exc:  # a failing render is a version too: the developer gets no email
        text = f"fails: {sandbox.describe(exc)}"
    for shown in _printed_forms(name, developer):
        text = text.replace(shown, "\x00")
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _printed_forms(name: str, developer: dict[str, Any]) -> set[str]:
    """How a developer's value of `name` may stand in a text, to take it out before texts
    are compared (a language code is left: two letters that stand in words too)."""
    if name == "language":
        return set()
    value = str(developer[name])
    forms = {value, str(escape(value))}
    if name == "country":
        forms |= {developer["country_name"], str(escape(developer["country_name"]))}
    return {form for form in forms if form}
