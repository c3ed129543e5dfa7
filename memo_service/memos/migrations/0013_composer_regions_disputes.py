"""Composers build audiences and run memos: they may make and edit Regions, and decide
region disputes (which takes its own permission now, no longer "change developer")."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GRANTS = {"Composer": ["developers.add_region", "developers.change_region", "memos.change_dispute"]}


def grant(apps, schema_editor, remove=False):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)  # the models as of this migration
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in GRANTS.items():
        group = Group.objects.get(name=name)
        for code in codes:
            app_label, codename = code.split(".")
            permission = Permission.objects.get(content_type__app_label=app_label, codename=codename)
            (group.permissions.remove if remove else group.permissions.add)(permission)


def revoke(apps, schema_editor):
    grant(apps, schema_editor, remove=True)


class Migration(migrations.Migration):
    dependencies = [("memos", "0012_answer_channel")]
    operations = [migrations.RunPython(grant, revoke)]
