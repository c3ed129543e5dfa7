"""Every version of a memo a template can produce, for the approver and the sender.

A template that tests a developer's values ({% if developer.external_id == 'victim-1' %})
shows each developer a different text, and a preview shows only the developer chosen.
This reads every template's syntax tree (every language, reminders too) for the
conditions that depend on developer values, directly or through a variable set from
them, and finds a developer of the audience for each branch: for a comparison with
constants, each constant and "everything else" (by a query, so a single developer among
millions is found); for any other test on one field, by evaluating the test (sandboxed,
on its render budget) for that field's distinct values in the audience, up to
MAX_VALUES_EVALUATED of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet
from jinja2 import nodes

from memo_service.developers.models import Developer
from memo_service.memos.audience import memo_audience
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.rendering import FALLBACK_LANGUAGE
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
# Names a template gets whose values differ from one developer to the next.
PER_DEVELOPER = frozenset({"developer", "ack_url"})


@dataclass(frozen=True)
class Branch:
    label: str  # "CN", "everything else", "true", "false"
    developer: str | None  # external_id of a developer of the audience in this branch


@dataclass
class Condition:
    language: str
    template: str  # the field: subject, html_body, reminder_text, ...
    line: int
    source: str  # the template's line, as written
    depends_on: list[str]  # "developer.country", "ack_url", ...
    branches: list[Branch] = field(default_factory=list)
    note: str = ""  # why the branches could not all be listed

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


class _Reader:
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
        for name in target.find_all(nodes.Name) if not isinstance(target, nodes.Name) else [target]:
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


def _simple_comparisons(test: nodes.Node, reader: _Reader) -> dict[str, list[Any]] | None:
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
    tree = nodes.Template([nodes.Output([nodes.CondExpr(test, nodes.Const("true"), nodes.Const("false"))])], lineno=1)
    tree.set_environment(environment)
    template = environment.from_string(tree)
    context = {"memo": {"title": memo.title, "effective_date": memo.effective_date, "ack_deadline": memo.ack_deadline}}
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
        try:
            outcome = sandbox.render_limited(template, {**context, "developer": {name: str(value)}})
        except Exception as exc:  # a failing render is a version too: the developer gets no email
            outcome = f"fails: {sandbox.describe(exc)}"
        outcomes.setdefault(outcome, value)
    return [Branch(label, _pick(audience, **{name: value})) for label, value in sorted(outcomes.items())], note


def memo_versions(memo: Memo) -> list[Condition]:
    """Every condition on developer values in the memo's templates, with a developer of
    the audience for each branch where one exists."""
    audience = memo_audience(memo)
    conditions: list[Condition] = []
    deadline = time.monotonic() + EVALUATION_SECONDS
    for obj in [memo, *memo.translations.all()]:
        language = getattr(obj, "language", FALLBACK_LANGUAGE)
        for name in (*sandbox.TEMPLATE_FIELDS, *sandbox.REMINDER_FIELDS):
            source = getattr(obj, name, "")
            if not source:
                continue
            environment = sandbox.environment_for(name)
            try:
                reader = _Reader(environment.parse(source))
            except Exception:  # noqa: S112  (a syntax error: the trial render at save reports it)
                continue
            lines = source.splitlines()
            seen: set[tuple[int, tuple[str, ...]]] = set()
            for node, test in reader.tests():
                depends = sorted(reader.depends(test))
                key = (node.lineno, tuple(depends))
                if not depends or key in seen:
                    continue
                seen.add(key)
                line = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
                condition = Condition(language, name, node.lineno, line[:200], depends)
                simple = _simple_comparisons(test, reader) if isinstance(node, (nodes.If, nodes.CondExpr)) else None
                if simple:
                    for field_name, values in simple.items():
                        condition.branches += [
                            Branch(f"{field_name} {v}", _pick(audience, **{field_name: v})) for v in values
                        ]
                        condition.branches.append(
                            Branch(f"{field_name}: everything else", _pick_excluding(audience, field_name, values))
                        )
                elif (
                    isinstance(node, (nodes.If, nodes.CondExpr))
                    and len(depends) == 1
                    and depends[0].removeprefix("developer.") in QUERYABLE
                    and not any(
                        n.name not in ("developer", "memo") and n.ctx == "load" for n in test.find_all(nodes.Name)
                    )
                ):
                    condition.branches, condition.note = _evaluate(
                        memo, environment, test, depends[0].removeprefix("developer."), audience, deadline
                    )
                else:
                    condition.note = (
                        "its versions cannot be listed here: preview developers that differ in these values"
                    )
                conditions.append(condition)
    return conditions
