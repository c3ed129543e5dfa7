"""A composer's template attacking the developers it does not show the approver: every
render, wherever it runs, is on a budget of operations, time and memory; an over-budget
render fails alone, and the process goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.urls import reverse

from memo_service.developers.models import Developer
from memo_service.memos.answer.tokens import ack_url
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.checks import memo_check, problems_text
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sandbox import environments, trial_server
from memo_service.memos.compose.sandbox.budget import RENDER_SECONDS
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
from tests.conftest import approve, found, make_developer, sent_delivery, sent_memo

pytestmark = pytest.mark.django_db

VICTIM_ONLY = "{{% if developer.external_id == 'victim-1' %}}{}{{% endif %}}Dear {{{{ developer.name }}}}"
CPU_BURNER = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"


def context(external_id: str) -> dict[str, str]:
    return {
        "name": "N",
        "organization": "O",
        "email": f"{external_id}@example.com",
        "external_id": external_id,
        "country": "CN",
        "country_name": "China",
        "language": "en",
        "traffic_countries": "",
        "traffic_summary": "",
    }


def test_a_cpu_burning_loop_for_one_developer_fails_that_render_only_and_quickly(memo):
    memo.text_body = VICTIM_ONLY.format(CPU_BURNER)
    renderer = MemoRenderer(memo)
    start = time.monotonic()
    with pytest.raises(sandbox.RenderLimit, match="too many operations|too long to render"):
        renderer.render(context("victim-1"), "http://testserver/ack/t/")
    assert time.monotonic() - start < RENDER_SECONDS + 1.5
    assert renderer.render(context("other-1"), "http://testserver/ack/t/")[1].text.startswith("Dear N")


@pytest.fixture
def victim_sent(memo):
    """The memo, burning CPU for victim-1 only, as sent to cn-1 and ru-1 and perhaps to
    victim-1: they joined after the check before the send, and the call with their email
    ended not knowing whether the provider took it. Their page shows the memo rendered
    for them now (no text was kept of an email never known to be sent)."""
    Memo.objects.filter(pk=memo.pk).update(html_body=VICTIM_ONLY.format(CPU_BURNER))  # the draft's
    memo.refresh_from_db()
    approve(memo)
    memo_send_start(memo=memo, dispatch_in_worker=False)
    victim = make_developer("victim-1", "CN")
    sent_memo(memo, {victim: "outcome_unknown"})
    return memo, victim


def test_a_cpu_burning_page_for_one_developer_is_a_clear_error_and_the_next_page_is_served(client, victim_sent, caplog):
    memo, victim = victim_sent
    client.get(ack_url(memo.pk, victim.pk))
    for method in (client.get, client.head):
        start = time.monotonic()
        response = method(reverse("ack-page", args=[memo.pk]))
        assert response.status_code == 503
        assert time.monotonic() - start < RENDER_SECONDS + 2.5  # a loaded CI machine's slack
    assert "cannot be shown right now" in client.get(reverse("ack-page", args=[memo.pk])).content.decode()
    assert "victim-1" not in caplog.text  # the log names ids only
    other = Developer.objects.get(external_id="cn-1")
    client.get(ack_url(memo.pk, other.pk))
    assert client.get(reverse("ack-page", args=[memo.pk])).status_code == 200


def test_a_cpu_burning_template_fails_one_delivery_and_the_worker_sends_the_rest(memo, mailgun, eager):
    make_developer("victim-1", "CN")
    Memo.objects.filter(pk=memo.pk).update(text_body=VICTIM_ONLY.format(CPU_BURNER))
    approve(memo)
    # The check before the send renders the victim too, and refuses the memo...
    with pytest.raises(Exception, match="does not render for developer victim-1: .*(operations|too long)"):
        call_command("send_memo", memo.slug)
    # ...and should the victim join after the check, the worker fails only their email.
    from memo_service.memos.tasks import send_batch

    Developer.objects.filter(external_id="victim-1").update(is_active=False)  # not in the audience at the check
    memo_send_start(memo=memo, accept_audience_changes=True, dispatch_in_worker=False)
    Developer.objects.filter(external_id="victim-1").update(is_active=True)  # back before the dispatch
    memo_dispatch(memo_id=memo.pk)
    send_batch(list(Delivery.objects.values_list("pk", flat=True)))
    statuses = dict(Delivery.objects.values_list("developer__external_id", "status"))
    assert statuses == {"victim-1": "failed", "cn-1": "sent", "ru-1": "sent"}
    error = Delivery.objects.get(developer__external_id="victim-1").status_reason
    assert error.startswith("template error: line 1: not allowed:") and ("operations" in error or "too long" in error)


# Each builds a gigabyte or more, for the victim only, in a way Jinja's sandbox alone lets through.
MEMORY_BOMBS = {
    "format_padding": "{{ '{:>999999999}'.format(1) }}",
    "join_of_repeated_list": "{% set s = 'x' * 400000 %}{{ ([s] * 1000)|join }}",
    "str_join_method": "{% set s = 'y' * 400000 %}{{ s.join(range(10000)|map('string')) }}",
    "printed_shared_list": "{% set s = 'x' * 400000 %}{% set a = [s, s, s, s] %}{% set b = [a, a, a, a] %}"
    "{% set c = [b, b, b, b] %}{% set d = [c, c, c, c] %}{{ d }}",
    "printed_dict_view": "{% set s = 'x' * 400000 %}{% set a = [s, s, s, s] %}{% set b = [a, a, a, a] %}"
    "{% set c = {'1': b, '2': b, '3': b, '4': b} %}{% set d = {'1': c, '2': c, '3': c, '4': c} %}"
    "{% set e = {'1': d, '2': d, '3': d, '4': d} %}{{ e.values() }}",
    "captured_block_doubling": "{% set s = 'x' * 400000 %}{% set a %}{{ s }}{{ s }}{% endset %}"
    + "".join("{% set a %}{{ a }}{{ a }}{% endset %}" for _ in range(12))
    + "{{ a|length }}",
    "concat_doubling": "{% set a = 'x' * 400000 %}" + "{% set a = a ~ a %}" * 12 + "{{ a|length }}",
    "namespace_list_doubling": "{% set ns = namespace(l=['x' * 1000]) %}{% for i in range(30) %}"
    "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
    "batch_fill": "{{ 'x'|batch(999999999, 'y')|list|length }}",
    "batch_fill_by_keyword": "{{ 'x'|batch(linecount=999999999, fill_with='y')|list|length }}",
    "translate_table": "{{ ('x' * 400000).translate({120: 'y' * 400000}) }}",
    "int_to_bytes": "{{ (1).to_bytes(999999999, 'big')|length }}",
    "strftime_width": "{{ memo.effective_date.strftime('%999Y' * 100000)|length }}",
    "quadratic_sum_of_lists": "{{ ([[1]] * 70000)|sum(start=[])|length }}",
    "recursive_macro_doubling": "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}"
    "{% endif %}{% endmacro %}{{ d('x' * 1000, 40) }}",
}

# In a child process with a 1 GB address-space limit on top of what it holds, so that
# without the budget the bomb ends in a MemoryError, not in this machine's OOM killer.
CHILD = (
    trial_server.LOAD_PACKAGE  # as the trial server loads it: the sandbox alone
    + """
