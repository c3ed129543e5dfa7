"""The renderers a worker process keeps for the memos it sends.

Compiling a memo's templates and making its skeleton is the costly part of rendering, so
a process keeps each memo's renderer across tasks. The key holds the hash of what the
templates say now, so an edited memo never renders from a stale one.
"""

from __future__ import annotations

from memo_service.memos.compose.rendering import MemoRenderer, approved_renderer
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.models import Memo

# Renderers kept at most; past that the cache starts again empty.
KEPT = 16
_renderers: dict[tuple[int, str, bool], MemoRenderer] = {}


def renderer_for(memo: Memo, reminder: bool) -> MemoRenderer:
    """The memo's renderer, once its templates are shown to be the approved ones
    (raises NotApproved otherwise)."""
    key = (memo.pk, memo_content_hash(memo), reminder)
    if key not in _renderers:
        if len(_renderers) >= KEPT:
            _renderers.clear()
        _renderers[key] = approved_renderer(memo, reminder=reminder)
    return _renderers[key]
