"""Checks of what an operation would build, made before it runs: the filters, operators
and methods whose result can be far bigger than their arguments, in C code the budget
never sees (a join, a replace, a repeated string, a power, a padded strftime)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

from jinja2.runtime import LoopContext
from jinja2.sandbox import SecurityError

from .budget import spend
from .charges import checked, counted, made, weight
from .limits import (
    MAX_OUTPUT_CHARS,
    MAX_POWER_BITS,
    MAX_RANGE,
    MAX_STRFTIME_FORMAT,
    MAX_SUMMED_SEQUENCES,
    MAX_VALUE_CHARS,
    STRFTIME_WIDTH,
    TemplateTooBig,
)

# --- filters and range() -----------------------------------------------------------


def _join_size(value: Any, d: str = "", attribute: Any = None) -> None:
    items = list(value)
    if sum(map(weight, items)) + len(d) * len(items) > MAX_VALUE_CHARS:
        raise TemplateTooBig(f"a joined value may be at most {MAX_VALUE_CHARS:,} characters long")


def _replace_size(s: Any, old: Any, new: Any, count: int | None = None) -> None:
    s, old, new = str(s), str(old), str(new)
    times = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    if len(s) + times * (len(new) - len(old)) > MAX_VALUE_CHARS:
        raise TemplateTooBig(f"a replaced value may be at most {MAX_VALUE_CHARS:,} characters long")


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
# before they run (operators and methods below, range() by safe_range).
_FILTER_SIZE_CHECKS: dict[str, Callable[..., None]] = {
    "join": _join_size,
    "replace": _replace_size,
    "sum": _sum_size,
    "batch": _count_arg("linecount", "batch()'s line count"),
    "slice": _count_arg("slices", "slice()'s number of slices"),
}


def guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, each use an operation, its arguments and result checked and charged,
    and its result's size checked first when it can be far bigger than its arguments."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    size_check = _FILTER_SIZE_CHECKS.get(name)

    @functools.wraps(func)  # keeps jinja_pass_arg: the context still comes first
    def guarded(*args: Any, **kwargs: Any) -> Any:
        spend()
        values = args[1:] if pass_arg is not None else args
        for value in (*values, *kwargs.values()):
            checked(value)
        if size_check is not None:
            if values and not isinstance(values[0], (str, list, tuple, dict)):
                values = (list(counted(values[0])), *values[1:])  # a generator, once
                args = (*args[:1], *values) if pass_arg is not None else values
            size_check(*values, **kwargs)
        return made(func(*args, **kwargs))

    return guarded


def safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateTooBig(f"range() is limited to {MAX_RANGE:,} items")
    return rng


# --- arithmetic operators ----------------------------------------------------------


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _power_size(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if right > 0 and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
            raise TemplateTooBig("the result of ** is too large")


def _product_size(left: Any, right: Any) -> None:
    """A product of two numbers, or a string or list repeated."""
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_POWER_BITS:
        raise TemplateTooBig("the result of * is too large")
    size = max(weight(left), weight(right)) if _sized(left) or _sized(right) else 0
    times = right if _sized(left) else left
    if size and isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
        raise TemplateTooBig(f"a repeated value may be at most {MAX_OUTPUT_CHARS:,} long")


def _sum_operands(left: Any, right: Any) -> None:
    """Strings or lists added up: each must be a value a template may use."""
    if _sized(left) or _sized(right):
        checked(left)
        checked(right)


def _no_string_formatting(left: Any, right: Any) -> None:
    if isinstance(left, str):
        raise SecurityError("'%' string formatting is not allowed; use ~ to join text")


# The operators whose result can be far bigger than their operands, or that format
# text: checked before they run. The others are only an operation.
_BINOP_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "**": _power_size,
    "*": _product_size,
    "+": _sum_operands,
    "%": _no_string_formatting,
}


def check_binop(op: str, left: Any, right: Any) -> None:
    check = _BINOP_CHECKS.get(op)
    if check is not None:
        check(left, right)


# --- calls -------------------------------------------------------------------------


def checked_call_args(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """A call's positional arguments as the call is to get them, once what the call would
    build is checked: a recursive loop's children counted, a string's join and replace
    sized, a date's strftime format bounded."""
    if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
        args = (counted(args[0]), *args[1:])
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, (str, bytes)) and args:
        args = _string_method_args(owner, getattr(obj, "__name__", ""), args, kwargs)
    if isinstance(owner, (dt.date, dt.time)) and getattr(obj, "__name__", "") == "strftime" and args:
        _strftime_format(args[0])
    return args


def _string_method_args(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    if name == "join":
        args = (list(counted(args[0])), *args[1:])
        _join_size(args[0], owner if isinstance(owner, str) else owner.decode(errors="replace"))
    elif name == "replace" and len(args) >= 2:
        _replace_size(owner, *args[:2], *(args[2:3] or [kwargs.get("count")]))
    return args


def _strftime_format(fmt: Any) -> None:
    if len(str(fmt)) > MAX_STRFTIME_FORMAT or STRFTIME_WIDTH.search(str(fmt)):
        raise TemplateTooBig(
            f"a strftime() format may be {MAX_STRFTIME_FORMAT} characters long, with field widths of two digits"
        )
