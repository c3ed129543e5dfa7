"""The Jinja2 sandbox admin-written memo templates run in.

Every render of such a template, wherever it runs (the developer's page, preview, the
send-start check, the workers), goes through `render_limited`, which gives it a budget:
operations (calls, attribute and item lookups, operators, loop iterations), a wall-clock
deadline checked at each of them, and the characters it may create in all (output,
captured blocks, joined and repeated strings and lists). The sandbox's hooks charge the
budget and refuse, before it is made, any value past MAX_VALUE_CHARS; a render over
budget fails alone with a clear reason, in the same process, at a cost of well under a
microsecond per operation (a real memo renders in tens of microseconds).

This file imports nothing but the standard library and Jinja2, so that a trial render
can also run it as a script in a child process with memory and time limits
(`python sandbox.py --serve` answers request after request, JSON lines on stdin, each
in a child forked for it): a template that loops
forever or builds a gigabyte string is then a form error, not a hung web server.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, ClassVar

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext, Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# Gmail clips messages over about 100 KB; a body several times that is a mistake.
MAX_OUTPUT_CHARS = 500_000
# Bounds range() so a loop cannot be made long by one call; far above any real list.
MAX_RANGE = 10_000
# A power's result may have at most this many bits (a 1,000-digit number is plenty).
MAX_POWER_BITS = 4096
# One render's budget. A real memo makes a few dozen operations; a loop over MAX_RANGE
# items doing five lookups each makes 50,000, and 500,000 leaves tenfold room. Half a
# second is over ten thousand times a real render (about 36 µs), and short enough that
# a page, or a send batch, survives a template that spends it for every developer.
MAX_OPERATIONS = 500_000
RENDER_SECONDS = 0.5
# No value a template makes may be longer than an email may be (a list counts its items
# and what they print as), and all it makes together, output included, at most ten
# times that: about 20 MB in the worst case (4 bytes a character).
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
MAX_CREATED_CHARS = 10 * MAX_OUTPUT_CHARS
TEMPLATE_FIELDS = ("subject", "html_body", "text_body")
REMINDER_FIELDS = ("reminder_subject", "reminder_html", "reminder_text")


class TemplateTooBig(SecurityError):
    pass


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


def _spend() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.operations += 1
    if budget.operations > MAX_OPERATIONS:
        raise RenderLimit(f"too many operations (more than {MAX_OPERATIONS:,} in one render)")
    if time.monotonic() > budget.deadline:
        raise RenderLimit(f"takes too long to render (more than {RENDER_SECONDS} s)")


def _create(chars: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.created += chars
        if budget.created > MAX_CREATED_CHARS:
            raise RenderLimit(f"makes too much text (more than {MAX_CREATED_CHARS:,} characters in one render)")


# What prints its items: a dict's views too ({{ d.items() }}).
_CONTAINERS: tuple[type[Any], ...] = (
    list,
    tuple,
    dict,
    set,
    frozenset,
    Namespace,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)


def _weight(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters a value prints as: a string its length, a container its
    items and theirs (a list holding one long string 1,000 times prints it 1,000 times).
    Stops counting past `limit`."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 1
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)
        elif isinstance(item, dict):
            total += 2 + len(item)
            if total <= limit:
                stack += item.keys()
                stack += item.values()
        elif isinstance(item, _CONTAINERS):
            total += 2 + len(item)
            if total <= limit:
                stack += item
        else:
            total += 8
    return total


def _checked(value: Any) -> Any:
    """A value about to be used (printed, joined, passed to a filter): refused if too big."""
    if type(value) is str and len(value) <= MAX_VALUE_CHARS:  # nearly always: no more to do
        return value
    if _weight(value) > MAX_VALUE_CHARS:
        raise TemplateTooBig(f"a value may be at most {MAX_VALUE_CHARS:,} characters long")
    return value


def _made(value: Any) -> Any:
    """A value the template just made: charged to the render's budget."""
    _create(_weight(_checked(value)))
    return value


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each iteration an operation."""
    for item in iterable:
        _spend()
        yield item


class _CountingBuffer(list):
    """Where Jinja collects captured output ({% set %}…{% endset %}, macros, filter and
    call blocks): each piece is charged when it is added."""

    def append(self, item: Any) -> None:
        _create(len(item))
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        items = tuple(items)
        _create(sum(map(len, items)))
        super().extend(items)


class MemoCodeGenerator(CodeGenerator):
    """Jinja's compiler, plus the three places the sandbox has no hook for: loop
    iterations, captured output and `~` joins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment.counted(")
        super().visit(node, *args, **kwargs)
        self.write(")")

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # Jinja's own, with each operand checked before it is turned into text, and the
        # result charged.
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.made({func_name}((")
        for arg in node.nodes:
            self.write("environment.checked(")
            self.visit(arg, frame)
            self.write("), ")
        self.write(")))")


def _join_size(value: Any, d: str = "", attribute: Any = None) -> None:
    items = list(value)
    if sum(map(_weight, items)) + len(d) * len(items) > MAX_VALUE_CHARS:
        raise TemplateTooBig(f"a joined value may be at most {MAX_VALUE_CHARS:,} characters long")


def _replace_size(s: Any, old: Any, new: Any, count: int | None = None) -> None:
    s, old, new = str(s), str(old), str(new)
    times = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    if len(s) + times * (len(new) - len(old)) > MAX_VALUE_CHARS:
        raise TemplateTooBig(f"a replaced value may be at most {MAX_VALUE_CHARS:,} characters long")


_STRFTIME_WIDTH = re.compile(r"%[-_0^#]*\d{3,}")
MAX_STRFTIME_FORMAT = 100  # "%A %d %B %Y, %H:%M %Z" is 20
# Adding up lists copies the total so far at each step: 1,000 of them is plenty.
MAX_SUMMED_SEQUENCES = 1_000


def _sum_size(value: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, (int, float)) and len(value) > MAX_SUMMED_SEQUENCES:
        raise TemplateTooBig(f"sum() adds up at most {MAX_SUMMED_SEQUENCES:,} lists or strings")


def _count_arg(parameter: str, limit_name: str) -> Callable[..., None]:
    def check(value: Any, *args: Any, **kwargs: Any) -> None:
        count = args[0] if args else kwargs.get(parameter, 1)
        if not isinstance(count, int) or count > MAX_RANGE:
            raise TemplateTooBig(f"{limit_name} is limited to {MAX_RANGE:,}")

    return check


# Filters whose result can be far bigger than their arguments: their size is checked
# before they run (the `*` operator and range() are checked in the sandbox itself).
_FILTER_SIZE_CHECKS: dict[str, Callable[..., None]] = {
    "join": _join_size,
    "replace": _replace_size,
    "sum": _sum_size,
    "batch": _count_arg("linecount", "batch()'s line count"),
    "slice": _count_arg("slices", "slice()'s number of slices"),
}


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = getattr(func, "jinja_pass_arg", None)
    size_check = _FILTER_SIZE_CHECKS.get(name)

    @functools.wraps(func)  # keeps jinja_pass_arg: the context still comes first
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        values = args[1:] if pass_arg is not None else args
        for value in (*values, *kwargs.values()):
            _checked(value)
        if size_check is not None:
            if values and not isinstance(values[0], (str, list, tuple, dict)):
                values = (list(_counted(values[0])), *values[1:])  # a generator, once
                args = (*args[:1], *values) if pass_arg is not None else values
            size_check(*values, **kwargs)
        return _made(func(*args, **kwargs))

    return guarded


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateTooBig(f"range() is limited to {MAX_RANGE:,} items")
    return rng


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


_DICT_ATTRIBUTES = frozenset(dir(dict))


class MemoSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, immutable (a template cannot change the values it is given, such
    as the developer's address), with every render on a budget (render_limited) and
    limits on what builds big values in C code."""

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
    # Methods that allocate a string as long as their numeric argument, or longer.
    blocked_methods = frozenset(
        {
            "center",
            "ljust",
            "rjust",
            "zfill",
            "expandtabs",
            "format",
            "format_map",
            "translate",
            "maketrans",
            "to_bytes",
        }
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, finalize=_checked, **options)
        # Jinja's defaults minus lipsum (it makes text as long as it is asked to).
        self.globals.pop("lipsum", None)
        self.globals["range"] = _safe_range
        for name in ("center", "format", "indent", "wordwrap"):
            self.filters.pop(name, None)
        self.filters = {name: _guarded_filter(name, func) for name, func in self.filters.items()}

    # Called by the compiled template (MemoCodeGenerator).
    counted = staticmethod(_counted)
    checked = staticmethod(_checked)
    made = staticmethod(_made)
    output_buffer = _CountingBuffer

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        _spend()
        if op == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
                raise TemplateTooBig("the result of ** is too large")
        if op == "*":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_POWER_BITS
            ):
                raise TemplateTooBig("the result of * is too large")
            size = max(_weight(left), _weight(right)) if _sized(left) or _sized(right) else 0
            times = right if _sized(left) else left
            if size and isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
                raise TemplateTooBig(f"a repeated value may be at most {MAX_OUTPUT_CHARS:,} long")
        if op == "+" and (_sized(left) or _sized(right)):
            _checked(left), _checked(right)
        if op == "%" and isinstance(left, str):
            raise SecurityError("'%' string formatting is not allowed; use ~ to join text")
        return _made(self._binops[op](left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _spend()
        # The context's plain values (developer.name): a key that is not also a dict method
        # is what Jinja would return, found without its attribute lookups.
        if type(obj) is dict and attribute in obj and attribute not in _DICT_ATTRIBUTES:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _spend()
        return super().getitem(obj, argument)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _spend()
        for value in (*args, *kwargs.values()):
            _checked(value)
        if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_counted(args[0]), *args[1:])
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, (str, bytes)) and args:
            name = getattr(obj, "__name__", "")
            if name == "join":
                args = (list(_counted(args[0])), *args[1:])
                _join_size(args[0], owner if isinstance(owner, str) else owner.decode(errors="replace"))
            elif name == "replace" and len(args) >= 2:
                _replace_size(owner, *args[:2], *(args[2:3] or [kwargs.get("count")]))
        # C's strftime pads to any width it is given ("%999Y"), into a buffer up to 256
        # times the format's length.
        if (
            isinstance(owner, (dt.date, dt.time))
            and getattr(obj, "__name__", "") == "strftime"
            and args
            and (len(str(args[0])) > MAX_STRFTIME_FORMAT or _STRFTIME_WIDTH.search(str(args[0])))
        ):
            raise TemplateTooBig(
                f"a strftime() format may be {MAX_STRFTIME_FORMAT} characters long, with field widths of two digits"
            )
        return _made(super().call(context, obj, *args, **kwargs))

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


def render_limited(template: Any, context: dict[str, Any]) -> str:
    """Render on a budget of operations, time and characters made (see the top of this
    file), refusing output past MAX_OUTPUT_CHARS as soon as it is exceeded. Raises
    RenderLimit (a SecurityError) for a render over budget."""
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


def _limit_memory(extra_bytes: int) -> None:
    """This process may hold `extra_bytes` more than it already does, and no more."""
    import resource

    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


DONE = json.dumps({"done": True})


def serve() -> None:
    """`python sandbox.py --serve`: Jinja2 is imported once (most of a trial's cost was
    starting Python and importing it); each request, a JSON line on stdin, is rendered by
    a child forked for it alone, under the request's memory limit and a deadline past
    which it is killed, so that one template's memory or time never reaches the next. The
    child prints its results as JSON lines; the line DONE ends each request's."""
    import os
    import signal

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: render, print, leave without running anything else
            try:
                _limit_memory(request["memory_bytes"])
                for result in trial_render(request["jobs"], request["seconds"]):
                    print(json.dumps(result), flush=True)
            finally:
                os._exit(0)
        deadline = time.monotonic() + request["seconds"] * len(request["jobs"]) + 5
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.001)
        print(DONE, flush=True)


if __name__ == "__main__":
    serve()
