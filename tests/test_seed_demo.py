import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from memo_service.developers.models import Developer, Region
from memo_service.memos.audience import audience_counts
from memo_service.memos.compose.checks import memo_check
from memo_service.memos.models import Memo

pytestmark = pytest.mark.django_db


def test_seed_demo_loads_a_demo_that_shows_the_whole_flow():
    call_command("seed_demo")
    assert 450 <= Developer.objects.count() <= 550
    countries = set(Developer.objects.values_list("country", flat=True))
    assert len(countries) >= 30 and {"CN", "HK", "MO", "RU", "IR", "KP", "SY", "CU"} <= countries
    assert set(Developer.objects.values_list("language", flat=True)) == {"en", "zh-hans"}
    region = Region.objects.get(name="Unsupported regions")
    assert region.source and {c.code for c in region.countries} == {"CN", "HK", "MO", "RU", "IR", "KP", "SY", "CU"}
    memo = Memo.objects.get(slug="demo-restriction-notice")
    assert memo.status == "approved" and memo.translations.get().language == "zh-hans"
    assert memo.approver is not None and memo.author is not None
    assert memo.approver.username == "approver" and memo.author.username == "admin"
    assert memo_check(memo) == {}
    total, by_country = audience_counts(memo)
    assert total > 100
    # Some accounts of supported countries are in by where their API traffic came from.
    assert sum(by_traffic for code, _, _, by_account, by_traffic in by_country if not by_account) >= 10
    assert get_user_model().objects.get(username="admin").check_password("admin")
    assert get_user_model().objects.get(username="approver").groups.get().name == "Approver"


def test_running_seed_demo_again_changes_nothing():
    call_command("seed_demo")
    before = list(Developer.objects.values_list("external_id", "email", "country", "language").order_by("id"))
    memo = Memo.objects.get(slug="demo-restriction-notice")
    memo.subject = "edited by an admin"
    memo.save()
    call_command("seed_demo")
    after = list(Developer.objects.values_list("external_id", "email", "country", "language").order_by("id"))
    assert before == after
    assert Memo.objects.get().subject == "edited by an admin"
    assert Region.objects.count() == 3 and get_user_model().objects.count() == 2  # the presets
