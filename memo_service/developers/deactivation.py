"""An account marked inactive: it leaves active-only audiences."""

from __future__ import annotations

from memo_service.developers.models import Developer


def developer_deactivate(*, developer: Developer) -> bool:
    """Mark an account inactive (it leaves active-only audiences); False if it already was."""
    return bool(Developer.objects.filter(pk=developer.pk, is_active=True).update(is_active=False))
