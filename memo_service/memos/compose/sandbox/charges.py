"""What a render is charged for, and the values it is refused: each loop item is an
operation, each value the template makes costs its weight in characters, and a value
heavier than MAX_VALUE_CHARS is refused before it is used."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from jinja2.runtime import Namespace

from .budget import create, spend
from .limits import MAX_VALUE_CHARS, TemplateTooBig

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


def weight(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
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


def checked(value: Any) -> Any:
    """A value about to be used (printed, joined, passed to a filter): refused if too big."""
    if type(value) is str and len(value) <= MAX_VALUE_CHARS:  # nearly always: no more to do
        return value
    if weight(value) > MAX_VALUE_CHARS:
        raise TemplateTooBig(f"a value may be at most {MAX_VALUE_CHARS:,} characters long")
    return value


def made(value: Any) -> Any:
    """A value the template just made: charged to the render's budget."""
    create(weight(checked(value)))
    return value


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each iteration an operation."""
    for item in iterable:
        spend()
        yield item


class CountingBuffer(list):
    """Where Jinja collects captured output ({% set %}…{% endset %}, macros, filter and
    call blocks): each piece is charged when it is added."""

    def append(self, item: Any) -> None:
        create(len(item))
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        items = tuple(items)
        create(sum(map(len, items)))
        super().extend(items)
