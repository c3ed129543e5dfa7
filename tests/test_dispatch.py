"""Dispatch: the audience as it is now, snapshotted in pages, ids enqueued after commit."""

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from memo_service.developers.models import Developer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send import dispatch
from memo_service.memos.tasks import send_batch
from tests.conftest import approve, make_developer, sent_memo

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch):
    """The argument lists of send_batch tasks that reached the broker."""
    calls = []
    monkeypatch.setattr(send_batch, "apply_async", lambda args, *a, **kw: calls.append(args[0]))
    return calls


def test_send_memo_snapshots_the_audience_in_pages_and_enqueues_ids_after_commit(
    memo, monkeypatch, enqueued, django_capture_on_commit_callbacks
):
    for i in range(7):
        make_developer(f"cn-extra-{i}", "CN")
    make_developer("cn-inactive", "CN", is_active=False)
    monkeypatch.setattr(dispatch, "PAGE_SIZE", 3)
    monkeypatch.setattr(dispatch, "BATCH_SIZE", 2)
    approve(memo)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        call_command("send_memo", memo.slug)
    deliveries = Delivery.objects.filter(memo=memo)
    assert deliveries.count() == 9  # 8 active in CN + 1 in RU, none in US, not the inactive one
    assert not deliveries.filter(developer__external_id__in=["us-1", "cn-inactive"]).exists()
    assert sorted(i for batch in enqueued for i in batch) == sorted(deliveries.values_list("id", flat=True))
    assert all(len(batch) <= 2 and all(isinstance(i, int) for i in batch) for batch in enqueued)
    assert len(callbacks) == len(enqueued)
    assert set(deliveries.values_list("reason", flat=True)) == {
        "CN is in region Unsupported regions",
        "RU is in region Unsupported regions",
    }
    memo.refresh_from_db()
    assert memo.status == "sending" and memo.dispatched_at is not None


def test_nothing_is_enqueued_when_the_transaction_rolls_back(memo, enqueued, django_capture_on_commit_callbacks):
    approve(memo)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                dispatch.memo_send_start(memo=memo)
                dispatch.memo_dispatch(memo_id=memo.pk)
                raise RuntimeError("admin changed their mind")
    assert enqueued == [] and not Delivery.objects.exists()
    assert Memo.objects.get(pk=memo.pk).status == "approved"


def test_a_rerun_resumes_an_interrupted_dispatch_without_duplicates(memo, enqueued):
    approve(memo)
    dispatch.memo_send_start(memo=memo)
    # Interrupted after writing its first page: CN's delivery.
    dispatch.deliveries_create(memo=memo, developers=Developer.objects.filter(external_id="cn-1"))
    call_command("send_memo", memo.slug)  # dispatched_at was never set: it resumes
    assert Delivery.objects.filter(memo=memo).count() == 2


def test_a_memo_already_sent_is_refused(memo):
    sent_memo(memo)
    with pytest.raises(CommandError, match="is sent"):
        call_command("send_memo", str(memo.pk))


def test_a_memo_changed_behind_the_admins_back_after_approval_is_refused(memo):
    approve(memo)
    Memo.objects.filter(pk=memo.pk).update(text_body="{{ nope }}")
    with pytest.raises(CommandError, match="changed after it was approved"):
        call_command("send_memo", memo.slug)
    assert Memo.objects.get(pk=memo.pk).status == "approved" and not Delivery.objects.exists()


def test_a_draft_is_refused(memo):
    with pytest.raises(CommandError, match="only an approved memo can be sent"):
        call_command("send_memo", memo.slug)


def test_an_audience_that_changed_since_approval_needs_confirming(memo, enqueued):
    approve(memo)
    make_developer("cn-new", "CN")
    Developer.objects.filter(external_id="ru-1").update(is_active=False)
    with pytest.raises(CommandError, match=r"audience changed since approval \(added: CN \+1; removed: RU -1\)"):
        call_command("send_memo", memo.slug)
    assert not Delivery.objects.exists()
    call_command("send_memo", memo.slug, "--accept-audience-changes")
    assert set(Delivery.objects.values_list("developer__external_id", flat=True)) == {"cn-1", "cn-new"}


def test_an_unknown_memo_gets_a_clear_error(db):
    with pytest.raises(CommandError, match="no memo with id or slug 'nope'"):
        call_command("send_memo", "nope")


def test_an_empty_audience_finishes_at_once(memo, enqueued):
    memo.include_regions.clear()
    approve(memo)
    call_command("send_memo", memo.slug)
    assert Memo.objects.get(pk=memo.pk).status == "sent" and enqueued == []


def test_excluded_countries_win_over_regions(memo):
    memo.exclude_countries = ["RU"]
    memo.save()
    from memo_service.memos.audience import audience_counts

    assert audience_counts(memo) == (1, [("CN", "China", 1, 1, 0)])


def test_a_template_that_fails_for_one_developers_data_is_refused_before_sending(memo, developers):
    Memo.objects.filter(pk=memo.pk).update(
        text_body="{% if developer.external_id == 'ru-1' %}{{ developer.nope }}{% endif %}ok"
    )
    approve(memo)
    with pytest.raises(CommandError, match="does not render for developer ru-1: line 1"):
        call_command("send_memo", memo.slug)
    assert Memo.objects.get(pk=memo.pk).status == "approved" and not Delivery.objects.exists()


def test_a_template_failing_for_a_developer_past_the_first_checked_pauses_before_any_email(
    memo, developers, monkeypatch, mailgun
):
    """The check before the send answers at once for the first AUDIENCE_CHECK_LIMIT; the
    rest of the audience is checked by the dispatch before its first email, never by a
    send that fails halfway (one developer here stands for the 20,000)."""
    import io

    monkeypatch.setattr(dispatch, "AUDIENCE_CHECK_LIMIT", 1)
    last = make_developer("zz-last", "RU", name="")
    Memo.objects.filter(pk=memo.pk).update(text_body="Dear {{ developer.name[0] }}")
    approve(Memo.objects.get(pk=memo.pk))
    call_command("send_memo", memo.slug, stdout=io.StringIO())
    memo.refresh_from_db()
    assert memo.status == "paused"
    assert f"does not render for developer {last.external_id}" in memo.status_reason
    assert not Delivery.objects.filter(memo=memo).exists() and mailgun.accepted == []


def test_the_send_page_says_how_far_the_check_before_the_first_email_is(memo, monkeypatch, enqueued):
    from memo_service.memos.report.reports import memo_progress

    for i in range(4):
        make_developer(f"cn-more-{i}", "CN")
    monkeypatch.setattr(dispatch, "AUDIENCE_CHECK_LIMIT", 2)  # the rest (4 of 6) checked by the dispatch
    monkeypatch.setattr(dispatch, "PAGE_SIZE", 1)
    approve(memo)
    dispatch.memo_send_start(memo=memo)
    seen = []
    read_traffic = dispatch.traffic_of

    def page_read(memo_, ids):  # what the Send page's progress line says as each page is checked
        progress = memo_progress(Memo.objects.get(pk=memo.pk))
        seen.append((progress["summary"], progress["percent"]))
        return read_traffic(memo_, ids)

    monkeypatch.setattr(dispatch, "traffic_of", page_read)
    dispatch.memo_dispatch(memo_id=memo.pk)
    checking = [s for s, _ in seen if s.startswith("Checking")]
    assert [p for s, p in seen if s.startswith("Checking")][-1] == 75  # the bar shows the check
    assert checking[-1] == (
        "Checking, before the first email, that the memo renders as approved for each developer: 3 of 4 more."
    )
    assert Delivery.objects.filter(memo=memo).count() == 6
