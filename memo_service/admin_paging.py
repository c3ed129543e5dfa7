"""Changelists that stay fast with a million rows."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.functional import cached_property

# Counting a million rows on every page load is what makes a big changelist slow; past
# this many, the admin shows "10001" and filters or search narrow the list down.
COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:  # type: ignore[override]
        return self.object_list[: COUNT_CAP + 1].count()
