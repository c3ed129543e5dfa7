"""A rendered email, in full or as a skeleton and one recipient's values, and its text hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from memo_service.memos.compose.substitution import Skeleton


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    skeleton: Skeleton | None = None
    values: tuple[str, ...] = ()


class SubstitutedEmail(RenderedEmail):
    """Rendered by substitution: the skeleton and this recipient's values
    (substitution.py). Subject and bodies are joined on first use: a batch call that
    sends the skeleton with each recipient's values never needs them."""

    skeleton: Skeleton  # always set, by __init__

    escaped: tuple[str, ...]  # the values as the HTML prints them (Skeleton.escape)

    def __init__(self, skeleton: Skeleton, values: tuple[str, ...]) -> None:
        object.__setattr__(self, "skeleton", skeleton)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "escaped", skeleton.escape(values))

    def __getattr__(self, name: str) -> str:  # subject, html and text: only until filled
        if name not in ("subject", "html", "text"):
            raise AttributeError(name)
        filled = dict(zip(("subject", "html", "text"), self.skeleton.fill(self.values, self.escaped), strict=True))
        for field, value in filled.items():
            object.__setattr__(self, field, value)
        return filled[name]


def email_text_hash(email: RenderedEmail) -> str:
    """SHA-256 of an email as the recipient got it: subject, text and HTML (our layout
    included), each ended by a NUL so no two emails share one."""
    if isinstance(email, SubstitutedEmail) and "html" not in vars(email):
        return email.skeleton.text_hash(email.values, email.escaped)  # the same digest, without joining the email
    digest = hashlib.sha256()
    for part in (email.subject, email.text, email.html):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()
