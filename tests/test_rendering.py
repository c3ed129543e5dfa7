"""Templates: what an admin sees when a template is wrong, and what a developer receives."""

import pytest

from memo_service.memos.compose.checks import templates_check
from memo_service.memos.compose.context import SAMPLE_DEVELOPER, TEMPLATE_VARIABLES, developer_context
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sources import memo_content_hash
from memo_service.memos.models import Memo
from tests.conftest import make_developer

pytestmark = pytest.mark.django_db


def check(source: str, field: str = "text_body") -> str:
    errors = templates_check(memo=Memo(title="t"), sources={field: source}, language="en")
    return errors.get(field, "")


def test_it_accepts_a_template_using_the_listed_variables():
    source = " ".join("{{ " + name + " }}" for name in TEMPLATE_VARIABLES)
    assert check(source) == ""


@pytest.mark.parametrize(
    "source, expected",
    [
        ("Hello\n{{ developer.name }\n", "line 2: syntax error"),
        ("a\nb\n{{ developer.nmae }}", "line 3: "),
        ("{{ colour }}", "colour is not a variable"),
    ],
)
def test_it_names_the_line_of_a_broken_template(source, expected):
    assert expected in check(source)


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "Hi\n{{ developer.contry_name }}",
            "line 2: developer.contry_name is not a variable: did you mean developer.country_name?",
        ),
        ("{{ memo.efective_date }}", "line 1: memo.efective_date is not a variable: did you mean memo.effective_date?"),
        ("{{ developr.name }}", "line 1: developr is not a variable: did you mean developer?"),
        ("{{ ack_ur }}", "line 1: ack_ur is not a variable: did you mean ack_url?"),
        ("{{ zzz }}", "line 1: zzz is not a variable; the variables are developer.name, "),
    ],
)
def test_an_unknown_variable_is_named_with_the_nearest_known_one(source, expected):
    assert check(source).startswith(expected)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''|attr('__class__')|attr('__mro__') }}",
        "{{ self.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ developer.__class__ }}",
    ],
)
def test_it_rejects_template_injection_payloads(payload):
    error = check(payload)
    assert error.startswith("line 1:"), error


@pytest.mark.parametrize(
    "bomb",
    [
        "{{ range(10**9)|list }}",
        "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
        "{{ 'a' * 10**9 }}",
        "{{ '%999999999s' % 1 }}",
        "{{ 'a'.ljust(999999999) }}",
        "{{ 'a'|center(999999999) }}",
        "{% set s = 'x' * 100000 %}{{ s.replace('', s) }}",
        "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}",
    ],
)
def test_it_rejects_runaway_templates_at_save(bomb):
    assert check(bomb) != ""


def test_a_runaway_loop_is_reported_on_its_line():
    error = check("ok\n{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}")
    assert error.startswith("line 2:") and "too long" in error


def test_trial_renders_go_on_after_their_child_server_dies_or_the_process_forks():
    """The trial server is kept between trials: one killed (by an operator, the OOM killer)
    is replaced at the next trial, and a process forked after it started (a Celery
    prefork child) starts its own rather than share the parent's pipe."""
    from memo_service.memos.compose import trial

    assert check("{{ developer.nmae }}") != ""
    first = trial._server.process
    assert first is not None
    first.kill()
    first.wait()
    assert check("{{ developer.name }}") == "" and check("{{ colour }}") != ""
    assert trial._server.process is not first
    trial._server.owner = -1  # as a forked child sees it: not its own
    second = trial._server.process
    assert check("{{ developer.name }}") == ""
    assert trial._server.process is not second


def test_html_is_escaped_and_text_and_subject_are_not(memo, developers):
    memo.subject = "{{ developer.organization }}"
    memo.html_body = "<p>{{ developer.organization }}</p>"
    memo.text_body = "{{ developer.organization }}"
    developer = {**SAMPLE_DEVELOPER, "organization": "Tom & <Jerry>", "country": "US", "country_name": "United States"}
    language, email = MemoRenderer(memo).render(developer, "http://testserver/ack/t/")
    assert email.subject == "Tom & <Jerry>"
    assert "<p>Tom &amp; &lt;Jerry&gt;</p>" in email.html
    assert email.text.startswith("Tom & <Jerry>")
    assert "http://testserver/ack/t/" in email.text and 'href="http://testserver/ack/t/"' in email.html


def test_the_developers_language_picks_the_translation_and_english_is_the_fallback(memo):
    renderer = MemoRenderer(memo)
    base = {**SAMPLE_DEVELOPER, "country": "CN", "country_name": "中国"}
    zh, email_zh = renderer.render({**base, "language": "zh-hans"}, "http://testserver/ack/t/")
    fr, email_fr = renderer.render({**base, "language": "fr"}, "http://testserver/ack/t/")
    assert (zh, email_zh.subject) == ("zh-hans", "来自中国的访问将被阻止")
    # The English text names the country in English, whatever the developer speaks.
    assert fr == "en" and email_fr.subject.startswith("Access from China ends 2027-07-09")


