from django.contrib import admin

from memo_service.developers.models import Developer, Region


@admin.register(Developer)
class DeveloperAdmin(admin.ModelAdmin):
    list_display = ["external_id", "name", "organization", "country", "language", "is_active", "email_status"]
    list_filter = ["is_active", "email_status", "language", "country"]
    search_fields = ["=external_id", "email", "name", "organization"]
    show_full_result_count = False
    list_per_page = 100


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["name", "country_list"]

    @admin.display(description="countries")
    def country_list(self, region: Region) -> str:
        return ", ".join(c.code for c in region.countries)
