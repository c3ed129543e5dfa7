"""What a parsed template's text depends on among developer values: read from Jinja's
syntax tree, directly or through what was computed from them (a variable, a namespace's
attribute, a loop, a macro's parameters, a `set` block), and whatever decides what text
comes out: a test, a loop, a lookup, a filter told what to look for, and any printed
expression that does more than print a value (`and`/`or`, arithmetic, string
multiplication, a call). decisions.py says how each one's versions are found."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jinja2 import nodes

# Names a template gets whose values differ from one developer to the next (the link is
# one constant placeholder to templates: links.link_placeholder).
PER_DEVELOPER = frozenset({"developer"})
# What assigns a variable: {% set %}, a loop's target, `with`, a `set` block, a macro's
# parameters. (A call block's parameters are not followed.)
_ASSIGNING = (nodes.Assign, nodes.For, nodes.With, nodes.AssignBlock, nodes.Macro)


def value_ref(expr: nodes.Node) -> str | None:
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
            ref = value_ref(node)
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
        """One pass over the template's assignments, each target tainted with what its
        value depends on; whether any took on something new."""
        changed = False
        for node in self.tree.find_all(_ASSIGNING):
            changed |= self._follow(node)
        return changed

    def _follow(self, node: nodes.Node) -> bool:
        if isinstance(node, nodes.Assign):
            ref = value_ref(node.node)
            return self._taint(node.target, self.depends(node.node), ref if ref and ref != "developer" else None)
        if isinstance(node, nodes.For):
            return self._taint(node.target, self.depends(node.iter))
        if isinstance(node, nodes.With):
            return self._follow_with(node)
        if isinstance(node, nodes.AssignBlock):
            return self._taint(node.target, set().union(*(self.depends(n) for n in node.body)))
        if isinstance(node, nodes.Macro):
            return self._follow_macro(node)
        return False

    def _follow_with(self, node: nodes.With) -> bool:
        changed = False
        for target, value in zip(node.targets, node.values, strict=True):
            changed |= self._taint(target, self.depends(value))
        return changed

    def _follow_macro(self, macro: nodes.Macro) -> bool:
        """A macro's parameters hold whatever any call passes it."""
        passed: set[str] = set()
        for call in self.tree.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == macro.name:
                for arg in [*call.args, *(kw.value for kw in call.kwargs)]:
                    passed |= self.depends(arg)
        changed = False
        for param in macro.args:
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
            elif isinstance(node, nodes.Getitem) and value_ref(node) is None:
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
        if isinstance(expr, (nodes.TemplateData, nodes.Const)) or value_ref(expr) is not None:
            return True
        if isinstance(expr, nodes.Name):
            return expr.name not in self.tainted or expr.name in self.aliases
        if isinstance(expr, nodes.Filter):
            return not (expr.args or expr.kwargs) and expr.node is not None and self._printed_as_is(expr.node)
        if isinstance(expr, nodes.Concat):
            return all(self._printed_as_is(n) for n in expr.nodes)
        return not self.depends(expr)
