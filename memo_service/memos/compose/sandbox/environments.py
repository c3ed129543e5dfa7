"""The sandbox itself: MemoSandbox, Jinja's immutable sandbox with its hooks charging
each render's budget and checking what an operation would build; the two environments
(HTML autoescaped, text not) and the compiled templates each process keeps."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, ClassVar

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .budget import spend
from .charges import CountingBuffer, checked, counted, made
from .compiler import MemoCodeGenerator
from .limits import BLOCKED_METHODS, REMOVED_FILTERS, REMOVED_GLOBALS
from .size_checks import check_binop, checked_call_args, guarded_filter, safe_range

TEMPLATE_FIELDS = ("subject", "html_body", "text_body")
REMINDER_FIELDS = ("reminder_subject", "reminder_html", "reminder_text")

_DICT_ATTRIBUTES = frozenset(dir(dict))


class MemoSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, immutable (a template cannot change the values it is given, such
    as the developer's address), with every render on a budget (budget.render_limited)
    and limits on what builds big values in C code (size_checks.py)."""

    code_generator_class = MemoCodeGenerator
    # Every arithmetic operator goes through call_binop, so each is an operation.
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    _binops: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {
        "+": operator.add,
        "-": operator.sub,
        "*": operator.mul,
        "/": operator.truediv,
        "//": operator.floordiv,
        "%": operator.mod,
        "**": operator.pow,
    }
    blocked_methods = BLOCKED_METHODS

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, finalize=checked, **options)
        for name in REMOVED_GLOBALS:
            self.globals.pop(name, None)
        self.globals["range"] = safe_range
        for name in REMOVED_FILTERS:
            self.filters.pop(name, None)
        self.filters = {name: guarded_filter(name, func) for name, func in self.filters.items()}

    # Called by the compiled template (MemoCodeGenerator).
    counted = staticmethod(counted)
    checked = staticmethod(checked)
    made = staticmethod(made)
    output_buffer = CountingBuffer

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        spend()
        check_binop(op, left, right)
        return made(self._binops[op](left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        spend()
        # The context's plain values (developer.name): a key that is not also a dict method
        # is what Jinja would return, found without its attribute lookups.
        if type(obj) is dict and attribute in obj and attribute not in _DICT_ATTRIBUTES:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        spend()
        return super().getitem(obj, argument)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        spend()
        for value in (*args, *kwargs.values()):
            checked(value)
        args = checked_call_args(obj, args, kwargs)
        return made(super().call(context, obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> None:
        # Jinja hands out a sandboxed str.format before asking is_safe_attribute; here
        # format is refused like the other padding methods ("{:>999999999}" is a GB).
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, (str, bytes, int)) and attr in self.blocked_methods:
            return False
        return super().is_safe_attribute(obj, attr, value)


# HTML is autoescaped; subject and text are plain text and must not be.
html_env = MemoSandbox(autoescape=True)
text_env = MemoSandbox(autoescape=False)


def environment_for(field: str) -> MemoSandbox:
    return html_env if field in ("html_body", "reminder_html") else text_env


# Compiling costs far more than rendering, and the developer's page renders a memo per
# request: each process compiles a source once. 128 covers every language and field of
# the memos being sent and answered at any one time.
@functools.lru_cache(maxsize=128)
def _compiled(html: bool, source: str) -> Any:
    return (html_env if html else text_env).from_string(source)


def template_for(field: str, source: str) -> Any:
    """The compiled template for a field's source, from this process's cache."""
    return _compiled(environment_for(field) is html_env, source)
