"""A traffic feed read line by line: CSV with a header, or JSON lines, either of them
gzipped; its problems as a whole (encoding, header) raised, and each bad line handed on
with the reason."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from typing import IO, Any, cast

from memo_service.developers.importing.csvfile import MAX_HEADER_CHARS, ImportFileError

GZIP_MAGIC = b"\x1f\x8b"
# A line of a feed names an account, a day, a country or address and a count: far less.
MAX_LINE_CHARS = 65_536

Line = tuple[int, dict[str, str] | str]  # (line number, the line's fields, or why it is bad)


def _text(stream: IO[bytes]) -> io.TextIOWrapper:
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(Any, stream))
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.GzipFile(fileobj=buffered), encoding="utf-8-sig", newline="")
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")


def read_traffic(stream: IO[bytes]) -> Iterator[Line]:
    """(line number, fields) for each line of a CSV or JSON-lines feed, or (line number,
    reason) for one that cannot be read. A JSON-lines feed starts with "{"."""
    text = _text(stream)
    try:
        first = text.readline(MAX_HEADER_CHARS + 1)
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise ImportFileError(_unreadable(exc)) from None
    if len(first) > MAX_HEADER_CHARS:
        raise ImportFileError(f"line 1 is longer than {MAX_HEADER_CHARS:,} characters")
    if first.lstrip().startswith("{"):
        return _json_lines(first, text)
    return _csv_lines(first, text)


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "the file is not UTF-8 text"
    return f"the file cannot be read ({exc})"


def _json_lines(first: str, text: io.TextIOWrapper) -> Iterator[Line]:
    number, line = 1, first
    try:
        while line:
            if line.strip():
                yield number, _json_line(line)
            number += 1
            line = text.readline(MAX_LINE_CHARS + 1)
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        yield number, _unreadable(exc)


def _json_line(line: str) -> dict[str, str] | str:
    if len(line) > MAX_LINE_CHARS:
        return f"longer than {MAX_LINE_CHARS:,} characters"
    try:
        value = json.loads(line)
    except ValueError as exc:
        return f"not JSON ({exc.args[0]})"
    if not isinstance(value, dict):
        return "not a JSON object"
    return {str(k).lower(): "" if v is None else str(v) for k, v in value.items()}


def _csv_lines(header_line: str, text: io.TextIOWrapper) -> Iterator[Line]:
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    if "external_id" not in header:
        raise ImportFileError("the first line must name the columns: external_id, day or timestamp, country or ip")
    if duplicated := sorted({h for h in header if header.count(h) > 1}):
        raise ImportFileError(f"the header repeats the columns {', '.join(duplicated)}")
    number = 1
    reader = csv.reader(text, delimiter=delimiter)
    try:
        for cells in reader:
            number += 1
            if not cells:
                continue
            if len(cells) != len(header):
                yield number, f"{len(cells)} cells where the header names {len(header)}"
                continue
            yield number, dict(zip(header, cells, strict=True))
    except csv.Error as exc:
        yield number + 1, f"not CSV ({exc})"
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        yield number + 1, _unreadable(exc)
