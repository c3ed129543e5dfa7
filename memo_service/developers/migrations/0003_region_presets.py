from django.db import migrations

from memo_service.developers.regions import PRESETS


def load_presets(apps, schema_editor):
    Region = apps.get_model("developers", "Region")
    for name, (countries, source) in PRESETS.items():
        # An admin may already have made one by that name: theirs wins.
        Region.objects.get_or_create(name=name, defaults={"countries": countries, "source": source})


class Migration(migrations.Migration):
    dependencies = [("developers", "0002_developer_erased_at")]
    operations = [migrations.RunPython(load_presets, migrations.RunPython.noop)]
