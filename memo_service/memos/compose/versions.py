"""Every version of a memo a template can produce, for the approver and the sender.

A template that tests a developer's values ({% if developer.external_id == 'victim-1' %})
shows each developer a different text, and a preview shows only the developer chosen.
This reads every template's syntax tree (every language, reminders too) for what
depends on developer values: directly or through what was computed from them (a
variable, a namespace's attribute, a loop, a macro's parameters, a `set` block), and
whatever decides what text comes out: a test, a loop, a lookup, a filter told what to
look for, and any printed expression that does more than print a value (`and`/`or`,
arithmetic, string multiplication, a call). For each it finds a developer of the
audience per version: for a comparison with constants, each constant and "everything
else" (by a query, so a single developer among millions is found); for anything else on
one field, by rendering (sandboxed, on its render budget) for each of that field's
values (every country and language; the audience's distinct names, ids and the like,
up to MAX_VALUES_EVALUATED) and telling the texts apart with the value itself taken
out. What depends on two fields at once cannot be listed: such a memo is refused at
save and at approval (`versions_problem`), never approved unseen.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django_countries import countries
from jinja2 import nodes
from markupsafe import escape

from memo_service.developers.models import Developer
from memo_service.memos.audience import memo_audience
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.context import SAMPLE_DEVELOPER, developer_in_language, memo_context
from memo_service.memos.compose.links import link_placeholder
from memo_service.memos.compose.sources import memo_content
from memo_service.memos.models import Memo

# Developer values a template sees that are columns of their own, so a branch's
# developer can be looked up by a query (country_name is derived from country).
QUERYABLE = ("name", "organization", "email", "external_id", "country", "language")
# A test on one field is evaluated for this many of its distinct values at most: every
# country or language, and a sample of names or ids (each evaluation takes microseconds).
MAX_VALUES_EVALUATED = 10_000
# All those evaluations together, per page: each is on its render budget, but a test
# built to be slow, times 10,000 values, must not hold the approver's page for long.
EVALUATION_SECONDS = 2.0
# Names a template gets whose values differ from one developer to the next (the link is
# one constant placeholder to templates: links.link_placeholder).
PER_DEVELOPER = frozenset({"developer"})
NOT_LISTED = "its versions cannot be listed: it depends on more than one developer value at once"


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


def test_template(environment: sandbox.MemoSandbox, test: nodes.Node) -> Any:
    """The test alone, as a template printing "true" or "false"."""
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


def _value_ref(expr: nodes.Node) -> str | None:
    """'developer.country' for developer.country or developer['country']; 'ack_url'."""
    if isinstance(expr, nodes.Name) and expr.name in PER_DEVELOPER:
        return expr.name
    if (
        isinstance(expr, (nodes.Getattr, nodes.Getitem))
        and isinstance(expr.node, nodes.Name)
        and expr.node.name == "developer"
    ):
        key = expr.attr if isinstance(expr, nodes.Getattr) else getattr(expr.arg, "value", None)
        if isinstance(key, str):
            return f"developer.{key}"
    return None


class TemplateReader:
    """What one parsed template's expressions depend on, variables followed."""

    def __init__(self, tree: nodes.Template) -> None:
        self.tree = tree
        self.tainted: dict[str, set[str]] = {}  # variable name → developer values it holds
        self.aliases: dict[str, str] = {}  # variable name → the one value it is a copy of
        changed = True
        while changed:  # until no assignment adds anything (each adds at most once per value)
            changed = self._follow_assignments()

    def depends(self, expr: nodes.Node) -> set[str]:
        found: set[str] = set()
        stack = [expr]
        while stack:
            node = stack.pop()
            ref = _value_ref(node)
            if ref is not None:
                found.add(ref)
                continue
            if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in self.tainted:
                found |= self.tainted[node.name]
            stack.extend(node.iter_child_nodes())
        return found

    def _taint(self, target: nodes.Node, values: set[str], alias: str | None = None) -> bool:
        changed = False
        if isinstance(target, nodes.NSRef):  # {% set ns.attr = … %}: the namespace holds it
            names: list[Any] = [target]
        else:
            names = list(target.find_all(nodes.Name)) if not isinstance(target, nodes.Name) else [target]
        for name in names:
            known = self.tainted.setdefault(name.name, set())
            if not values <= known:
                known |= values
                changed = True
            if alias and isinstance(target, nodes.Name):
                self.aliases.setdefault(name.name, alias)
        return changed

    def _follow_assignments(self) -> bool:
        changed = False
        for node in self.tree.find_all(
            (nodes.Assign, nodes.For, nodes.With, nodes.AssignBlock, nodes.Macro, nodes.CallBlock)
        ):
            if isinstance(node, nodes.Assign):
                ref = _value_ref(node.node)
                changed |= self._taint(
                    node.target, self.depends(node.node), ref if ref and ref != "developer" else None
                )
            elif isinstance(node, nodes.For):
                changed |= self._taint(node.target, self.depends(node.iter))
            elif isinstance(node, nodes.With):
                for target, value in zip(node.targets, node.values, strict=True):
                    changed |= self._taint(target, self.depends(value))
            elif isinstance(node, nodes.AssignBlock):
                changed |= self._taint(node.target, set().union(*(self.depends(n) for n in node.body)))
            elif isinstance(node, nodes.Macro):
                # A macro's parameters hold whatever any call passes it.
                passed: set[str] = set()
                for call in self.tree.find_all(nodes.Call):
                    if isinstance(call.node, nodes.Name) and call.node.name == node.name:
                        for arg in [*call.args, *(kw.value for kw in call.kwargs)]:
                            passed |= self.depends(arg)
                for param in node.args:
                    changed |= self._taint(param, passed)
        return changed

    def tests(self) -> Iterator[tuple[nodes.Node, nodes.Node]]:
        """(node, test) for every test whose outcome decides what text is produced."""
        for node in self.tree.find_all((nodes.If, nodes.CondExpr, nodes.For, nodes.Getitem, nodes.Filter)):
            if isinstance(node, (nodes.If, nodes.CondExpr)):
                yield node, node.test
            elif isinstance(node, nodes.For):
                yield node, node.iter  # how many times, over what
                if node.test is not None:
                    yield node, node.test
            elif isinstance(node, nodes.Getitem) and _value_ref(node) is None:
                yield node, node.arg  # a lookup keyed by a developer's value
            elif isinstance(node, nodes.Filter) and node.node is not None and (node.args or node.kwargs):
                # e.g. developer.country|replace('CN', '…'): a filter told what to look
                # for; one without arguments (upper, length) only transforms the value.
                yield node, node
        for output in self.tree.find_all(nodes.Output):
            for expr in output.nodes:
                if not self._printed_as_is(expr):
                    yield expr, expr  # `and`/`or`, arithmetic, a call: it may decide the text

    def _printed_as_is(self, expr: nodes.Node) -> bool:
        """Prints values (a developer's, a copy of one, transformed by a filter told
        nothing, joined with constants): no version of its own."""
        if isinstance(expr, (nodes.TemplateData, nodes.Const)) or _value_ref(expr) is not None:
            return True
        if isinstance(expr, nodes.Name):
            return expr.name not in self.tainted or expr.name in self.aliases
        if isinstance(expr, nodes.Filter):
            return not (expr.args or expr.kwargs) and expr.node is not None and self._printed_as_is(expr.node)
        if isinstance(expr, nodes.Concat):
            return all(self._printed_as_is(n) for n in expr.nodes)
        return not self.depends(expr)