import json, resource, time
from jinja2.sandbox import SecurityError
with open("/proc/self/statm") as f:
    in_use = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (in_use + 2**30, resource.RLIM_INFINITY))
template = sandbox.text_env.from_string(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    sandbox.render_limited(template, {"developer": {"external_id": "victim-1", "name": "N"},
                                      "memo": {"effective_date": __import__("datetime").date(2027, 7, 9)}})
    error = None
except Exception as exc:
    error = [type(exc).__name__, sandbox.describe(exc), isinstance(exc, SecurityError)]
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"error": error, "seconds": time.monotonic() - start, "grown": grown}))
"""
)


@pytest.mark.process
@pytest.mark.parametrize("bomb", MEMORY_BOMBS.values(), ids=MEMORY_BOMBS.keys())
def test_a_memory_bomb_behind_a_condition_is_refused_in_process_before_it_is_built(bomb):
    source = VICTIM_ONLY.format(bomb)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, os.path.dirname(sandbox.__file__), source],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["error"] is not None and outcome["error"][2], outcome  # the sandbox's refusal, no MemoryError
    assert outcome["error"][1].startswith("not allowed:")
    assert outcome["grown"] < 100 * 2**20 and outcome["seconds"] < RENDER_SECONDS + 1, outcome


def test_an_honest_template_renders_as_before(memo, developers):
    memo.html_body = (
        "{% set greeting = 'Dear ' ~ developer.name %}<p>{{ greeting }},</p>"
        "{% for line in ['one', 'two'] %}<li>{{ loop.index }}. {{ line|upper }}</li>{% endfor %}"
        "{% macro box(t) %}<b>{{ t }}</b>{% endmacro %}{{ box(developer.country_name) }}"
        "{{ (memo.effective_date - memo.effective_date).days + 2 * 3 }}"
    )
    email = MemoRenderer(memo).render(developer_context(developers["ru"]), "http://testserver/ack/t/")[1]
    assert "<p>Dear Olga Petrova,</p><li>1. ONE</li><li>2. TWO</li><b>Russia</b>6" in email.html


# --- a template cannot tell a preview, a check or a test send from the send --------

# Breaks (an undefined variable) unless ack_url has the shape of a real link:
# SITE_URL/ack/<payload>:<timestamp>:<signature>/
NEEDS_A_REAL_LINK = (
    "{% set parts = ack_url.split('/') %}"
    "{% if parts|length != 6 or parts[3] != 'ack' or parts[4].split(':')|length != 3 %}"
    "{{ not_a_real_link }}{% endif %}Reply to {{ ack_url }}"
)


def test_a_template_cannot_tell_the_save_preview_test_send_or_check_from_the_send(
    admin_client, memo, developers, mailoutbox
):
    """Templates see one constant for the link at save, preview, test send, check and
    send: one that insists on a real token's shape fails at save, never at send."""
    Memo.objects.filter(pk=memo.pk).update(text_body=NEEDS_A_REAL_LINK)
    memo.refresh_from_db()
    assert "not_a_real_link" in problems_text(memo_check(memo))  # the trial render at save
    Memo.objects.filter(pk=memo.pk).update(text_body="Reply to {{ ack_url }}")
    memo.refresh_from_db()
    preview = reverse("admin:memos_memo_preview", args=[memo.pk])
    assert "not_a_real_link" not in admin_client.get(preview, {"developer": "cn-1"}).content.decode()
    admin_client.post(preview, {"developer": "cn-1", "language": "en"})  # the test send
    approve(memo)
    call_command("send_memo", memo.slug)  # the check before the send renders the whole audience
    link = found(r"Reply to (\S+)", mailoutbox[0].body, 1)
    real = ack_url(memo.pk, developers["cn"].pk)
    assert len(link) == len(real) and link.count(":") == real.count(":")
    # The test email's link is refused even though the developer now has a delivery.
    sent_delivery(memo, developers["cn"])
    refused = admin_client.get(link.removeprefix("http://testserver"))
    assert refused.status_code == 400 and "The link of a test email" in refused.content.decode()
    assert admin_client.get(real.removeprefix("http://testserver")).status_code == 303


def test_a_slow_to_compile_template_costs_each_page_view_nothing_after_the_first(client, memo, developers):
    """Compiling is bounded only at save (the trial render's child process): each process
    compiles a source once, not at every view of the developer's page."""
    Memo.objects.filter(pk=memo.pk).update(html_body="{% if developer.country == 'XX' %}x{% endif %}" * 2000)
    memo.refresh_from_db()
    sent_memo(memo)  # approved as it is
    client.get(ack_url(memo.pk, developers["cn"].pk))
    environments._compiled.cache_clear()
    for _ in range(3):
        assert client.get(reverse("ack-page", args=[memo.pk])).status_code == 200
    assert environments._compiled.cache_info().misses == 3  # subject, html and text, once each
