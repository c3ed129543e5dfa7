"""Developer accounts out: CSV that spreadsheets cannot execute and import reads back."""

import csv
import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from memo_service.developers.models import Developer
from tests.conftest import make_developer

pytestmark = pytest.mark.django_db


def export() -> str:
    out = io.StringIO()
    call_command("export_developers", stdout=out)
    return out.getvalue()


def test_cells_that_look_like_formulas_are_escaped(db):
    make_developer("f-1", "DE", name='=HYPERLINK("http://evil")', organization="+1-555", attributes={"k": "v"})
    make_developer("f-2", "DE", name="@SUM(A1)", organization="-x")
    rows = list(csv.DictReader(io.StringIO(export())))
    assert [r["name"] for r in rows] == ['\'=HYPERLINK("http://evil")', "'@SUM(A1)"]
    assert [r["organization"] for r in rows] == ["'+1-555", "'-x"]
    assert rows[0]["attributes"] == '{"k": "v"}'


def test_an_export_imports_back_unchanged(tmp_path):
    make_developer("r-1", "CN", "zh-hans", name="=1+1", attributes={"plan": "pro"})
    make_developer("r-2", "US", is_active=False)
    before = list(Developer.objects.values())
    path = tmp_path / "export.csv"
    path.write_text(export())
    out = io.StringIO()
    call_command("import_developers", str(path), stdout=out)
    assert "0 created, 0 updated, 2 unchanged" in out.getvalue()
    assert list(Developer.objects.values()) == before


def test_an_admin_downloads_the_export(admin_client):
    make_developer("a-1", "FR")
    response = admin_client.get(reverse("admin:developers_developer_export"))
    assert response["Content-Type"].startswith("text/csv")
    assert "a-1,a-1@example.com,FR" in b"".join(response.streaming_content).decode()
