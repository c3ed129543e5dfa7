"""Migrations keep what a running installation has: renaming a model its rows and its roles'
access, moving the texts sent onto the deliveries every text.

An installation of its own (a SQLite file, migrated by `manage.py migrate` in a process of
its own), so the test database's migrations and caches are left alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.process

BEFORE = """
import django
django.setup()
from django.apps import apps
from memo_service.memos.models import Memo  # noqa: F401  (the app is loaded)
from django.db.migrations.executor import MigrationExecutor
from django.db import connection
old = MigrationExecutor(connection).loader.project_state([("memos", "0013_composer_regions_disputes")]).apps
Developer = old.get_model("developers", "Developer")
developer = Developer.objects.create(external_id="cn-1", email="cn-1@example.com", country="CN")
memo = old.get_model("memos", "Memo").objects.create(
    title="Regions", slug="regions", status="paused", pause_reason="provider down"
)
old.get_model("memos", "Acknowledgement").objects.create(
    memo=memo, developer=developer, response="acknowledged", content_hash="h" * 64
)
old.get_model("memos", "Delivery").objects.create(
    memo=memo, developer=developer, status="skipped", last_error="answered before"
)
# `migrate memos 0013` ran this code's post_migrate, which made a content type (and
# permissions) for Answer; an installation still on 0013 has none: as it was.
old.get_model("contenttypes", "ContentType").objects.filter(app_label="memos", model="answer").delete()
Group = old.get_model("auth", "Group")
assert "view_acknowledgement" in Group.objects.get(name="Viewer").permissions.values_list("codename", flat=True)
"""

AFTER = """
import django
django.setup()
from django.contrib.auth.models import Group, Permission
from memo_service.memos.models import Answer, Delivery, Memo
assert list(Answer.objects.values_list("developer__external_id", "response")) == [("cn-1", "acknowledged")]
assert Memo.objects.get().status_reason == "provider down"
assert Delivery.objects.get().status_reason == "answered before"
viewer = set(Group.objects.get(name="Viewer").permissions.values_list("codename", flat=True))
assert {"view_answer", "view_dispute", "view_memo"} <= viewer, viewer
assert Group.objects.get(name="Composer").permissions.filter(codename="change_dispute").exists()
assert Permission.objects.filter(content_type__app_label="memos", codename="view_answer").count() == 1
assert not Permission.objects.filter(codename__contains="acknowledgement").exists()
print("kept")
"""


TEXTS_BEFORE = """
import django
django.setup()
from memo_service.memos.models import Memo  # noqa: F401  (the app is loaded)
from django.db.migrations.executor import MigrationExecutor
from django.db import connection
old = MigrationExecutor(connection).loader.project_state([("memos", "0016_evidence_record_size")]).apps
Developer, Delivery = old.get_model("developers", "Developer"), old.get_model("memos", "Delivery")
memo = old.get_model("memos", "Memo").objects.create(title="Regions", slug="regions", status="sent")
for n, name in enumerate(["Wang Wei", "Olga Petrova", "Ali Rezaei"]):
    developer = Developer.objects.create(external_id=f"d-{n}", email=f"d-{n}@example.com", country="CN")
    delivery = Delivery.objects.create(memo=memo, developer=developer, status="sent")
    if n < 2:  # the third's text was never kept
        old.get_model("memos", "SentText").objects.create(
            delivery=delivery, rendered_with={"name": name, "country": "CN"}, text_hash=str(n) * 64
        )
"""

TEXTS_AFTER = """
import django
django.setup()
from memo_service.memos.models import Delivery
rows = Delivery.objects.order_by("developer__external_id").values_list("rendered_with", "text_hash")
print(list(rows))
"""


def installation(tmp_path: Path):
    """A runner of Python in a process of its own, against a SQLite installation of its own."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'installation.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "memo_service.settings",
    }

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def test_the_texts_sent_move_onto_their_deliveries(tmp_path):
    run = installation(tmp_path)
    run("manage.py", "migrate", "-v0", "memos", "0016_evidence_record_size")
    run("-c", TEXTS_BEFORE)
    run("manage.py", "migrate", "-v0")
    assert run("-c", TEXTS_AFTER).strip() == str(
        [
            ({"name": "Wang Wei", "country": "CN"}, "0" * 64),
            ({"name": "Olga Petrova", "country": "CN"}, "1" * 64),
            (None, ""),
        ]
    )


def test_answers_and_the_roles_access_to_them_survive_the_rename_to_answer(tmp_path):
    run = installation(tmp_path)
    run("manage.py", "migrate", "-v0", "memos", "0013_composer_regions_disputes")
    run("-c", BEFORE)
    run("manage.py", "migrate", "-v0")
    assert run("-c", AFTER).strip() == "kept"
