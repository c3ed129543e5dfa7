"""Reading an evidence export (`export_evidence --format json`) a piece at a time.

A million-recipient memo's export holds a million recipients and two million chain
records (each email's event and status change), over a gigabyte of JSON: `json.load` would hold all of it as Python objects
(many times the file's size). Here the document's top-level members come one after
another, and the big arrays ("recipients", "chain") as iterators over their elements,
each element decoded alone, so verifying an export needs memory for one element, not
for the file. Standard JSON only; no model, no database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

STREAMED = frozenset({"cases", "recipients", "chain"})
CHUNK = 1 << 20
LARGEST_VALUE = 64 << 20  # one element of an export is a few kilobytes; stop well before memory runs out
_decoder = json.JSONDecoder()
_SPACE = " \t\n\r"


class ExportError(Exception):
    """The file is not an evidence export: not JSON, or not shaped like one."""


class _Reader:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.consumed = 0  # characters before buf[0], for error positions

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK)
        self.consumed += self.pos
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk
        return bool(chunk)

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def take(self, expected: str) -> None:
        found = self.peek()
        if not found:
            raise ExportError(f"the file ends before the document does (expected {expected!r}): cut short?")
        if found != expected:
            raise ExportError(f"expected {expected!r} at character {self.consumed + self.pos}, found {found!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof or len(self.buf) - self.pos > LARGEST_VALUE:
                    raise ExportError(f"not JSON at character {self.consumed + exc.pos}: {exc.msg}") from None
                self._more()
                continue
            if end == len(self.buf) and self._more():
                continue  # a number may go on in the next chunk
            self.pos = end
            return value

    def array(self) -> Iterator[Any]:
        self.take("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.peek() == ",":
                self.pos += 1
            else:
                self.take("]")
                return


def members(stream: IO[str]) -> Iterator[tuple[str, Any]]:
    """The top-level object's members in the file's order: ("chain", an iterator over
    its records), ("memo", "the-slug"), … An iterator a caller leaves unfinished is read
    to its end before the next member comes."""
    reader = _Reader(stream)
    reader.take("{")
    if reader.peek() == "}":
        return
    while True:
        key = reader.value()
        if not isinstance(key, str):
            raise ExportError("not an evidence export: the document is not a JSON object")
        reader.take(":")
        if key in STREAMED and reader.peek() == "[":
            elements = reader.array()
            yield key, elements
            for _ in elements:
                pass
        else:
            yield key, reader.value()
        if reader.peek() == ",":
            reader.pos += 1
            continue
        reader.take("}")
        if reader.peek():
            raise ExportError(f"more after the document's end, at character {reader.consumed + reader.pos}")
        return
