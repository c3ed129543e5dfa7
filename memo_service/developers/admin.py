from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from memo_service.developers.erasure import developer_erase
from memo_service.developers.exporting import developers_csv
from memo_service.developers.importing import developers_import
from memo_service.developers.importing.cells import COLUMNS
from memo_service.developers.importing.csvfile import ImportFileError
from memo_service.developers.models import Developer, Region
from memo_service.lib.admin_paging import CappedCountPaginator


class ImportForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV (with or without BOM), comma or semicolon separated.")
    skip_invalid = forms.BooleanField(
        required=False, help_text="Import the good rows even if some are bad (they are listed)."
    )
    dry_run = forms.BooleanField(required=False, help_text="Only report what would change.")


@admin.register(Developer)
class DeveloperAdmin(admin.ModelAdmin):
    list_display = ["external_id", "name", "organization", "country", "language", "is_active", "email_status"]
    list_filter = ["is_active", "email_status", "language", "country"]
    search_fields = ["=external_id", "email", "name", "organization"]
    readonly_fields = ["erased_at", "created_at"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 100
    actions = ["erase_selected"]
    change_list_template = "admin/developers/developer/change_list.html"

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("attributes")

    def get_urls(self) -> list[Any]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="developers_developer_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="developers_developer_export"),
            *super().get_urls(),
        ]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request: HttpRequest) -> bool:
        # Every developer's personal data: for those who may change developers, not viewers.
        return self.has_change_permission(request)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        can_import, can_export = self.has_import_permission(request), self.has_export_permission(request)
        hint = (
            None
            if can_import and can_export
            else "You may read the developers; importing and exporting them (their personal data) take the "
            "permission to change developers, which no role but a superuser's has."
        )
        return super().changelist_view(
            request,
            {**(extra_context or {}), "can_import": can_import, "can_export": can_export, "role_hint": hint},
        )

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_import_permission(request):
            raise PermissionDenied
        report = None
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                report = developers_import(
                    stream=form.cleaned_data["file"].file,
                    skip_invalid=form.cleaned_data["skip_invalid"],
                    dry_run=form.cleaned_data["dry_run"],
                )
            except ImportFileError as exc:
                form.add_error("file", str(exc))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import developers",
            "form": form,
            "report": report,
            "columns": COLUMNS,
        }
        return TemplateResponse(request, "admin/developers/developer/import.html", context)

    def export_view(self, request: HttpRequest) -> StreamingHttpResponse:
        if not self.has_export_permission(request):
            raise PermissionDenied
        response = StreamingHttpResponse(developers_csv(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="developers-{timezone.now():%Y%m%d-%H%M}.csv"'
        return response

    @admin.action(description="Erase personal data of selected developers", permissions=["change"])
    def erase_selected(self, request: HttpRequest, queryset: QuerySet[Developer]) -> None:
        erased = [developer_erase(developer=d).external_id for d in queryset if d.erased_at is None]
        messages.success(request, f"Erased the personal data of {len(erased)} developers; evidence kept.")


class RegionForm(forms.ModelForm):
    class Meta:
        model = Region
        fields = "__all__"
        # 249 countries: the two-list picker with its filter box, not a Ctrl-click list.
        widgets = {"countries": FilteredSelectMultiple("countries", is_stacked=False)}


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    form = RegionForm
    list_display = ["name", "country_list"]
    change_list_template = "admin/role_hint_change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        hint = (
            None
            if self.has_add_permission(request)
            else ("You may read the Regions; making or changing one takes the Composer role.")
        )
        return super().changelist_view(request, {**(extra_context or {}), "role_hint": hint})

    @admin.display(description="countries")
    def country_list(self, region: Region) -> str:
        return ", ".join(c.code for c in region.countries)
