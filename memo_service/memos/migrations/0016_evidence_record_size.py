"""Each evidence record says what it weighs in a sequencer's step (`size`: the emails a
handover lists, any other record 1), so that a step is measured out without reading
payloads. Existing handovers get theirs from their payload."""

from django.db import migrations, models


def handover_sizes(apps, schema_editor):
    EvidenceRecord = apps.get_model("memos", "EvidenceRecord")
    handovers = EvidenceRecord.objects.filter(kind="handover").only("id", "payload")
    batch = []
    for record in handovers.iterator(chunk_size=100):
        record.size = max(1, len(record.payload.get("deliveries", [])))
        batch.append(record)
        if len(batch) == 100:
            EvidenceRecord.objects.bulk_update(batch, ["size"])
            batch = []
    EvidenceRecord.objects.bulk_update(batch, ["size"])


class Migration(migrations.Migration):

    dependencies = [
        ('memos', '0015_evidence_handover_per_call'),
    ]

    operations = [
        migrations.AddField(
            model_name='evidencerecord',
            name='size',
            field=models.PositiveIntegerField(db_default=1, default=1),
        ),
        migrations.RunPython(handover_sizes, migrations.RunPython.noop),
    ]
