"""The base of the admin pages of records the flow writes."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from memo_service.lib.admin_paging import CappedCountPaginator


class ReadOnlyAdmin(admin.ModelAdmin):
    """Evidence and provider records: visible to admins, written only by the flow."""

    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
