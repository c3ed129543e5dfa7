"""What decides a template's text, and how its versions are found: by a query for a
comparison with constants, by evaluating a test on one field, by rendering the whole
template for each value of the one field it depends on; what depends on two fields at
once cannot be listed (such a memo is refused at save and at approval)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

from memo_service.memos.compose import sandbox
from memo_service.memos.compose.template_reader import TemplateReader, value_ref

# Developer values a template sees that are columns of their own, so a branch's
# developer can be looked up by a query (country_name is derived from country).
QUERYABLE = ("name", "organization", "email", "external_id", "country", "language")
NOT_LISTED = "its versions cannot be listed: it depends on more than one developer value at once"


@dataclass
class Decision:
    node: nodes.Node  # where: its line
    test: nodes.Node
    depends: list[str]
    how: str  # "compare" (with constants), "evaluate" (the test alone), "render" (the template), "unlisted"
    simple: dict[str, list[Any]] | None = None
    field: str = ""  # the one field evaluated or rendered for


def _simple_comparisons(test: nodes.Node, reader: TemplateReader) -> dict[str, list[Any]] | None:
    """{field: constants} when the test only compares developer fields (or copies of
    them) with constants, joined by and/or/not; None otherwise."""
    found: dict[str, list[Any]] = {}

    def field_of(expr: nodes.Node) -> str | None:
        ref = value_ref(expr)
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