@pytest.mark.parametrize(
    "country, language, expected",
    [
        ("BR", "fr", "Access from Brazil ends"),
        ("MX", "ja", "Access from Mexico ends"),
        ("CN", "zh-hans", "来自中国的访问将被阻止"),
    ],
)
def test_values_in_a_text_are_in_the_texts_language(memo, country, language, expected):
    developer = make_developer(f"{country}-{language}", country, language)
    used, email = MemoRenderer(memo).render(developer_context(developer), "http://testserver/ack/t/")
    assert email.subject.startswith(expected)
    assert (expected.split()[-2] if used == "en" else "中国") in email.text


def test_an_english_preview_of_a_chinese_speaking_developer_says_china(admin_client, memo, developers):
    page = admin_client.get(f"/admin/memos/memo/{memo.pk}/preview/?developer=cn-1&language=en").content.decode()
    assert "Access from China ends" in page and "Access from 中国" not in page


def test_dates_are_written_in_the_texts_language(memo):
    memo.subject = "Blocked from {{ memo.effective_date_text }}"
    memo.save()
    translation = memo.translations.get()
    translation.subject = "自{{ memo.effective_date_text }}起阻止"
    translation.save()
    memo = Memo.objects.get(pk=memo.pk)
    base = {**SAMPLE_DEVELOPER, "country": "CN"}
    renderer = MemoRenderer(memo)
    assert renderer.render({**base, "language": "fr"}, "u")[1].subject == "Blocked from July 9, 2027"
    assert renderer.render({**base, "language": "zh-hans"}, "u")[1].subject == "自2027年7月9日起阻止"


def test_the_content_hash_changes_with_any_language_of_the_text(memo):
    before = memo_content_hash(memo)
    translation = memo.translations.get()
    translation.text_body += " "
    translation.save()
    memo = Memo.objects.get(pk=memo.pk)
    assert memo_content_hash(memo) != before


@pytest.mark.parametrize(
    "bomb",
    [
        "{{ ((((9**128)**128)**128)**5) > 0 }}",
        "{{ (['x' * 500000] * 1000)|join|length }}",
    ],
)
def test_templates_that_burn_cpu_or_memory_in_c_code_are_rejected_quickly(bomb):
    import time

    start = time.monotonic()
    assert check(bomb) != ""
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "payload",
    [
        "{{ developer.update(email='attacker@example.net') or '' }}",
        "{% set _ = developer.__setitem__('email', 'x') %}",
        "{{ memo.clear() }}",
    ],
)
def test_a_template_cannot_change_the_values_it_is_given(payload):
    assert check(payload).startswith("line 1:")


def write_catalog(folder, language: str, messages: dict[str, str]) -> None:
    """A compiled gettext catalog (GNU .mo), as `compilemessages` writes one."""
    import struct

    path = folder / language / "LC_MESSAGES"
    path.mkdir(parents=True)
    entries = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **messages}.items())
    ids = b"".join(k.encode() + b"\0" for k, _ in entries)
    strs = b"".join(v.encode() + b"\0" for _, v in entries)
    start = 7 * 4 + 16 * len(entries)
    offsets, pos = [], 0
    for key, _ in entries:
        offsets += [len(key.encode()), start + pos]
        pos += len(key.encode()) + 1
    pos = 0
    for _, value in entries:
        offsets += [len(value.encode()), start + len(ids) + pos]
        pos += len(value.encode()) + 1
    header = struct.pack("<7I", 0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0)
    (path / "django.mo").write_bytes(header + struct.pack(f"<{len(offsets)}I", *offsets) + ids + strs)


def test_a_new_language_for_the_email_layout_is_a_catalog_and_no_code(settings, tmp_path, developers):
    from memo_service.memos.models import MemoTranslation
    from tests.conftest import make_memo

    write_catalog(
        tmp_path,
        "fr",
        {
            "Read and acknowledge this memo:": "Lisez et confirmez ce mémo :",
            "Reminder: %(subject)s": "Rappel : %(subject)s",
            "You have not answered this memo yet. Please read it and acknowledge it by %(date)s.": "Vous n'avez pas encore répondu. Lisez-le et confirmez-le avant le %(date)s.",
        },
    )
    settings.LOCALE_PATHS = [tmp_path, *settings.LOCALE_PATHS]
    settings.LANGUAGES = [*settings.LANGUAGES, ("fr", "Français")]
    memo = make_memo()
    MemoTranslation.objects.create(
        memo=memo, language="fr", subject="Accès bloqué", html_body="<p>Bonjour</p>", text_body="Bonjour"
    )
    developer = developer_context(developers["us"]) | {"language": "fr"}

    language, email = MemoRenderer(memo, reminder=True).render(developer, "http://testserver/ack/t/")
    assert language == "fr"
    assert email.subject == "Rappel : Accès bloqué"
    assert "Lisez et confirmez ce mémo :\nhttp://testserver/ack/t/" in email.text
    assert "Vous n'avez pas encore répondu. Lisez-le et confirmez-le avant le " in email.text
    assert "Reminder" not in email.text + email.subject
