"""One row's cells into a Developer's values: each converter says what is wrong with a bad cell."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone, translation
from django.utils.dateparse import parse_date, parse_datetime
from django_countries import countries

REQUIRED = ("external_id", "email", "country")
OPTIONAL = ("name", "organization", "org_contact_email", "language", "is_active", "last_active_at", "attributes")
COLUMNS = REQUIRED + OPTIONAL
MAX_EMAIL = 254  # RFC 5321's limit on a forward path
MAX_TEXT = {"external_id": 100, "name": 200, "organization": 200}
TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f"}
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
# export_developers prefixes cells like these with ' (formula-injection guard); undo it.
ESCAPED_FORMULA = re.compile(r"^'[=+\-@\t\r]")
EARLIEST, LATEST = dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)
# Attributes are an account's facts ({"plan": "pro", "limits": {"rpm": 600}}): 20 levels
# is far past any real use, and keeps every later walk of them (JSON encoding, the
# database's JSON functions, a template) short.
MAX_ATTRIBUTE_DEPTH = 20


def text_cell(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return text[1:] if ESCAPED_FORMULA.match(text) else text


@functools.lru_cache(maxsize=4096)  # a million rows name a few hundred countries
def _country_code(value: str) -> str:
    code = countries.alpha2(value) if len(value) <= 3 else ""
    if not code:
        with translation.override("en"):
            code = countries.by_name(value) or ""
    return code


def _country(value: str) -> str:
    code = _country_code(value)
    if not code:
        raise ValueError(f"unknown country {value!r} (use alpha-2, alpha-3 or the English name)")
    return code


def _email(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("invalid email: contains a line break")
    if len(value) > MAX_EMAIL:
        raise ValueError(f"invalid email: longer than {MAX_EMAIL} characters")
    try:
        validate_email(value)
    except ValidationError:
        raise ValueError(f"invalid email {value!r}") from None
    return value


def _language(value: str) -> str:
    code = value.lower().replace("_", "-")
    if not code:
        return "en"
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        if LANGUAGE_RE.match(code):
            return code  # kept; they get the English text until there is a translation
        raise ValueError(f"invalid language code {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = text_cell(value).lower()
    if text in TRUE or text == "":
        return True
    if text in FALSE:
        return False
    raise ValueError(f"is_active must be true or false, not {value!r}")


def _datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    text = text_cell(value)
    if not text:
        return None
    try:
        parsed = parse_datetime(text)
        if parsed is None and (day := parse_date(text)) is not None:
            parsed = dt.datetime.combine(day, dt.time())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"last_active_at {text!r} is not an ISO 8601 date or time")
    if not (EARLIEST <= parsed.replace(tzinfo=None) <= LATEST):
        raise ValueError(f"last_active_at {text!r} is not between {EARLIEST.year} and {LATEST.year}")
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.UTC)


def _json_problem(value: Any) -> str:
    """Why a parsed JSON value cannot be stored ('' if it can): NaN and Infinity are not
    JSON (Python reads and writes them, the database refuses them), and nesting is capped."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "attributes contain NaN or Infinity, which JSON does not allow"
        if isinstance(item, (dict, list)):
            if depth > MAX_ATTRIBUTE_DEPTH:
                return f"attributes are nested more than {MAX_ATTRIBUTE_DEPTH} levels deep"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return ""


def _attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        if problem := _json_problem(value):
            raise ValueError(problem)
        if "\\u0000" in json.dumps(value):
            raise ValueError("attributes contain a NUL character")
        return value
    text = text_cell(value)
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise ValueError(f"attributes are nested more than {MAX_ATTRIBUTE_DEPTH} levels deep") from None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError("attributes must be a JSON object")
    if problem := _json_problem(parsed):
        raise ValueError(problem)
    return parsed


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "external_id": text_cell,
    "email": lambda v: _email(text_cell(v)),
    "country": lambda v: _country(text_cell(v)),
    "name": text_cell,
    "organization": text_cell,
    "org_contact_email": lambda v: _email(text_cell(v)) if text_cell(v) else "",
    "language": lambda v: _language(text_cell(v)),
    "is_active": _bool,
    "last_active_at": _datetime,
    "attributes": _attributes,
}


def developer_clean(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Validate one incoming account. Returns (model values, reasons it is invalid).

    Only the keys present in `raw` are returned, so a missing column is left as it is;
    keys that are not columns go to `attributes`.
    """
    # PostgreSQL cannot store NUL in text or JSON; nobody means to send one.
    if any(isinstance(v, str) and "\x00" in v for v in raw.values()) or "\x00" in "".join(raw):
        return {}, ["contains a NUL character"]
    missing = [f"{name} is required" for name in REQUIRED if not text_cell(raw.get(name))]
    values, errors = _columns_convert(raw)
    extra = {k: text_cell(v) for k, v in raw.items() if k not in CONVERTERS and k}
    if extra:
        values["attributes"] = {**values.get("attributes", {}), **extra}
    return values, missing + errors


def _columns_convert(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the values of `raw`'s columns, what is wrong with them) in `raw`'s order. A
    required column left empty is skipped (it is reported missing); a value over its
    length limit is kept, and reported."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    for name, value in raw.items():
        convert = CONVERTERS.get(name)
        if convert is None or (name in REQUIRED and not text_cell(value)):
            continue
        try:
            values[name] = convert(value)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        limit = MAX_TEXT.get(name)
        if limit and len(values[name]) > limit:
            errors.append(f"{name} is longer than {limit} characters")
    return values, errors
