"""A correction: a new draft prefilled from a memo already sent (or withdrawn), approved
and sent like any other; those who acknowledged the earlier memo are asked again, those a
dispute exempted from it stay out, its open cases carry over, and its reminders stop."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.db.models import ManyToManyField
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from memo_service.developers.models import Developer
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.audience import audience_explain
from memo_service.memos.cases.cases import case_decide_dispute
from memo_service.memos.correction import (
    COPIED_FIELDS,
    COPIED_RELATIONS,
    CorrectionRefused,
    cases_carry_over,
    memo_correction_create,
)
from memo_service.memos.models import Answer, Case, Delivery, EvidenceRecord, Memo, MemoTranslation
from memo_service.memos.reminders import RemindRefused, memo_remind_now, reminders_send_due
from memo_service.memos.withdrawal import memo_withdraw
from tests.conftest import answered, approve, make_developer, memo_in, sent_memo

# Committed transactions (the carry-over runs after the send's commits); the roles' groups kept.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# The fields a correction does not take from the earlier memo, each for a reason: its own
# name, its link, and everything about the earlier memo's approval, send and withdrawal.
NOT_COPIED = {
    "id",
    "title",
    "slug",
    "supersedes",
    "status",
    "status_reason",
    "author",
    "approver",
    "requested_by",
    "last_edited_by",
    "content_hash",
    "approved_at",
    "approved_rules",
    "scheduled_at",
    "send_started_at",
    "dispatched_at",
    "audience_checked",
    "audience_to_check",
    "deadline_notified_at",
    "reminders_sent",
    "reminders_dispatched",
    "withdrawn_at",
    "withdrawn_by",
    "withdrawal_reason",
    "created_at",
    "updated_at",
}


def staff(username: str, group: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", f"pw-{username}-123", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_every_field_of_a_memo_is_either_copied_or_left_on_purpose() -> None:
    fields = {f.name for f in Memo._meta.concrete_fields} | {f.name for f in Memo._meta.many_to_many}
    copied = set(COPIED_FIELDS) | set(COPIED_RELATIONS)
    assert not copied & NOT_COPIED
    assert fields == copied | NOT_COPIED, "a new Memo field: copy it to a correction, or say why not"
    assert all(isinstance(Memo._meta.get_field(name), ManyToManyField) for name in COPIED_RELATIONS)


def test_a_correction_is_a_draft_prefilled_from_the_earlier_memo(memo: Memo, developers: dict[str, Developer]) -> None:
    Memo.objects.filter(pk=memo.pk).update(
        statement="I understand that traffic from my country will be blocked.",
        email_receipt=True,
        audience_basis=Memo.Basis.EITHER,
        traffic_countries=["IR"],
        traffic_min_requests=50,
        attribute_filters={"plan": "pro"},
        reminder_days=[3],
    )
    MemoTranslation.objects.filter(memo=memo).update(statement="我了解来自我所在国家/地区的流量将被阻止。")
    memo.refresh_from_db()
    Developer.objects.update(attributes={"plan": "pro"})
    sent_memo(memo)
    carol = staff("carol", "Composer")

    correction = memo_correction_create(memo=memo, by=carol)

    assert correction.status == Memo.Status.DRAFT and correction.supersedes == memo
    assert correction.slug == "regions-blocked-correction" and correction.title == "Regions blocked (correction)"
    assert correction.author == carol and correction.content_hash == "" and correction.approved_rules == {}
    for name in COPIED_FIELDS:
        assert getattr(correction, name) == getattr(memo, name), name
    assert list(correction.include_regions.all()) == list(memo.include_regions.all())
    translation = correction.translations.get()
    assert translation.language == "zh-hans" and translation.statement.startswith("我了解")
    assert translation.text_body == memo.translations.get().text_body
    # A second correction of the same memo gets a slug of its own.
    assert memo_correction_create(memo=memo, by=carol).slug == "regions-blocked-correction-2"


@pytest.mark.parametrize("status", ["draft", "approved", "sending", "cancelled"])
def test_only_a_memo_that_was_sent_or_withdrawn_is_corrected(memo: Memo, status: str) -> None:
    memo_in(memo, status)
    with pytest.raises(CorrectionRefused, match="only a memo that was sent"):
        memo_correction_create(memo=memo, by=None)
    assert not Memo.objects.filter(supersedes=memo).exists()


def test_a_correction_sent_end_to_end(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None, clock: Any
) -> None:
    cn, ru = developers["cn"], developers["ru"]
    helpless = make_developer("cn-help", "CN")
    proxied = make_developer("ru-proxy", "RU")
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=timezone.now() + dt.timedelta(days=10), reminder_days=[7])
    sent_memo(Memo.objects.get(pk=memo.pk), at=timezone.now() - dt.timedelta(hours=2))
    answered(memo, cn)  # acknowledged the earlier memo: asked again
    answered(memo, helpless, "needs_help", comment="Which regions?")  # an open case: carried over
    dispute = answered(memo, proxied, "disputes_region", country="DE")
    anna = staff("anna", "Composer")
    dispute_case = Case.objects.get(answer=dispute)
    case_decide_dispute(case=dispute_case, by=anna, outcome="exempted", rationale="A proxy's traffic, not theirs.")
    help_case = Case.objects.get(answer__developer=helpless)
    help_case.assignee = anna
    help_case.save(update_fields=["assignee"])

    carol = Client()
    carol.force_login(staff("carol", "Composer"))
    page = carol.post(reverse("admin:memos_memo_correct", args=[memo.pk]), follow=True)
    correction = Memo.objects.get(supersedes=memo)
    assert page.redirect_chain[-1][0] == reverse("admin:memos_memo_change", args=[correction.pk])
    assert "A correction of “Regions blocked”, prefilled from it" in page.content.decode()
    Memo.objects.filter(pk=correction.pk).update(text_body=memo.text_body + "\nThe date was wrong: it is 1 August.")
    assert audience_explain(correction, proxied).endswith(
        "not included: exempted from the memo this one corrects, after a dispute"
    )

    approve(Memo.objects.get(pk=correction.pk))
    approval = EvidenceRecord.objects.get(memo=correction, kind=EvidenceRecord.Kind.APPROVAL)
    assert approval.payload["supersedes"] == {"id": memo.pk, "slug": memo.slug}
    mail.outbox.clear()
    sent_memo(Memo.objects.get(pk=correction.pk))

    told = set(Delivery.objects.filter(memo=correction).values_list("developer__external_id", flat=True))
    assert told == {"cn-1", "ru-1", "cn-help"}  # the one who acknowledged too; not the exempted one
    assert ru.pk  # ru never answered: asked by the correction as by any memo
    answered(Memo.objects.get(pk=correction.pk), cn)
    assert Answer.objects.filter(memo=correction, developer=cn, response="acknowledged").exists()

    # The open case continues on the correction, the earlier one resolved "carried".
    help_case.refresh_from_db()
    carried = Case.objects.get(memo=correction)
    assert help_case.status == Case.Status.RESOLVED and help_case.outcome == "carried"
    assert (carried.carried_from, carried.answer, carried.developer, carried.kind, carried.assignee) == (
        help_case,
        help_case.answer,
        helpless,
        Case.Kind.HELP,
        anna,
    )
    assert carried.status == Case.Status.OPEN
    assert Case.objects.get(pk=dispute_case.pk).outcome == "exempted"  # a decided case stays where it was
    assert cases_carry_over(from_memo=memo, to_memo=correction) == 0  # a rerun carries nothing twice
    records = EvidenceRecord.objects.filter(kind=EvidenceRecord.Kind.CASE)
    assert records.filter(memo=memo, payload__outcome="carried").exists()
    assert records.filter(memo=correction, payload__carried_from=help_case.pk).exists()

    # The earlier memo's reminders stop: the correction asks now.
    clock.move_to(timezone.now() + dt.timedelta(days=4))
    reminders_send_due()
    assert not Delivery.objects.filter(memo=memo, kind=Delivery.Kind.REMINDER).exists()
    with pytest.raises(RemindRefused, match="has a correction"):
        memo_remind_now(memo=Memo.objects.get(pk=memo.pk), by=None)

    # Each dashboard links to the other.
    earlier = carol.get(reverse("admin:memos_memo_dashboard", args=[memo.pk])).content.decode()
    later_page = carol.get(reverse("admin:memos_memo_dashboard", args=[correction.pk])).content.decode()
    assert reverse("admin:memos_memo_change", args=[correction.pk]) in earlier and "Corrected by" in earlier
    assert reverse("admin:memos_memo_change", args=[memo.pk]) in later_page and "This memo corrects" in later_page


def test_a_withdrawn_memo_can_be_corrected_and_a_viewer_cannot(memo: Memo, developers: dict[str, Developer]) -> None:
    sent_memo(memo)
    memo_withdraw(memo=memo, by=None, reason="The date was wrong.")
    viewer = Client()
    viewer.force_login(staff("victor", "Viewer"))
    url = reverse("admin:memos_memo_correct", args=[memo.pk])
    assert 'id="send-correction"' not in viewer.get(reverse("admin:memos_memo_change", args=[memo.pk])).content.decode()
    assert viewer.post(url).status_code == 403
    composer = Client()
    composer.force_login(staff("carol", "Composer"))
    assert composer.get(url).status_code == 405  # a GET (a link scanner, a prefetch) creates nothing
    assert not Memo.objects.filter(supersedes=memo).exists()
    composer.post(url)
    assert Memo.objects.get(supersedes=memo).status == Memo.Status.DRAFT


def test_a_dispute_carried_to_the_correction_and_exempted_there_exempts_from_the_correction(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None, clock: Any
) -> None:
    proxied = make_developer("ru-proxy", "RU")
    Memo.objects.filter(pk=memo.pk).update(ack_deadline=timezone.now() + dt.timedelta(days=10), reminder_days=[7])
    sent_memo(Memo.objects.get(pk=memo.pk), at=timezone.now() - dt.timedelta(hours=2))
    answered(memo, proxied, "disputes_region", country="RU")  # still open when the correction goes out
    correction = memo_correction_create(memo=memo, by=None)
    Memo.objects.filter(pk=correction.pk).update(ack_deadline=timezone.now() + dt.timedelta(days=10))
    approve(Memo.objects.get(pk=correction.pk))
    sent_memo(Memo.objects.get(pk=correction.pk), at=timezone.now() - dt.timedelta(hours=1))
    carried = Case.objects.get(memo=correction, developer=proxied)

    case_decide_dispute(case=carried, by=staff("anna", "Composer"), outcome="exempted", rationale="A proxy's traffic.")

    clock.move_to(timezone.now() + dt.timedelta(days=4))  # the correction's 7-day reminder is due
    reminders_send_due()
    reminded = Delivery.objects.filter(memo=correction, kind=Delivery.Kind.REMINDER)
    assert reminded.exists() and not reminded.filter(developer=proxied).exists()
    client = Client()
    client.get(ack_url(correction.pk, proxied.pk).removeprefix("http://testserver"))
    page = client.get(f"/ack/memo/{correction.pk}/").content.decode()
    assert "This memo no longer applies to you" in page and 'value="acknowledged"' not in page
    refused = client.post(f"/ack/memo/{correction.pk}/", {"interacted": "1", "response": "acknowledged"})
    assert refused.status_code == 400 and not Answer.objects.filter(memo=correction, developer=proxied).exists()


def test_once_its_correction_is_sent_the_earlier_memo_says_so_and_takes_no_new_answers(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None
) -> None:
    reader = make_developer("cn-zh", "CN", language="zh-hans")
    sent_memo(memo, at=timezone.now() - dt.timedelta(hours=2))
    correction = memo_correction_create(memo=memo, by=None)
    approve(Memo.objects.get(pk=correction.pk))
    sent_memo(Memo.objects.get(pk=correction.pk), at=timezone.now() - dt.timedelta(hours=1))
    day = f"{Memo.objects.get(pk=correction.pk).send_started_at:%Y-%m-%d}"

    for developer, notice, refusal in [
        (developers["ru"], f"This notice was corrected on {day}", "This memo was corrected: answer the corrected"),
        (reader, f"本通知已于 {day} 更正", "此备忘录已更正"),
    ]:
        client = Client()
        client.get(ack_url(memo.pk, developer.pk).removeprefix("http://testserver"))
        page = f"/ack/memo/{memo.pk}/"
        shown = client.get(page).content.decode()
        assert notice in shown and 'value="acknowledged"' not in shown  # no button to press in vain
        for answer in [{"response": "acknowledged"}, {"response": "needs_help", "comment": "Which regions?"}]:
            refused = client.post(page, {"interacted": "1", **answer})
            assert refused.status_code == 400 and refusal in refused.content.decode()
    assert not Answer.objects.filter(memo=memo).exists() and not Case.objects.filter(memo=memo).exists()
    # The correction's own page says nothing of the kind, and takes answers.
    client = Client()
    client.get(ack_url(correction.pk, developers["ru"].pk).removeprefix("http://testserver"))
    assert "was corrected on" not in client.get(f"/ack/memo/{correction.pk}/").content.decode()


def test_a_carried_region_dispute_is_corrected_against_the_correction_s_audience(
    memo: Memo, developers: dict[str, Developer], later: list[Any], eager: None
) -> None:
    moved = make_developer("ru-moved", "RU")
    sent_memo(memo, at=timezone.now() - dt.timedelta(hours=2))
    answered(memo, moved, "disputes_region", country="KZ")
    correction = memo_correction_create(memo=memo, by=None)
    Memo.objects.filter(pk=correction.pk).update(include_countries=["CN", "RU", "KZ"])  # what was wrong
    approve(Memo.objects.get(pk=correction.pk))
    sent_memo(Memo.objects.get(pk=correction.pk), at=timezone.now() - dt.timedelta(hours=1))

    carried = Case.objects.get(memo=correction, developer=moved)
    case_decide_dispute(case=carried, by=staff("anna", "Composer"), outcome="corrected", rationale="They moved.")

    # Kazakhstan is in the correction's audience: it still applies, and asks for an acknowledgement.
    client = Client()
    client.get(ack_url(correction.pk, moved.pk).removeprefix("http://testserver"))
    page = client.get(f"/ack/memo/{correction.pk}/").content.decode()
    assert 'value="acknowledged"' in page and "This memo no longer applies to you" not in page
    assert Developer.objects.get(pk=moved.pk).country.code == "KZ"
