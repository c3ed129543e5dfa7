"""The Jinja2 sandbox admin-written memo templates run in.

This file imports nothing but the standard library and Jinja2, so that a trial render
can run it as a script in a child process with memory and time limits
(`python sandbox.py` reads a JSON request on stdin and prints a JSON answer): a
template that loops forever or builds a gigabyte string is then a form error, not a
hung web server.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# Gmail clips messages over about 100 KB; a body several times that is a mistake.
MAX_OUTPUT_CHARS = 500_000
# Bounds range() so a loop cannot be made long by one call; far above any real list.
MAX_RANGE = 10_000
# A power's result may have at most this many bits (a 1,000-digit number is plenty).
MAX_POWER_BITS = 4096
TEMPLATE_FIELDS = ("subject", "html_body", "text_body")
REMINDER_FIELDS = ("reminder_subject", "reminder_html", "reminder_text")


class TemplateTooBig(SecurityError):
    pass


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateTooBig(f"range() is limited to {MAX_RANGE:,} items")
    return rng


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


class MemoSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, immutable (a template cannot change the values it is given, such
    as the developer's address), plus limits on operators that build big values in C."""

    intercepted_binops = frozenset({"*", "**", "%"})
    # Methods that allocate a string as long as their numeric argument.
    blocked_methods = frozenset(
        {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"}
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, **options)
        # Jinja's defaults minus lipsum (it makes text as long as it is asked to).
        self.globals.pop("lipsum", None)
        self.globals["range"] = _safe_range
        for name in ("center", "format", "indent", "wordwrap"):
            self.filters.pop(name, None)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
                raise TemplateTooBig("the result of ** is too large")
        if op == "*":
            size = max(_sized(left), _sized(right))
            times = right if _sized(left) else left
            if size and isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
                raise TemplateTooBig(f"a repeated value may be at most {MAX_OUTPUT_CHARS:,} long")
        if op == "%" and isinstance(left, str):
            raise SecurityError("'%' string formatting is not allowed; use ~ to join text")
        return {"*": operator.mul, "**": operator.pow, "%": operator.mod}[op](left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in self.blocked_methods:
            return False
        return super().is_safe_attribute(obj, attr, value)


# HTML is autoescaped; subject and text are plain text and must not be.
html_env = MemoSandbox(autoescape=True)
text_env = MemoSandbox(autoescape=False)


def environment_for(field: str) -> MemoSandbox:
    return html_env if field in ("html_body", "reminder_html") else text_env


def render_limited(template: Any, context: dict[str, Any]) -> str:
    """Render, refusing output past MAX_OUTPUT_CHARS as soon as it is exceeded."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateTooBig(f"the output is longer than {MAX_OUTPUT_CHARS:,} characters")
        parts.append(chunk)
    return "".join(parts)


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


# --- trial render, run as a child process -----------------------------------------


class TooSlow(Exception):
    def __init__(self, line: int | None) -> None:
        super().__init__("takes too long to render (a runaway loop?)")
        self.line = line


def _budget_tracer(deadline: float, template: Any) -> Callable[..., Any]:
    """A sys.settrace hook that stops a render running past its deadline.

    Python reports a 'line' event for every line of compiled template code, so a loop
    in the template is checked on each iteration; its line maps back to the template.
    """
    def trace(frame: Any, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            line = None
            f = frame
            while f is not None:
                if f.f_code.co_filename == "<template>":
                    line = template.get_corresponding_lineno(f.f_lineno)
                    break
                f = f.f_back
            raise TooSlow(line)
        return trace

    return trace


def _context(raw: dict[str, Any]) -> dict[str, Any]:
    """The JSON context back into the types a real send uses (dates, not strings)."""
    memo = dict(raw["memo"])
    if memo.get("effective_date"):
        memo["effective_date"] = dt.date.fromisoformat(memo["effective_date"])
    if memo.get("ack_deadline"):
        memo["ack_deadline"] = dt.datetime.fromisoformat(memo["ack_deadline"])
    return {**raw, "memo": memo}


def trial_render(jobs: list[dict[str, Any]], seconds: float) -> Iterator[dict[str, Any]]:
    """Compile and render each job ({key, field, source, context}); yields one result each."""
    for job in jobs:
        key, field, source = job["key"], job["field"], job["source"]
        template = None
        try:
            template = environment_for(field).from_string(source)
            sys.settrace(_budget_tracer(time.monotonic() + seconds, template))
            try:
                output = render_limited(template, _context(job["context"]))
            finally:
                sys.settrace(None)
            yield {"key": key, "ok": True, "output_chars": len(output)}
        except TooSlow as exc:
            yield {"key": key, "ok": False, "error": str(exc), "line": exc.line}
        except Exception as exc:  # every failure is reported to the admin, with its line
            yield {"key": key, "ok": False, "error": describe(exc), "line": template_line(exc)}


def main() -> None:
    import resource

    request = json.load(sys.stdin)
    # The limit is on top of what the interpreter already holds.
    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + request["memory_bytes"]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    for result in trial_render(request["jobs"], request["seconds"]):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
