"""Evidence records a provider call's handover as one record listing each email
(kind "handover"); "delivery", one record per email, stays valid: chains sealed with it
still verify. Choices only: no data changes."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('memos', '0014_answer_status_reason'),
    ]

    operations = [
        migrations.AlterField(
            model_name='evidencerecord',
            name='kind',
            field=models.CharField(choices=[('answer', 'answer'), ('event', 'delivery event'), ('delivery', 'handover of one email (before handovers were per call)'), ('handover', 'handover to the provider, one call'), ('status', 'delivery status change')], max_length=10),
        ),
    ]
