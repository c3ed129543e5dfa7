"""Rendering by substitution: whoever the developer is, the email they get is exactly
the one a full render of the memo's templates gives them."""

import datetime as dt

import pytest
from django_countries import countries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memo_service.memos.compose.context import developer_in_language
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.compose.sandbox import budget
from memo_service.memos.models import Memo
from tests.conftest import make_memo

pytestmark = pytest.mark.django_db

PLAIN = {
    "subject": "Access from {{ developer.country_name }} ends for {{ developer['name'] }}",
    "html_body": "<p>Dear {{ developer.name }} of {{ developer.organization }},</p>"
    "{% if memo.ack_deadline %}<p>by {{ memo.ack_deadline.strftime('%d %B') }}</p>{% endif %}"
    "{% for i in range(2) %}<p>{{ developer.email }} #{{ i }}</p>{% endfor %}<a href='{{ ack_url }}'>go</a>",
    "text_body": "Dear {{ developer.name }} ({{ developer.external_id }}, {{ developer.country }}, "
    "{{ developer.language }})\n{{ ack_url }}",
}

values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


def memo(**fields: str) -> Memo:
    return Memo(slug="s", effective_date=dt.date(2027, 7, 9), **{"title": "Bench & <co>", **PLAIN, **fields})


def developer(**fields: str) -> dict[str, str]:
    return {
        "name": "Ada",
        "organization": "Engines",
        "email": "ada@example.com",
        "external_id": "a-1",
        "country": "CN",
        "country_name": "China",
        "language": "en",
        "traffic_countries": "",
        "traffic_summary": "",
        **fields,
    }


def both(renderer: MemoRenderer, dev: dict[str, str], url: str = "https://x.test/ack/t/"):
    """(render, full render) of the same values: the country's name as the text writes it."""
    fast = renderer.render(dev, url)
    return fast, renderer._render_full(developer_in_language(dev, fast[0]), url)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    name=values, organization=values, country=st.sampled_from([code for code, _ in countries]), email=values, url=values
)
def test_substitution_gives_every_developer_exactly_the_full_render(name, organization, country, email, url):
    renderer = MemoRenderer(memo())
    (language, fast), (_, full) = both(
        renderer, developer(name=name, organization=organization, country=country, email=email), url
    )
    assert renderer._skeletons["en"] is not None  # the plain memo does qualify
    if all(v and " ".join(v.split()) == v for v in (name, countries.name(country))):  # fit a one-line subject
        assert fast.skeleton is not None
    assert (fast.subject, fast.html, fast.text) == (full.subject, full.html, full.text)
    assert language == "en"


def test_markup_and_whitespace_in_values_come_out_as_a_full_render_prints_them():
    renderer = MemoRenderer(memo())
    for name in [
        "<script>alert(1)</script>",
        'O\'Brien & "Sons"',
        "  two  spaces ",
        "",
        "line\nbreak",
        "\ue000 7 \ue001",
    ]:
        (_, fast), (_, full) = both(renderer, developer(name=name, country_name=name))
        assert (fast.subject, fast.html, fast.text) == (full.subject, full.html, full.text), name
    assert "&lt;script&gt;" in both(renderer, developer(name="<script>"))[0][1].html


@pytest.mark.parametrize(
    "field, source",
    [
        ("html_body", "{% if developer.country == 'CN' %}China{% else %}elsewhere{% endif %}"),
        ("html_body", "{{ developer.name|upper }}"),
        ("text_body", "{{ developer.name ~ '!' }}"),
        ("text_body", "{% set d = developer %}{{ d.name }}"),
        ("text_body", "{% filter upper %}{{ developer.name }}{% endfilter %}"),
        ("html_body", "{% autoescape false %}{{ developer.name }}{% endautoescape %}"),
        ("text_body", "{% macro m() %}{{ developer.name }}{% endmacro %}{{ m()|lower }}"),
        ("text_body", "{{ developer }}"),
        ("text_body", "{% for k in developer %}{{ k }}{% endfor %}"),
        ("subject", "{{ developer.name[:3] }}"),
        ("text_body", "{{ ack_url|length }}"),
        ("text_body", "{% set c %}{{ developer.country }}{% endset %}{% if c == 'CN' %}China{% endif %}"),
        ("text_body", "{% set n | upper %}{{ developer.name }}{% endset %}{{ n }}"),
        ("text_body", "{% block b %}{{ developer.name }}{% endblock %} {{ self.b()|upper }}"),
        (
            "text_body",
            "{% for x in [[1]] recursive %}{% if x is iterable %}{{ loop(x)|upper }}"
            "{% else %}{{ developer.name }}{% endif %}{% endfor %}",
        ),
    ],
)
def test_a_template_that_uses_a_value_other_than_printing_it_renders_in_full(field, source):
    renderer = MemoRenderer(memo(**{field: source}))
    for dev in [developer(), developer(name="Zoë <z>", country="RU", country_name="Russia")]:
        (_, fast), (_, full) = both(renderer, dev)
        assert fast.skeleton is None
        assert (fast.subject, fast.html, fast.text) == (full.subject, full.html, full.text)
    assert renderer._skeletons["en"] is None


def test_a_developer_whose_language_has_no_translation_gets_the_english_skeleton_with_their_own_language():
    renderer = MemoRenderer(make_memo(**PLAIN))
    (language, fast), (_, full) = both(renderer, developer(language="fr"))
    assert language == "en" and fast.skeleton is not None
    assert fast.text == full.text and "fr)" in fast.text


def test_a_placeholder_lookalike_in_the_memo_is_text_not_a_value():
    renderer = MemoRenderer(memo(title="\ue0000\ue001", text_body="{{ memo.title }} / {{ developer.name }}"))
    for name in ["two  spaces", "Ada"]:  # the first does not fit a subject: no check on it
        (_, fast), (_, full) = both(renderer, developer(name=name))
        assert fast.text == full.text


def test_the_output_limit_holds_for_the_values_not_the_placeholders(monkeypatch):
    # 170,000 iterations below: about the render deadline on a loaded machine, and the
    # deadline is not what this test is about.
    monkeypatch.setattr(budget, "RENDER_SECONDS", 30.0)
    long_output = MemoRenderer(memo(text_body="{% for i in range(10000) %}{{ developer.name }}{% endfor %}"))
    both(long_output, developer(name="Ada"))
    with pytest.raises(Exception, match="longer than"):
        long_output.render(developer(name="x" * 60), "https://x.test/ack/t/")
    # 170,000 two-letter codes fit; as many three-character placeholders would not.
    many = MemoRenderer(
        memo(
            text_body="{% for i in range(100) %}{% for j in range(1700) %}"
            "{{ developer.country }}{% endfor %}{% endfor %}"
        )
    )
    (_, fast), (_, full) = both(many, developer())
    assert fast.text == full.text
