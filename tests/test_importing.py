"""Developer accounts in: CSV import from the command line and the admin."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from memo_service.developers.models import Developer

pytestmark = pytest.mark.django_db

GOOD = (
    "external_id,email,name,organization,country,language,is_active,last_active_at,plan\n"
    "p-1,ann@example.com,Ann,Acme,China,zh-CN,yes,2026-05-01T10:00:00+08:00,pro\n"
    "p-2,bob@example.com,Bob,,RUS,en,no,2026-05-02,free\n"
    'p-3,cy@example.com,Cy,"Quote, Inc",us,fr,,,free\n'
)


def run(tmp_path, content, *args, encoding="utf-8"):
    path = tmp_path / "devs.csv"
    path.write_bytes(content.encode(encoding))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_developers", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_imports_accounts_and_normalizes_country_language_and_dates(tmp_path):
    out, _ = run(tmp_path, GOOD)
    assert "3 rows: 3 created, 0 updated, 0 unchanged, 0 invalid" in out
    ann = Developer.objects.get(external_id="p-1")
    assert (ann.country.code, ann.language, ann.is_active, ann.attributes) == ("CN", "zh-hans", True, {"plan": "pro"})
    assert ann.last_active_at is not None and ann.last_active_at.isoformat() == "2026-05-01T02:00:00+00:00"
    bob = Developer.objects.get(external_id="p-2")
    assert bob.last_active_at is not None
    assert (bob.country.code, bob.is_active, bob.last_active_at.isoformat()) == (
        "RU",
        False,
        "2026-05-02T00:00:00+00:00",
    )
    cy = Developer.objects.get(external_id="p-3")
    assert (cy.country.code, cy.language, cy.organization) == ("US", "fr", "Quote, Inc")


def test_importing_the_same_file_twice_changes_nothing_the_second_time(tmp_path):
    run(tmp_path, GOOD)
    before = list(Developer.objects.values())
    out, _ = run(tmp_path, GOOD)
    assert "0 created, 0 updated, 3 unchanged" in out
    assert list(Developer.objects.values()) == before


def test_a_changed_row_updates_only_that_account_and_absent_columns_stay(tmp_path):
    run(tmp_path, GOOD)
    out, _ = run(tmp_path, "external_id,email,country\np-1,ann@new.example.com,CN\np-2,bob@example.com,RU\n")
    assert "0 created, 1 updated, 1 unchanged" in out
    ann = Developer.objects.get(external_id="p-1")
    assert (ann.email, ann.name, ann.language, ann.attributes) == (
        "ann@new.example.com",
        "Ann",
        "zh-hans",
        {"plan": "pro"},
    )


BAD = (
    "external_id;email;country\n"
    "b-1;ok@example.com;DE\n"
    "b-2;not-an-email;DE\n"
    "b-3;x@example.com;Atlantis\n"
    "b-1;again@example.com;DE\n"
    'b-4;"line\nbreak@example.com";DE\n'
    f"b-5;{'a' * 250}@example.com;DE\n"
    ";nobody@example.com;DE\n"
    "b-6;too@example.com\n"
    "b-7;fine@example.com;FRA\n"
)


def test_a_file_with_bad_rows_changes_nothing_and_lists_every_bad_row(tmp_path):
    with pytest.raises(CommandError, match="Nothing imported: 7 invalid rows"):
        run(tmp_path, BAD)
    assert not Developer.objects.exists()


def test_each_bad_row_is_reported_with_its_line_and_reason(tmp_path):
    out, err = run(tmp_path, BAD, "--skip-invalid")
    lines = err.splitlines()
    assert any("line 3 (b-2): invalid email 'not-an-email'" in line for line in lines)
    assert any("line 4 (b-3): unknown country 'Atlantis'" in line for line in lines)
    assert any("line 5 (b-1): duplicate external_id" in line for line in lines)
    assert any("line 6 (b-4): invalid email: contains a line break" in line for line in lines)
    assert any("line 8 (b-5): invalid email: longer than 254 characters" in line for line in lines)
    assert any("line 9: external_id is required" in line for line in lines)
    assert any("line 10 (b-6): expected 3 cells, found 2" in line for line in lines)
    assert "9 rows: 2 created" in out
    assert set(Developer.objects.values_list("external_id", "country")) == {("b-1", "DE"), ("b-7", "FR")}


def test_a_dry_run_reports_and_changes_nothing(tmp_path):
    out, _ = run(tmp_path, GOOD, "--dry-run")
    assert "Dry run, nothing changed. 3 rows: 3 created" in out
    assert not Developer.objects.exists()


def test_utf8_with_bom_and_semicolons_is_read(tmp_path):
    out, _ = run(tmp_path, "\ufeffexternal_id;email;name;country\nz-1;z@example.com;王伟;Hong Kong\n")
    assert "1 created" in out
    assert Developer.objects.get().name == "王伟" and Developer.objects.get().country.code == "HK"


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,email\n1,a@example.com\n", "missing: external_id, country"),
        ("external_id,email,country,email\n", "repeats the columns email"),
    ],
)
def test_a_file_with_a_bad_header_is_refused(tmp_path, content, message):
    with pytest.raises(CommandError, match=message):
        run(tmp_path, content)


def test_a_file_that_is_not_utf8_is_refused_and_changes_nothing(tmp_path):
    with pytest.raises(CommandError, match="not UTF-8"):
        run(tmp_path, "external_id,email,country\nq-1,q@example.com,DE\nq-2,é@example.com,DE\n", encoding="latin-1")
    assert not Developer.objects.exists()


def test_an_admin_uploads_a_file_and_sees_the_report(admin_client):
    url = reverse("admin:developers_developer_import")
    upload = io.BytesIO(BAD.encode())
    upload.name = "devs.csv"
    page = admin_client.post(url, {"file": upload}).content.decode()
    assert "Nothing imported" in page and "line 4 (b-3): unknown country" in page
    assert not Developer.objects.exists()
    upload = io.BytesIO(BAD.encode())
    upload.name = "devs.csv"
    page = admin_client.post(url, {"file": upload, "skip_invalid": "on"}).content.decode()
    assert "Imported" in page and Developer.objects.count() == 2


def test_a_file_with_only_the_required_columns_creates_accounts_with_defaults(tmp_path):
    out, _ = run(tmp_path, "external_id,email,country\nn-1,n@example.com,JP\n")
    assert "1 created" in out
    dev = Developer.objects.get()
    assert (dev.name, dev.organization, dev.language, dev.is_active, dev.attributes, dev.email_status) == (
        "",
        "",
        "en",
        True,
        {},
        "ok",
    )
    assert dev.created_at is not None and dev.last_active_at is None


def test_cells_escaped_against_formulas_are_read_back_as_written(tmp_path):
    run(tmp_path, "external_id,email,country,name\ne-1,e@example.com,JP,'=1+1\n")
    assert Developer.objects.get().name == "=1+1"


def test_a_nul_character_is_a_bad_row_not_a_crash(tmp_path):
    with pytest.raises(CommandError, match="Nothing imported: 1 invalid"):
        run(tmp_path, "external_id,email,country,name\nz-1,z@example.com,JP,a\x00b\n")


def test_new_attribute_columns_join_the_stored_attributes(tmp_path):
    run(tmp_path, "external_id,email,country,plan\na-1,a@example.com,DE,pro\n")
    out, _ = run(tmp_path, "external_id,email,country,team\na-1,a@example.com,DE,core\n")
    assert "1 updated" in out
    assert Developer.objects.get().attributes == {"plan": "pro", "team": "core"}


def test_an_import_never_brings_an_erased_developers_data_back(tmp_path):
    run(tmp_path, "external_id,email,country,name\ne-1,e@example.com,DE,Eve\n")
    call_command("erase_developer", "e-1", stdout=io.StringIO())
    out, _ = run(tmp_path, "external_id,email,country,name\ne-1,e@example.com,DE,Eve\n")
    assert "1 unchanged" in out
    assert Developer.objects.get().name == "" and Developer.objects.get().email.endswith("@erased.invalid")


def test_nan_or_infinity_in_attributes_is_that_rows_error_and_the_other_rows_import(tmp_path):
    content = (
        "external_id,email,country,attributes\n"
        'g-1,g1@example.com,DE,"{""limit"": 5}"\n'
        'n-1,n1@example.com,DE,"{""limit"": NaN}"\n'
        'n-2,n2@example.com,DE,"{""limit"": [1, -Infinity]}"\n'
        'g-2,g2@example.com,DE,"{""limit"": 1e999}"\n'
    )
    out, err = run(tmp_path, content, "--skip-invalid")
    assert "line 3 (n-1): attributes contain NaN or Infinity" in err
    assert "line 4 (n-2): attributes contain NaN or Infinity" in err
    assert "line 5 (g-2): attributes contain NaN or Infinity" in err  # 1e999 reads as Infinity
    assert "1 created" in out
    assert list(Developer.objects.values_list("external_id", "attributes")) == [("g-1", {"limit": 5})]


def test_attributes_nested_thousands_deep_are_that_rows_error_not_a_crash(tmp_path):
    deep = '"' + '{""a"": ' * 5000 + "1" + "}" * 5000 + '"'
    middling = '"' + '{""a"": ' * 21 + "1" + "}" * 21 + '"'
    content = f"external_id,email,country,attributes\nd-1,d@example.com,DE,{deep}\nd-2,e@example.com,DE,{middling}\n"
    _, err = run(tmp_path, content, "--skip-invalid")
    assert "line 2 (d-1): attributes are nested more than 20 levels deep" in err
    assert "line 3 (d-2): attributes are nested more than 20 levels deep" in err
    assert not Developer.objects.exists()


def test_a_header_line_of_50_mb_is_refused_with_the_reason_and_changes_nothing(tmp_path, admin_client):
    content = "external_id,email,country," + "x" * 50_000_000 + "\nh-1,h@example.com,DE,1\n"
    with pytest.raises(CommandError, match="line 1: the header is longer than 65,536 characters"):
        run(tmp_path, content)
    upload = io.BytesIO(content.encode())
    upload.name = "devs.csv"
    page = admin_client.post(reverse("admin:developers_developer_import"), {"file": upload})
    assert page.status_code == 200
    assert "the header is longer than 65,536 characters" in page.content.decode()
    assert not Developer.objects.exists()
