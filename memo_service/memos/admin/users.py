"""The admin's user pages: a new user's staff status and roles are set on the add page,
not on a second page after it (a new admin had to find them there)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

User = get_user_model()


class MemoServiceUserAdmin(UserAdmin):
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "usable_password", "password1", "password2")}),
        (
            "Access",
            {
                "classes": ("wide",),
                "fields": ("is_staff", "groups"),
                "description": "Staff status lets them sign in to the admin; the groups are their roles "
                "(Composer, Approver, Viewer).",
            },
        ),
    )


admin.site.unregister(User)
admin.site.register(User, MemoServiceUserAdmin)
