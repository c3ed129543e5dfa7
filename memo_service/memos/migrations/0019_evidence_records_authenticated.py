"""Evidence records authenticated by their writer (a tag, evidence/tags.py), the
approval as a record of the chain, and the per-email `delivery` kind gone.

No installation depends on the older forms (per-email `delivery` records, handovers
listing ids or objects, records without a tag): no memo-service has been deployed with
them. A chain that still holds them is not trusted: verification refuses it, naming the
first such record ("written in an earlier form ... not authenticated")."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("memos", "0018_evidence_payload_lz4"),
    ]

    operations = [
        migrations.AddField(
            model_name="evidencerecord",
            name="refused",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddField(
            model_name="evidencerecord",
            name="tag",
            field=models.CharField(blank=True, default="", max_length=80),
        ),
        migrations.AlterField(
            model_name="evidencerecord",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name="evidencerecord",
            name="kind",
            field=models.CharField(
                choices=[
                    ("approval", "approval of the memo's text"),
                    ("answer", "answer"),
                    ("event", "delivery event"),
                    ("handover", "handover to the provider, one call"),
                    ("status", "delivery status change"),
                ],
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="webhookendpoint",
            name="events",
            field=models.JSONField(
                default=list,
                help_text="Any of memo.acknowledged, memo.disputed, memo.deadline_passed, evidence.checkpoint.",
            ),
        ),
    ]
