"""Template errors in the admin's words: Jinja's "'dict object' has no attribute
'contry_name'" becomes "developer.contry_name is not a variable: did you mean
developer.country_name?", naming the variable as written and the nearest known one."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_NO_ATTRIBUTE = re.compile(r"'[\w ]+ object' has no attribute '(\w+)'")
_UNDEFINED = re.compile(r"'(\w+)' is undefined")


def explain_undefined(error: str, source: str, line: int | None, known: Iterable[str]) -> str:
    """The error reworded when it is about an unknown variable; unchanged otherwise.
    `known` are the documented names ("developer.country_name", "ack_url", …)."""
    known = list(known)
    if m := _NO_ATTRIBUTE.search(error):
        attribute = m.group(1)
        lines = source.splitlines()
        text = lines[line - 1] if line and 0 < line <= len(lines) else source
        written = re.search(rf"([\w.]+)\.{attribute}\b", text)
        name = f"{written.group(1)}.{attribute}" if written else attribute
        candidates = [k for k in known if "." in k and (not written or k.startswith(written.group(1) + "."))] or known
        return _said(name, _nearest(name, attribute, candidates), known)
    if m := _UNDEFINED.search(error):
        name = m.group(1)
        top = sorted({k.split(".")[0] for k in known})  # developer, memo, ack_url: a typo of one of these first
        nearest = difflib.get_close_matches(name, top, n=1, cutoff=0.6)
        return _said(name, nearest[0] if nearest else _nearest(name, name, known), known)
    return error


def _nearest(name: str, last: str, candidates: list[str]) -> str | None:
    by_last = {c.rsplit(".", 1)[-1]: c for c in candidates}
    close = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.6)
    if close:
        return by_last[close[0]]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _said(name: str, nearest: str | None, known: list[str]) -> str:
    if nearest:
        return f"{name} is not a variable: did you mean {nearest}?"
    return f"{name} is not a variable; the variables are {', '.join(known)}"
