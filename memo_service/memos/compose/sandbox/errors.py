"""A failed render told to a person: what went wrong, and on which line of the template."""

from __future__ import annotations

import traceback

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import SecurityError


def template_line(exc: BaseException) -> int | None:
    """The template line an exception was raised on, when Jinja's traceback says."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"not allowed: {exc}"
    if isinstance(exc, MemoryError):
        return "uses too much memory"
    if isinstance(exc, TemplateError):
        return str(exc.message if exc.message else exc)
    return f"{type(exc).__name__}: {exc}"
