"""The budget of one render: operations (calls, attribute and item lookups, operators,
loop iterations), a wall-clock deadline checked at each of them, and the characters it
may create in all (output, captured blocks, joined and repeated strings and lists).

`render_limited` opens a budget for the render it runs; the sandbox's hooks charge it
(`spend` an operation, `create` characters), and a render over budget fails alone with
RenderLimit, in the same process."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from .limits import MAX_OUTPUT_CHARS, TemplateTooBig

# A real memo makes a few dozen operations; a loop over MAX_RANGE items doing five
# lookups each makes 50,000, and 500,000 leaves tenfold room. Half a second is far more
# than a real render takes, and short enough that a page, or a send batch, survives a
# template that spends it for every developer.
MAX_OPERATIONS = 500_000
RENDER_SECONDS = 0.5
# All a render makes together, output included, at most ten times what an email may be:
# about 20 MB in the worst case (4 bytes a character).
MAX_CREATED_CHARS = 10 * MAX_OUTPUT_CHARS


class RenderLimit(TemplateTooBig):
    """A render went over its budget (render_limited)."""


class _Budget:
    __slots__ = ("created", "deadline", "operations")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.operations = 0
        self.created = 0


# The budget of the render running in this thread or task; None outside a render (Jinja
# folds constants at compile time through the same hooks).
_budget: ContextVar[_Budget | None] = ContextVar("memo_render_budget", default=None)


def spend() -> None:
    """One operation, charged to the render running (if any)."""
    budget = _budget.get()
    if budget is None:
        return
    budget.operations += 1
    if budget.operations > MAX_OPERATIONS:
        raise RenderLimit(f"too many operations (more than {MAX_OPERATIONS:,} in one render)")
    if time.monotonic() > budget.deadline:
        raise RenderLimit(f"takes too long to render (more than {RENDER_SECONDS} s)")


def create(chars: int) -> None:
    """`chars` characters made, charged to the render running (if any)."""
    budget = _budget.get()
    if budget is not None:
        budget.created += chars
        if budget.created > MAX_CREATED_CHARS:
            raise RenderLimit(f"makes too much text (more than {MAX_CREATED_CHARS:,} characters in one render)")


def render_limited(template: Any, context: dict[str, Any]) -> str:
    """Render on a budget of operations, time and characters made, refusing output past
    MAX_OUTPUT_CHARS as soon as it is exceeded. Raises RenderLimit (a SecurityError) for
    a render over budget."""
    parts: list[str] = []
    size = 0
    token = _budget.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateTooBig(f"the output is longer than {MAX_OUTPUT_CHARS:,} characters")
            parts.append(chunk)
    finally:
        _budget.reset(token)
    return "".join(parts)
