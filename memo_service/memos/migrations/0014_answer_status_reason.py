"""Names that say what they hold: Acknowledgement stores every answer (acknowledged,
region disputed, help asked), so it is Answer; Memo.pause_reason also held why a
scheduled send did not start, and Delivery.last_error held skips and cancellations, so
both are status_reason. Data stays (renames only). The groups keep their permissions:
the content type is renamed with the model (Django does that), and the permissions'
codenames and names follow here, so no role loses access and no duplicate appears."""

import django.db.models.deletion
from django.db import migrations, models


def _rename_permissions(apps, schema_editor, old, new):
    Permission = apps.get_model("auth", "Permission")
    AuditEvent = apps.get_model("memos", "AuditEvent")
    for permission in Permission.objects.filter(content_type__app_label="memos", codename__endswith=f"_{old}"):
        permission.codename = permission.codename[: -len(old)] + new
        permission.name = permission.name.replace(old, new)
        permission.save(update_fields=["codename", "name"])
    AuditEvent.objects.filter(object_type=f"memos.{old}").update(object_type=f"memos.{new}")


def forwards(apps, schema_editor):
    _rename_permissions(apps, schema_editor, "acknowledgement", "answer")


def backwards(apps, schema_editor):
    _rename_permissions(apps, schema_editor, "answer", "acknowledgement")


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("memos", "0013_composer_regions_disputes"),
    ]

    operations = [
        # RenameModel leaves a proxy's base naming the old model: the Dispute proxy leaves
        # the state and comes back on Answer (no table either way; its content type and
        # permissions, change_dispute included, are untouched).
        migrations.DeleteModel("Dispute"),
        migrations.RenameModel("Acknowledgement", "Answer"),
        migrations.CreateModel(
            name="Dispute",
            fields=[],
            options={"verbose_name": "region dispute", "proxy": True, "indexes": [], "constraints": []},
            bases=("memos.answer",),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RenameField("memo", "pause_reason", "status_reason"),
        migrations.RenameField("delivery", "last_error", "status_reason"),
        migrations.AlterField(
            model_name="answer",
            name="developer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="answers", to="developers.developer"
            ),
        ),
        migrations.AlterField(
            model_name="answer",
            name="memo",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="answers", to="memos.memo"),
        ),
    ]
