"""Changelists that stay fast with a million rows."""

from __future__ import annotations

from typing import Any, cast

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

# Counting a million rows on every page load is what makes a big changelist slow; past
# this many, the admin shows "10001" and filters or search narrow the list down.
COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        # The admin's changelist always pages a QuerySet; the stubs allow any sequence.
        object_list = cast("QuerySet[Any]", self.object_list)
        return object_list[: COUNT_CAP + 1].count()
