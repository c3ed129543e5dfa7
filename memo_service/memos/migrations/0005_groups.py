"""The three roles: Composer writes and sends memos, Approver approves them, Viewer reads."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = [
    "memos.view_memo", "memos.view_memotranslation", "memos.view_delivery", "memos.view_deliveryevent",
    "memos.view_acknowledgement", "memos.view_dispute", "memos.view_auditevent",
    "developers.view_developer", "developers.view_region",
]
GROUPS = {
    "Composer": VIEW + [
        "memos.add_memo", "memos.change_memo", "memos.send_memo",
        "memos.add_memotranslation", "memos.change_memotranslation", "memos.delete_memotranslation",
    ],
    "Approver": VIEW + ["memos.approve_memo"],
    "Viewer": VIEW,
}


def create_groups(apps, schema_editor):
    # Permissions are normally made after all migrations; these groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)  # the models as of this migration
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for code in codes:
            app_label, codename = code.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [
        ("memos", "0004_approval_schedule_audience"),
        ("developers", "0005_org_contact_email"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