def _simple_comparisons(test: nodes.Node, reader: TemplateReader) -> dict[str, list[Any]] | None:
    """{field: constants} when the test only compares developer fields (or copies of
    them) with constants, joined by and/or/not; None otherwise."""
    found: dict[str, list[Any]] = {}

    def field_of(expr: nodes.Node) -> str | None:
        ref = _value_ref(expr)
        if ref is None and isinstance(expr, nodes.Name):
            ref = reader.aliases.get(expr.name)
        if ref and ref.startswith("developer.") and ref.removeprefix("developer.") in QUERYABLE:
            return ref.removeprefix("developer.")
        return None

    def constants(expr: nodes.Expr) -> list[Any] | None:
        try:
            value = expr.as_const()
        except nodes.Impossible:
            return None
        return list(value) if isinstance(value, (list, tuple, set)) else [value]

    def walk(node: nodes.Node) -> bool:
        if isinstance(node, (nodes.And, nodes.Or)):
            return walk(node.left) and walk(node.right)
        if isinstance(node, nodes.Not):
            return walk(node.node)
        if isinstance(node, nodes.Compare) and len(node.ops) == 1 and node.ops[0].op in ("eq", "ne", "in", "notin"):
            left, right = node.expr, node.ops[0].expr
            if node.ops[0].op in ("eq", "ne") and field_of(right) and not field_of(left):
                left, right = right, left
            name = field_of(left)
            values = constants(right) if name else None
            if name and values is not None and all(isinstance(v, str) for v in values):
                found.setdefault(name, []).extend(v for v in values if v not in found[name])
                return True
        return False

    return found if walk(test) and found else None


