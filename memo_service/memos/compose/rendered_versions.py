"""The hashes of every version of a memo its approver could see, as the approval record
keeps them: an auditor holding a text can say whether it is one that was approved.

A version is the email rendered for a developer of the audience that a condition's
branch picked (compose/versions.py), or for the audience's first developer when the
templates depend on nobody's values (what the preview shows first), in each of the
memo's languages, in our layout. The link in it is a stand-in of the real one's shape
that does not change (links.check_ack_urls): the same templates give the same hashes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from memo_service.developers.models import Developer
from memo_service.memos.audience import memo_audience
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.links import check_ack_urls
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sources import memo_content
from memo_service.memos.compose.versions import Condition, memo_versions
from memo_service.memos.models import Memo
from memo_service.memos.snapshot import traffic_of


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _developers(memo: Memo, conditions: list[Condition]) -> list[Developer]:
    """The developers whose emails are the versions: each branch's, else the audience's first."""
    picked = sorted({b.developer for c in conditions for b in c.branches if b.developer})
    if picked:
        return list(Developer.objects.filter(external_id__in=picked).order_by("external_id"))
    return list(memo_audience(memo).order_by("id")[:1])


def versions_rendered(memo: Memo, conditions: list[Condition] | None = None) -> list[dict[str, Any]]:
    """[{developer (external id), language, subject, text, html (each a SHA-256)}] for each
    version in each language, ordered by developer and language. A render that fails
    says so in `error` (approval has already refused templates that do not render)."""
    conditions = memo_versions(memo) if conditions is None else conditions
    developers = _developers(memo, conditions)
    traffic = traffic_of(memo, [d.pk for d in developers])
    link = check_ack_urls(memo.pk)
    renderer = MemoRenderer(memo)
    languages = sorted(memo_content(memo)["languages"])
    versions = []
    for developer in developers:
        for language in languages:
            context = developer_context(developer, traffic.get(developer.pk, ())) | {"language": language}
            entry: dict[str, Any] = {"developer": developer.external_id, "language": language}
            try:
                used, email = renderer.render(context, link(developer.pk))
            except Exception as exc:  # noqa: BLE001  (recorded as what it is, never raised into the approval)
                versions.append(entry | {"error": type(exc).__name__})
                continue
            entry |= {"language": used, "subject": _sha256(email.subject)}
            versions.append(entry | {"text": _sha256(email.text), "html": _sha256(email.html)})
    return versions
