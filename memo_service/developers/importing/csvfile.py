"""A CSV file of developer accounts read row by row, with its problems as a whole (encoding,
header) raised and each bad line handed on marked."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO

from memo_service.developers.importing.cells import REQUIRED

# A header names a dozen columns; 64 KiB is far past any real one, and a file whose first
# line is longer is not a CSV with a header: it is refused once that much is read, never
# read whole into memory.
MAX_HEADER_CHARS = 65_536


class ImportFileError(Exception):
    """The file as a whole cannot be read (encoding, header)."""


def _sniff_delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","


def read_csv(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and an iterator of (line number, row) from a UTF-8 CSV (BOM optional,
    comma or semicolon). Rows with the wrong number of cells come with a '__error__' key."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        header_line = text.readline(MAX_HEADER_CHARS + 1)
    except UnicodeDecodeError:
        raise ImportFileError("the file is not UTF-8 text") from None
    if len(header_line) > MAX_HEADER_CHARS:
        raise ImportFileError(
            f"line 1: the header is longer than {MAX_HEADER_CHARS:,} characters; "
            f"the first line must name the columns ({', '.join(REQUIRED)}, …)"
        )
    delimiter = _sniff_delimiter(header_line)
    try:
        header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ImportFileError(f"the header must name the columns {', '.join(REQUIRED)}; missing: {', '.join(missing)}")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ImportFileError(f"the header repeats the columns {', '.join(duplicated)}")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        reader = csv.reader(text, delimiter=delimiter)
        line = 2
        try:
            for cells in reader:
                if cells:
                    if len(cells) != len(header):
                        yield (
                            line,
                            {
                                "__error__": f"expected {len(header)} cells, found {len(cells)}",
                                "external_id": dict(zip(header, cells, strict=False)).get("external_id", ""),
                            },
                        )
                    else:
                        yield line, dict(zip(header, cells, strict=True))
                line = reader.line_num + 2
        except UnicodeDecodeError:
            raise ImportFileError(f"the file is not UTF-8 text (near line {line})") from None
        except csv.Error as exc:
            raise ImportFileError(f"line {line}: {exc}") from None

    return header, rows()