def _pick(audience: QuerySet[Developer], **lookup: Any) -> str | None:
    return audience.filter(**lookup).order_by("id").values_list("external_id", flat=True).first()


def _pick_excluding(audience: QuerySet[Developer], name: str, values: list[Any]) -> str | None:
    return audience.exclude(**{f"{name}__in": values}).order_by("id").values_list("external_id", flat=True).first()


def _evaluate(
    memo: Memo,
    environment: sandbox.MemoSandbox,
    test: nodes.Node,
    name: str,
    audience: QuerySet[Developer],
    deadline: float,
) -> tuple[list[Branch], str]:
    """Branches of a test on one field, by evaluating it for the field's distinct values."""
    template = test_template(environment, test)
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


@dataclass
class Decision:
    node: nodes.Node  # where: its line
    test: nodes.Node
    depends: list[str]
    how: str  # "compare" (with constants), "evaluate" (the test alone), "render" (the template), "unlisted"
    simple: dict[str, list[Any]] | None = None
    field: str = ""  # the one field evaluated or rendered for


def template_decisions(reader: TemplateReader) -> Iterator[Decision]:
    """What decides the template's text, once per line and dependencies, and how its
    versions are found."""
    seen: set[tuple[int, tuple[str, ...]]] = set()
    for node, test in reader.tests():
        depends = sorted(reader.depends(test))
        key = (node.lineno, tuple(depends))
        if not depends or key in seen:
            continue
        seen.add(key)
        simple = _simple_comparisons(test, reader) if isinstance(node, (nodes.If, nodes.CondExpr)) else None
        one = depends[0].removeprefix("developer.") if len(depends) == 1 else ""
        if simple:
            yield Decision(node, test, depends, "compare", simple)
        elif (
            isinstance(node, (nodes.If, nodes.CondExpr))
            and one in QUERYABLE
            and not any(n.name not in ("developer", "memo") and n.ctx == "load" for n in test.find_all(nodes.Name))
        ):
            yield Decision(node, test, depends, "evaluate", field=one)
        elif one in (*QUERYABLE, "country_name"):
            yield Decision(node, test, depends, "render", field="country" if one == "country_name" else one)
        else:
            yield Decision(node, test, depends, "unlisted")


def template_unlisted(field: str, source: str) -> str:
    """Why a template's versions cannot be listed for its approver (the line and the
    values it depends on at once), or "": checked at save, with no audience needed."""
    try:
        reader = TemplateReader(sandbox.environment_for(field).parse(source))
    except Exception:  # noqa: BLE001  (a syntax error: the trial render reports it)
        return ""
    for decision in template_decisions(reader):
        if decision.how == "unlisted":
            return (
                f"line {decision.node.lineno}: {NOT_LISTED} ({', '.join(decision.depends)}): test one value at a time"
            )
    return ""


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
                    for field_name, values in decision.simple.items():
                        condition.branches += [
                            Branch(
                                f"{field_name} {v}",
                                _pick(audience, **{field_name: v}),
                                compare_key(field_name, v, values),
                            )
                            for v in values
                        ]
                        condition.branches.append(
                            Branch(
                                f"{field_name}: everything else",
                                _pick_excluding(audience, field_name, values),
                                compare_key(field_name, None, values),
                            )
                        )
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
