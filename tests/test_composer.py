"""The composer who means harm: a template is code. What the templates can tell apart
at send, they tell apart at preview and approval too, and no error of theirs carries a
developer's live link."""

import io
import time

import pytest
from django.core import signing
from django.core.management import CommandError, call_command

from memo_service.memos.answer.tokens import ack_url, answer_token
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.links import LINK_MARK, inert_ack_url, link_placeholder
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import approve, wait_for
from tests.test_sending import queued

pytestmark = pytest.mark.django_db


def set_bodies(memo, text):
    Memo.objects.filter(pk=memo.pk).update(text_body=text, html_body=f"<p>{text}</p>")
    memo.translations.all().delete()
    memo.refresh_from_db()


def test_a_time_bomb_in_the_link_is_seen_at_preview_exactly_as_at_send(memo, developers, mailgun):
    """The signing time inside the link, compared with a time just after approval: off
    at preview, check and approval, on at send, once. Templates see one constant
    placeholder for the link, whenever and for whomever they render."""
    bomb = int(time.time()) + 2
    soon = signing.b62_encode(bomb)
    set_bodies(
        memo, "{% set ns = namespace(u=ack_url) %}{% if ns.u.split(':')[-2] > '" + soon + "' %}TIMEBOMB{% endif %}."
    )
    ids = queued(memo)
    preview = MemoRenderer(memo).render(developer_context(developers["cn"]), inert_ack_url(memo.pk, 0))[1].text
    # Past the bomb's time (a link's signing time is in whole seconds): the real links are signed later than it.
    wait_for(lambda: int(time.time()) > bomb, timeout=10, what="the clock to pass the bomb's time", interval=0.05)
    delivery_send_batch(delivery_ids=ids)
    sent = [m.first("text") for m in mailgun.accepted]
    assert sent and all(("TIMEBOMB" in text) == ("TIMEBOMB" in preview) for text in sent)


def test_what_a_template_sees_of_the_link_is_one_constant(memo, developers, mailgun):
    set_bodies(memo, "[{{ ack_url|length }}] {{ ack_url }}")
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    lengths = {m.first("text").split("]")[0] for m in mailgun.accepted}
    assert lengths == {f"[{len(link_placeholder())}"}
    # ...and each developer still gets their own link, where the template printed it.
    for message in mailgun.accepted:
        assert "/ack/" in message.first("text") and LINK_MARK not in message.first("text")


def failed_at_send(memo, developers, template):
    """The memo sent with `template`, which fails only for a developer with no name: RU,
    whose name is gone after the check before the send. Returns RU's delivery."""
    set_bodies(memo, template)
    ids = queued(memo)  # every developer has a name at the check
    developers["ru"].name = ""
    developers["ru"].save()
    delivery_send_batch(delivery_ids=ids)
    return Delivery.objects.get(developer=developers["ru"])


def test_a_link_taken_apart_fails_naming_no_link(memo, developers, mailgun):
    failed = failed_at_send(memo, developers, "Hello {% if developer.name == '' %}{{ ack_url|upper }}{% endif %}")
    assert failed.status == "failed" and "ack_url may only be printed as it is" in failed.status_reason
    assert "/ack/" not in failed.status_reason


def test_a_render_error_on_the_link_names_the_template_not_the_link(memo, developers, mailgun):
    """`{}[ack_url]` once put the developer's live link in the reason a Viewer can read."""
    failed = failed_at_send(memo, developers, "{% if developer.name == '' %}{{ {}[ack_url] }}{% endif %}Hello")
    assert failed.status == "failed" and failed.status_reason.startswith("template error")
    assert ack_url(memo.pk, developers["ru"].pk) not in failed.status_reason
    assert answer_token(memo.pk, developers["ru"].pk) not in failed.status_reason


def test_a_render_error_names_the_line_and_none_of_the_developers_values(memo, developers, mailgun):
    """The reason a sender and a Viewer read says where the template fails, not who the
    developer is ("'dict object' has no attribute 'Olga Petrova'")."""
    set_bodies(memo, "Hello\n{% if developer.name.startswith('O') %}{{ {}[developer.name] }}{% endif %}")
    approve(memo)
    with pytest.raises(CommandError) as refused:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
    message = str(refused.value)
    assert "does not render for developer ru-1: line 2:" in message
    assert "Olga" not in message and "[developer.name]" in message
