"""Rendering by substitution: a memo rendered once, each recipient's values joined in.

Most memos only print the developer's values ("Dear {{ developer.name }}") and never
test or transform them. Such a template's output is fixed text with each value put in
at fixed places, so it is rendered once per language with a placeholder for every value
(the skeleton), and each recipient's email is the skeleton with their values joined in:
the same text as a full render, for a small part of its cost. A batching provider can
then be handed the skeleton once and only the values per recipient (sending.py).

Which templates qualify is decided from Jinja's syntax tree, not guessed from output:
every use of `developer` and `ack_url` must print a value as it is, outside any macro,
filter block or autoescape switch. Anything else (`{% if developer.country == "CN" %}`,
`{{ developer.name|upper }}`, `{% set d = developer %}`) renders in full for everyone.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jinja2 import nodes
from markupsafe import escape

from memo_service.backends.base import MergeFields

# What a template sees of a developer (context.developer_context), then the link.
DEVELOPER_KEYS = (
    "name",
    "organization",
    "email",
    "external_id",
    "country",
    "country_name",
    "language",
    "traffic_countries",
    "traffic_summary",
)
# How many values a Delivery's stored values hold when they lack the traffic's: the
# first of DEVELOPER_KEYS (context.values_from_stored).
EARLIER_KEYS = 7
SLOTS = (*DEVELOPER_KEYS, "ack_url")
# Placeholders: private-use characters around a random nonce and the slot, so that no
# escaping touches them and no memo text or value can pass for one.
_OPEN, _CLOSE = "\ue000", "\ue001"
# Output inside these goes straight to the email; inside anything else (a filter block,
# a `{% set %}` block, a macro, a block that `self` can print again, a recursive loop)
# it may be captured, tested or transformed.
_PASSES_OUTPUT_THROUGH = (nodes.Template, nodes.Output, nodes.If, nodes.With, nodes.For)

Parts = tuple[str | int, ...]  # literal text, or the index of a value in SLOTS


def placeholder_values(nonce: str) -> tuple[dict[str, str], str]:
    """(developer context, ack_url) made of placeholders, to render a skeleton with."""
    developer = {key: f"{_OPEN}{nonce}:{n}{_CLOSE}" for n, key in enumerate(DEVELOPER_KEYS)}
    return developer, f"{_OPEN}{nonce}:{len(DEVELOPER_KEYS)}{_CLOSE}"


def _printed_as_is(expr: nodes.Node, names: frozenset[str]) -> nodes.Name | None:
    """The value-carrying name an output expression prints unchanged, if it does."""
    if isinstance(expr, nodes.Name) and expr.name in names and expr.name != "developer":
        return expr
    if isinstance(expr, nodes.Getattr):
        key: object = expr.attr
    elif isinstance(expr, nodes.Getitem) and isinstance(expr.arg, nodes.Const):
        key = expr.arg.value
    else:
        return None
    target = expr.node
    if isinstance(target, nodes.Name) and target.name == "developer" and key in DEVELOPER_KEYS:
        return target
    return None


# The names that carry a recipient's values: in a memo's templates, and in our layout
# (which also gets the rendered subject and body).
MEMO_NAMES = frozenset({"developer", "ack_url"})
LAYOUT_NAMES = frozenset({"ack_url", "subject", "body"})


def substitution_only(templates: Iterable[nodes.Template], names: frozenset[str] = MEMO_NAMES) -> bool:
    """True when every use of `names` in these parsed templates prints a value as it is."""
    for template in templates:
        allowed: set[int] = set()

        def visit(node: nodes.Node, transforming: bool) -> None:
            passes = isinstance(node, _PASSES_OUTPUT_THROUGH) and not getattr(node, "recursive", False)
            transforming = transforming or not passes
            if isinstance(node, nodes.Output) and not transforming:
                for expr in node.nodes:
                    name = _printed_as_is(expr, names)
                    if name is not None and name.ctx == "load":
                        allowed.add(id(name))  # noqa: B023  (visit runs within this iteration)
            for child in node.iter_child_nodes():
                visit(child, transforming)

        visit(template, False)
        for name in template.find_all(nodes.Name):
            if name.name in names and id(name) not in allowed:
                return False
    return True


@dataclass(frozen=True)
class Skeleton:
    """An email with placeholders where each recipient's values go."""

    subject: Parts
    html: Parts
    text: Parts
    subject_slots: frozenset[int]
    length: int  # of the fixed text, all three fields together

    @classmethod
    def parse(cls, nonce: str, subject: str, html: str, text: str) -> Skeleton | None:
        """From an email rendered with placeholder_values(nonce); None if a stray
        placeholder character shows that the memo's own text got in the way."""
        pattern = re.compile(f"{_OPEN}{re.escape(nonce)}:(\\d+){_CLOSE}")
        fields = [_split(pattern, value) for value in (subject, html, text)]
        for parts in fields:
            if any(isinstance(p, str) and (_OPEN in p or _CLOSE in p) for p in parts):
                return None
            if any(isinstance(p, int) and p >= len(SLOTS) for p in parts):
                return None
        subject_parts, html_parts, text_parts = fields
        return cls(
            subject_parts,
            html_parts,
            text_parts,
            subject_slots=frozenset(p for p in fields[0] if isinstance(p, int)),
            length=sum(len(p) for parts in fields for p in parts if isinstance(p, str)),
        )

    def fits(self, values: tuple[str, ...]) -> bool:
        """A subject is one line with single spaces (rendering.render_parts), so a value
        printed there must already be one: non-empty, single-spaced, nothing at its ends.
        Any other value fits anywhere."""
        return all(isinstance(v, str) for v in values) and all(
            values[n] and " ".join(values[n].split()) == values[n] for n in self.subject_slots
        )

    def fill_size(self, values: tuple[str, ...]) -> int:
        """At most how long the filled email is (HTML escaping makes a value up to 5 times longer)."""
        lengths = [len(v) for v in values]
        return self.length + sum(
            5 * lengths[p] for parts in (self.subject, self.html, self.text) for p in parts if isinstance(p, int)
        )

    def escape(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """The values as the HTML prints them, escaped as Jinja's autoescape does; one the
        HTML does not print is left as it is. Once per recipient, for fill, text_hash and
        merge_values alike: escaping every value for each of them would cost more than
        the hash."""
        return tuple(html_escape(v) if n in self._html_slots else v for n, v in enumerate(values))

    def fill(self, values: tuple[str, ...], escaped: tuple[str, ...]) -> tuple[str, str, str]:
        """(subject, html, text) for one recipient: HTML gets the values escaped
        (`escape`), subject and text get them as they are."""
        return join(self.subject, values), join(self.html, escaped), join(self.text, values)

    def text_hash(self, values: tuple[str, ...], escaped: tuple[str, ...]) -> str:
        """emails.email_text_hash of fill(values, escaped), from the three fields
        joined as one string (a send hashes every recipient's): one encode and one
        digest update, not one per part."""
        filled = values + escaped
        hashed = "".join([filled[part] if isinstance(part, int) else part for part in self._hashed])
        return hashlib.sha256(hashed.encode()).hexdigest()

    @functools.cached_property
    def _hashed(self) -> tuple[str | int, ...]:
        """What email_text_hash hashes, in parts: subject, text and HTML, each ended by a
        NUL, each run of fixed text as one string; a value as its index in values +
        escaped (the HTML's escaped)."""
        hashed: list[str | int] = []
        for parts, offset in ((self.subject, 0), (self.text, 0), (self.html, len(SLOTS))):
            for part in (*parts, "\0"):
                if isinstance(part, int):
                    hashed.append(offset + part)
                elif hashed and isinstance(hashed[-1], str):
                    hashed[-1] += part
                else:
                    hashed.append(part)
        return tuple(hashed)

    def merge_template(self, fields: MergeFields) -> tuple[str, str, str] | None:
        """(subject, html, text) with the provider's merge field for each value
        (`fields`, e.g. Mailgun's "%recipient.X%" in all three): HTML's are named h<n>, the
        others v<n>. None when the memo's own text already looks like a merge field."""
        for parts, field in ((self.subject, fields.subject), (self.html, fields.html), (self.text, fields.text)):
            if any(isinstance(p, str) and (field.reserved or field.before) in p for p in parts):
                return None
        slots = range(len(SLOTS))
        return (
            join(self.subject, tuple(fields.subject.format(f"v{n}") for n in slots)),
            join(self.html, tuple(fields.html.format(f"h{n}") for n in slots)),
            join(self.text, tuple(fields.text.format(f"v{n}") for n in slots)),
        )

    def merge_values(self, values: tuple[str, ...], escaped: tuple[str, ...]) -> dict[str, str]:
        """One recipient's values under the names merge_template gave them."""
        merged = {name: values[n] for name, n in self._merge_plain}
        merged.update((name, escaped[n]) for name, n in self._merge_html)
        return merged

    @functools.cached_property
    def _merge_plain(self) -> list[tuple[str, int]]:
        return [(f"v{n}", n) for n in sorted({p for p in (*self.subject, *self.text) if isinstance(p, int)})]

    @functools.cached_property
    def _merge_html(self) -> list[tuple[str, int]]:
        return [(f"h{n}", n) for n in sorted({p for p in self.html if isinstance(p, int)})]

    @functools.cached_property
    def _html_slots(self) -> frozenset[int]:
        return frozenset(p for p in self.html if isinstance(p, int))


_NEEDS_ESCAPING = re.compile("[&<>\"']")


def html_escape(value: str) -> str:
    """markupsafe's escape, as Jinja's autoescape prints a value; a value with nothing
    to escape (most names and addresses) is returned as it is, without making Markup."""
    return str(escape(value)) if _NEEDS_ESCAPING.search(value) else value


def join(parts: Parts, values: tuple[str, ...]) -> str:
    return "".join(values[p] if isinstance(p, int) else p for p in parts)


def _split(pattern: re.Pattern[str], rendered: str) -> Parts:
    # re.split alternates text and the captured index: text, index, text, …, text.
    pieces = pattern.split(rendered)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(pieces) if i % 2 or p)
