"""Workers hand each email to the provider through anymail's real Mailgun backend."""

import time
from email.utils import formataddr

import pytest
from anymail.utils import EmailAddress
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from memo_service.memos.answer.tokens import answer_token_read
from memo_service.memos.compose.context import developer_context
from memo_service.memos.compose.rendering import MemoRenderer
from memo_service.memos.models import Delivery, EvidenceRecord, Memo
from memo_service.memos.send.sending import delivery_send_batch
from tests.conftest import dispatched, found, make_developer, make_memo, tracking_event
from tests.provider_cases import make_developers, queued, requests_of

pytestmark = pytest.mark.django_db


def test_each_developer_gets_one_email_in_their_language_with_their_link(memo, mailgun):
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)

    by_to = {m.first("to"): m for m in mailgun.accepted}
    assert set(by_to) == {"Wang Wei <cn-1@example.com>", "Olga Petrova <ru-1@example.com>"}
    cn = by_to["Wang Wei <cn-1@example.com>"]
    assert cn.first("subject") == "来自中国的访问将被阻止"
    assert "http://testserver/ack/" in cn.first("text") and "http://testserver/ack/" in cn.first("html")
    assert cn.first("from") == "Platform notices <notices@example.com>"
    # Our delivery id travels as metadata, for the tracking webhooks; no personal data.
    delivery = Delivery.objects.get(developer__external_id="cn-1")
    assert cn.first("v:delivery_id") == str(delivery.pk)
    assert (delivery.status, delivery.provider_message_id, delivery.language) == ("sent", cn.message_id, "zh-hans")
    assert delivery.sent_at is not None and delivery.attempts == 1
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_a_batch_run_twice_sends_nobody_twice(memo, mailgun):
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    delivery_send_batch(delivery_ids=ids)
    assert len(mailgun.accepted) == 2


def test_a_permanent_provider_error_fails_the_delivery_with_its_reason(memo, mailgun, later):
    ids = queued(memo)
    mailgun.failures.append((400, {"message": "'to' parameter is not a valid address"}))
    delivery_send_batch(delivery_ids=ids)
    failed = Delivery.objects.get(status="failed")
    assert "not a valid address" in failed.status_reason and "400" in failed.status_reason
    assert Delivery.objects.filter(status="sent").count() == 1
    assert len(mailgun.accepted) == 1 and later == []


def test_a_provider_fault_is_retried_later_with_backoff(memo, mailgun, later, clock):
    ids = queued(memo)
    mailgun.failures.append((503, {"message": "Service unavailable"}))
    delivery_send_batch(delivery_ids=ids)
    retried = Delivery.objects.get(status="queued")
    assert retried.not_before is not None
    assert "503" in retried.status_reason and retried.not_before > timezone.now()
    [(retry_ids, countdown)] = later
    assert retry_ids == [retried.pk] and 4 <= countdown <= 16
    clock.move_to(retried.not_before)  # the backoff waited out
    delivery_send_batch(delivery_ids=retry_ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len(mailgun.accepted) == 2  # nobody twice


def test_a_throttled_batch_waits_for_retry_after_before_anything_more(memo, mailgun, later):
    ids = queued(memo)
    mailgun.failures.append((429, {"message": "Too many requests"}, {"Retry-After": "30"}))
    delivery_send_batch(delivery_ids=ids)
    assert mailgun.requests == 1  # the second recipient was not tried while throttled
    [(retry_ids, countdown)] = later
    assert sorted(retry_ids) == sorted(ids) and countdown >= 30
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}


def test_a_fault_that_persists_fails_the_delivery_after_the_last_attempt(memo, mailgun, later, clock):
    from memo_service.memos.send.failures import MAX_ATTEMPTS

    ids = queued(memo)
    for _ in range(MAX_ATTEMPTS - 1):  # each attempt but the last: the fault, retried after its backoff
        mailgun.failures.append((500, {"message": "Internal error"}))
        delivery_send_batch(delivery_ids=[ids[0]])
        retried = Delivery.objects.get(pk=ids[0])
        assert retried.status == "queued" and retried.not_before is not None
        clock.move_to(retried.not_before)
    mailgun.failures.append((500, {"message": "Internal error"}))
    delivery_send_batch(delivery_ids=ids)
    failed = Delivery.objects.get(pk=ids[0])
    assert failed.status == "failed" and "Internal error" in failed.status_reason


def test_repeated_credential_errors_pause_the_memo_and_say_why(memo, developers, mailgun, settings, later):
    make_developer("cn-2", "CN")
    make_developer("cn-3", "CN")
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_KEY": "wrong"}
    delivery_send_batch(delivery_ids=queued(memo))
    memo.refresh_from_db()
    assert memo.status == "paused" and "refused our credentials (HTTP 401)" in memo.status_reason
    # Nobody failed for it: they wait, queued, for the fixed credentials and a resume.
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    assert mailgun.accepted == []


def test_a_template_that_fails_for_one_developer_fails_only_that_delivery(memo, developers, mailgun):
    developers["ru"].name = ""
    Memo.objects.filter(pk=memo.pk).update(text_body="{{ developer.name[0] }}")
    memo.refresh_from_db()
    ids = queued(memo)  # RU's name is gone after the check before the send
    developers["ru"].name = ""
    developers["ru"].save()
    delivery_send_batch(delivery_ids=ids)
    ru = Delivery.objects.get(developer=developers["ru"])
    assert ru.status == "failed" and ru.status_reason.startswith("template error")
    assert Delivery.objects.get(developer=developers["cn"]).status == "sent"
    assert len(mailgun.accepted) == 1


def test_the_local_outbox_is_the_default(memo, settings):
    settings.EMAIL_BACKEND = "memo_service.outbox.OutboxEmailBackend"  # pytest-django swaps in locmem
    delivery_send_batch(delivery_ids=queued(memo))
    files = sorted(settings.OUTBOX_DIR.glob("*.eml"))
    assert len(files) == 2
    delivery = Delivery.objects.first()
    assert delivery is not None and delivery.provider_message_id.endswith("@outbox.local>")
    assert any(delivery.provider_message_id in f.read_text() for f in files)


def test_a_read_timeout_is_outcome_unknown_not_failed(memo, mailgun, settings):
    """The provider may have accepted it: sending again could duplicate it."""
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    mailgun.delay = 1.0
    delivery_send_batch(delivery_ids=queued(memo))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"outcome_unknown"}
    reason = Delivery.objects.values_list("status_reason", flat=True).first()
    assert reason is not None and ("ReadTimeout" in reason or "timed out" in reason)


def test_a_provider_that_cannot_be_reached_is_tried_again_later(memo, mailgun, settings, later):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_URL": "http://127.0.0.1:9/v3"}
    delivery_send_batch(delivery_ids=queued(memo))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    assert later and "ConnectionError" in Delivery.objects.order_by("pk").values_list("status_reason", flat=True)[0]


def test_a_template_cannot_redirect_the_email(memo, mailgun):
    ids = queued(memo)
    # Bypasses the save-time check on purpose: even then the address comes from the database.
    Memo.objects.filter(pk=memo.pk).update(text_body="{{ developer.update(email='x@evil.example') }}")
    delivery_send_batch(delivery_ids=ids)
    assert {m.first("to") for m in mailgun.accepted} <= {
        "Wang Wei <cn-1@example.com>",
        "Olga Petrova <ru-1@example.com>",
    }


def test_an_address_that_bounced_before_is_not_mailed_and_its_delivery_says_why(memo, developers, mailgun):
    developers["ru"].email_status = "bounced"
    developers["ru"].save()
    delivery_send_batch(delivery_ids=queued(memo))
    ru = Delivery.objects.get(developer=developers["ru"])
    assert ru.status == "failed" and ru.status_reason.startswith("suppressed: the address bounced")
    assert [m.first("to") for m in mailgun.accepted] == ["Wang Wei <cn-1@example.com>"]


@pytest.mark.parametrize("with_text", [True, False], ids=["sent", "reconciled"])
def test_the_send_time_is_kept_when_the_providers_event_arrives_first(memo, developers, with_text):
    """As a send records it (with each email's text: one statement on PostgreSQL) and as
    reconciliation does (no text)."""
    from memo_service.memos.delivery_status import EmailText, deliveries_record_sent, delivery_claim

    ids = queued(memo)
    delivery_claim(delivery_id=ids[0])
    tracking_event(Delivery.objects.get(pk=ids[0]), "delivered")  # the webhook was faster
    values = ["Wang Wei", "", "wang@example.com", "cn-1", "CN", "中国", "zh-hans"]
    texts = {ids[0]: EmailText("zh-hans", values, "a" * 64)} if with_text else None
    deliveries_record_sent(delivery_ids=[ids[0]], message_id="<m@x>", language="en", texts=texts)
    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.provider_message_id) == ("delivered", "<m@x>")
    assert delivery.sent_at is not None
    expected = ("zh-hans", values, "a" * 64) if with_text else ("en", None, "")
    assert (delivery.language, delivery.rendered_with, delivery.text_hash) == expected
    (handover,) = EvidenceRecord.objects.filter(memo=memo, kind="handover")
    assert f'"<m@x>", "{delivery.sent_at.isoformat()}"' in handover.payload["lines"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_claiming_the_same_delivery_at_once_only_one_wins(memo, developers):
    """The second claim waits for the first's row lock, then must see 'sending' and lose."""
    import threading

    from django.db import connection, transaction

    from memo_service.memos.delivery_status import delivery_claim

    dispatched(memo)
    delivery = Delivery.objects.get(memo=memo, developer=developers["cn"])
    first_claimed, results = threading.Event(), []

    def second_worker() -> None:
        first_claimed.wait(10)
        results.append(delivery_claim(delivery_id=delivery.pk))
        connection.close()

    thread = threading.Thread(target=second_worker)
    thread.start()
    with transaction.atomic():
        results.append(delivery_claim(delivery_id=delivery.pk))
        first_claimed.set()
        thread.join(0.5)  # the second claim is now blocked on this transaction's lock
    thread.join(30)
    assert sorted(results) == [False, True]
    assert Delivery.objects.get(pk=delivery.pk).attempts == 1


@pytest.mark.parametrize(
    "backend", ["anymail.backends.mailgun.EmailBackend", "memo_service.backends.mailgun.EmailBackend"]
)
def test_refused_recipients_fail_with_the_reason_and_the_others_are_sent_once(
    memo, developers, mailgun, later, settings, backend
):
    """Batched, Mailgun refuses the whole call for one address: the call is halved until
    each refusal is down to its own recipient."""
    settings.EMAIL_BACKEND = backend
    make_developers("cn-ok", 5, "CN")
    make_developers("cn-bad", 3, "CN")
    mailgun.refuse = {"cn-bad0@", "cn-bad1@", "cn-bad2@"}
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    delivery_send_batch(delivery_ids=ids)  # a rerun changes nothing
    failed = Delivery.objects.filter(status="failed")
    assert sorted(failed.values_list("developer__external_id", flat=True)) == ["cn-bad0", "cn-bad1", "cn-bad2"]
    assert all("not a valid address" in d.status_reason for d in failed)
    addresses = [m.first("to") for m in mailgun.accepted]
    assert len(addresses) == 7 and len(set(addresses)) == 7 and later == []


def test_with_resend_each_email_carries_an_idempotency_key_and_a_resend_makes_no_copy(memo, settings):
    from tests.loopback_provider import RESEND_KEY, resend_server

    with resend_server() as resend:
        settings.EMAIL_BACKEND = "memo_service.backends.resend.EmailBackend"
        settings.ANYMAIL = {"RESEND_API_KEY": RESEND_KEY, "RESEND_API_URL": resend.url}
        ids = queued(memo)
        delivery_send_batch(delivery_ids=ids)
        # As if a worker had died after Resend accepted them and the sweeper queued them
        # again: written as they would be left (a kill in the call: tests/test_faults.py).
        Delivery.objects.update(status="queued")
        delivery_send_batch(delivery_ids=ids)
    assert resend.requests == 4 and len(resend.accepted) == 2
    assert {e["idempotency_key"] for e in resend.accepted} == {f"memo-delivery-{i}" for i in ids}
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_a_batching_backend_sends_a_task_in_one_call_per_language_with_each_recipients_own_text(
    memo, developers, mailgun, settings
):
    for i in range(8):
        make_developer(f"cn-b{i}", "CN", name=f"Batch <{i}> & Co")
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    assert mailgun.calls == 2 and len(mailgun.accepted) == 10  # English and Chinese
    by_to = {m.first("to"): m for m in mailgun.accepted}
    wang = by_to["Wang Wei <cn-1@example.com>"]
    assert wang.first("subject") == "来自中国的访问将被阻止"
    # What each recipient got is, to the character, a full render of the memo for them.
    renderer = MemoRenderer(memo)
    for delivery in Delivery.objects.select_related("developer"):
        developer = delivery.developer
        got = by_to[formataddr((developer.name, developer.email))]
        link = found(r"http://testserver/ack/[^/]+/", got.first("text"))
        assert answer_token_read(link.split("/")[-2]).developer == developer  # their own link
        _, expected = renderer._render_full(developer_context(developer), link)
        assert (got.first("subject"), got.first("html"), got.first("text")) == (
            expected.subject,
            expected.html,
            expected.text,
        )
        # Each recipient's own delivery id, for the tracking webhooks.
        assert got.first("v:delivery_id") == str(delivery.pk)
    assert "Batch &lt;3&gt; &amp; Co" in by_to['"Batch <3> & Co" <cn-b3@example.com>'].first("html")
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len({d.provider_message_id for d in Delivery.objects.all()}) == 2


def test_the_send_rate_counts_a_batch_calls_recipients_not_its_calls(memo, developers, mailgun, settings):
    """SEND_RATE_LIMIT is emails a second, as providers count theirs: after a call to nine
    recipients at five a second, the next call waits 1.8 seconds."""
    make_developers("ru-r", 8)
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    settings.SEND_RATE_LIMIT = 5
    deliveries = Delivery.objects.filter(memo=dispatched(memo))
    russia = list(deliveries.filter(developer__country="RU").values_list("id", flat=True))
    china = list(deliveries.filter(developer__country="CN").values_list("id", flat=True))
    started = time.monotonic()
    delivery_send_batch(delivery_ids=russia)  # one call, to nine
    delivery_send_batch(delivery_ids=china)  # waits for the nine's slots
    waited = time.monotonic() - started
    assert mailgun.calls >= 2 and 9 / 5 - 0.2 <= waited < 9 / 5 + 1.5


def test_a_batch_call_carries_a_substitutable_memo_once_and_only_values_per_recipient(memo, mailgun, settings):
    make_developers("ru-b", 50)
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    delivery_send_batch(delivery_ids=queued(memo))
    english = [m for m in mailgun.accepted if "ru-b" in m.first("to")]
    assert len(english) == 50
    english_call = next(body for body in mailgun.bodies if b"ru-b0" in body)
    assert english_call.count(b"will+be+blocked") == 2  # html and text, once each for 51 recipients


def test_a_memo_that_tests_a_value_goes_in_a_batch_call_with_each_recipients_whole_email(developers, mailgun, settings):
    memo = make_memo(text_body="{% if developer.country == 'CN' %}China{% else %}Not China{% endif %}")
    make_developers("ru-b", 5)
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    delivery_send_batch(delivery_ids=queued(memo))
    by_to = {m.first("to"): m.first("text") for m in mailgun.accepted}
    assert mailgun.calls == 2 and len(by_to) == 7  # the Chinese translation only prints values
    english = next(body for body in mailgun.bodies if b"ru-b0" in body)
    assert english.count(b"Not+China") == 6  # in each of the six English recipient's own text
    assert by_to["Dev ru-b2 <ru-b2@example.com>"].startswith("Not China")


def test_a_batch_call_that_fails_retries_every_recipient_in_it(memo, developers, mailgun, settings, later):
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    ids = queued(memo)
    mailgun.failures += [(503, {"message": "Service unavailable"})] * 2  # a call per language
    delivery_send_batch(delivery_ids=ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"}
    assert sorted(later[0][0]) == sorted(ids) and mailgun.accepted == []


def test_a_worker_killed_while_it_renders_a_batch_leaves_every_row_queued_for_the_redelivery(
    memo, developers, mailgun, settings, monkeypatch
):
    """Rows are claimed with their call, not before: a batch interrupted before its call
    has nothing whose outcome is unknown, and the redelivered task sends it all."""
    make_developers("cn-k", 6, "CN")
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    ids = queued(memo)
    render, calls = MemoRenderer.render, []

    class Killed(BaseException):
        pass

    def render_then_die(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise Killed  # as SIGKILL would stop it: nothing after runs
        return render(self, *args)

    monkeypatch.setattr(MemoRenderer, "render", render_then_die)
    with pytest.raises(Killed):
        delivery_send_batch(delivery_ids=ids)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"queued"} and mailgun.accepted == []
    monkeypatch.setattr(MemoRenderer, "render", render)
    delivery_send_batch(delivery_ids=ids)  # the broker hands the task to another worker
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"} and len(mailgun.accepted) == 8


def test_a_throttled_half_of_a_split_call_leaves_the_other_half_queued_for_later(mailgun, later, settings):
    """No shared limiter: a call refused for one address is halved, the first half is
    throttled, so the second, claimed with the whole call, goes back to queued, for later."""
    memo = make_memo()
    for i in range(4):
        make_developer(f"cn-{i}", "CN", "zh-hans")
    make_developer("cn-bad", "CN", "zh-hans")
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    mailgun.refuse = {"cn-bad@"}
    mailgun.failures += [(), (429, {"message": "Too many requests"}, {"Retry-After": "1"})]
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    stuck = Delivery.objects.filter(status="sending")
    later_ids = {i for batch, _ in later for i in batch}
    assert not stuck.exists(), f"{stuck.count()} rows left in sending, none in later: {later_ids}"
    assert set(Delivery.objects.filter(status="queued").values_list("id", flat=True)) <= later_ids


def test_a_throttled_first_call_of_a_task_sends_its_other_calls_later_too(mailgun, later, settings):
    """Two languages make two calls; the first is throttled: the second call's rows are
    enqueued again with the first's, not left for the sweeper."""
    memo = make_memo()
    for i in range(3):
        make_developer(f"ru-{i}", "RU")
        make_developer(f"cn-{i}", "CN", "zh-hans")
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    mailgun.failures.append((429, {"message": "Too many requests"}, {"Retry-After": "1"}))
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    later_ids = {i for batch, _ in later for i in batch}
    queued_ids = set(Delivery.objects.filter(status="queued").values_list("id", flat=True))
    assert queued_ids <= later_ids, f"queued but never re-enqueued: {sorted(queued_ids - later_ids)}"


def test_a_call_refused_for_a_reason_other_than_a_recipient_is_not_split(mailgun, later, settings):
    """A 404 (domain not found) fails the call's deliveries at once: splitting it would
    make 1,999 failing calls of a call of 1,000."""
    memo = make_memo()
    for i in range(8):
        make_developer(f"cn-{i}", "CN", "zh-hans")
    settings.EMAIL_BACKEND = "memo_service.backends.mailgun.EmailBackend"
    mailgun.failures += [(404, {"message": "Domain not found: example.com"})] * 100
    ids = queued(memo)
    delivery_send_batch(delivery_ids=ids)
    assert mailgun.requests <= 2, f"{mailgun.requests} API calls for {len(ids)} recipients"
    assert set(Delivery.objects.values_list("status", flat=True)) == {"failed"}


NAMES = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20) | st.sampled_from(
    ['O"Brien, Pat', "Zoë Ünal", "Ann <admin@evil.example>", "Semi;colon", "", "Back\\slash", "a.b (c)", "Two\nlines"]
)
ADDRESSES = st.sampled_from(
    [
        "pat+memo@example.com",
        "o'brien@example.com",
        "zoe@bücher.example",
        "ünal@example.com",
        "user.name@sub.example.co",
        "x@example.com",
        "a_b-c@example.org",
        '"quoted local"@example.com',
    ]
)


@settings_(max_examples=300, deadline=None)
@given(recipients=st.lists(st.tuples(NAMES, ADDRESSES), min_size=1, max_size=6, unique_by=lambda r: r[1]))
def test_the_batching_backend_hands_mailgun_what_anymail_would_for_any_name_and_address(recipients):
    """Addresses are made without anymail's parser and memo_service.backends.mailgun
    takes them and the merge values as they are: the request must be the one anymail
    itself makes from the addresses as text."""
    from anymail.backends import mailgun

    from memo_service.backends.mailgun import EmailBackend
    from memo_service.memos.send.addresses import recipient_address

    addresses = [recipient_address(name, email) for name, email in recipients]
    assert [a.addr_spec for a in addresses] == [EmailAddress(addr_spec=email).addr_spec for _, email in recipients]
    ours, anymails_own = requests_of(
        EmailBackend(api_key="k"),
        mailgun.EmailBackend(api_key="k"),
        addresses,
        "https://x/v3/",
        lambda a: {"subject": f"Hi {a.display_name}", "text": "x"},
        subject="%recipient.subject%",
        body="%recipient.text%",
    )
    assert ours == anymails_own


def address_parts(address):
    return (address.address, address.display_name, address.username, address.domain)


@pytest.mark.parametrize(
    "name, email, fast",
    [
        ("Wang Wei", "cn-1@example.com", True),
        ("", "x@example.com", True),
        ("O'Brien-Smith Jr.", "o'brien+memo@example.com", True),
        ("Zoë Ünal", "zoe.unal@sub.example.co", True),  # a name's letters may be any script's
        ("王伟", "{x}|~@a-b.example", True),
        (" ".join(["Ünïcødé-Nâme"] * 10), "long@example.com", True),  # folded when encoded
        ('Smith, "Pat"', "pat@example.com", False),
        ("Ann <admin@evil.example>", "ann@example.com", False),
        ("Two\nlines", "x@example.com", False),
        ("Two  spaces", "x@example.com", False),
        (" Leading", "x@example.com", False),
        ("=?utf-8?q?Pat?=", "x@example.com", False),
        ("Zoë", "zoë@bücher.example", False),
        ("Pat", '"pat smith"@example.com', False),
        ("Pat", "pat@localhost", False),
    ],
)
def test_plain_names_and_addresses_take_the_fast_path_and_come_out_as_anymail_parses_them(name, email, fast):
    from memo_service.memos.send.addresses import fast_address, parsed_address, recipient_address

    made = fast_address(name, email)
    assert (made is not None) == fast
    if fast:
        assert address_parts(made) == address_parts(parsed_address(name, email))
    else:
        assert address_parts(recipient_address(name, email)) == address_parts(parsed_address(name, email))


# Built from pieces, so that plain names and addresses come up as often as odd ones.
ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
PLAIN_EMAILS = st.builds(
    "{}@{}".format,
    st.lists(st.text(ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join),
    st.lists(st.text("abcxyzABC019-", min_size=1, max_size=8), min_size=2, max_size=4).map(".".join),
)
ODD_EMAILS = ADDRESSES | st.builds(
    "{}@{}".format, st.text(ATEXT + ' ."\\,(ü', min_size=1, max_size=10), st.text("abc019-.ü_", min_size=1, max_size=12)
)
WORDS = st.text(st.characters(categories=["L", "Nd"]) | st.sampled_from("'._-"), min_size=1, max_size=8)
PLAIN_NAMES = st.just("") | st.lists(WORDS, min_size=1, max_size=4).map(" ".join)
ODD_NAMES = NAMES | st.lists(
    WORDS
    | st.sampled_from([",", '"', " <x@y.example>", "  ", "\n", "\r", "(c)", ";", "\\", "=?utf-8?q?x?=", "²", "é"]),
    min_size=1,
    max_size=5,
).map("".join)


@settings_(max_examples=500, deadline=None)
@given(name=PLAIN_NAMES, email=PLAIN_EMAILS)
def test_the_fast_path_takes_every_plain_name_and_address_as_anymail_parses_them(name, email):
    from memo_service.memos.send.addresses import fast_address, parsed_address

    made = fast_address(name, email)
    assert made is not None
    assert address_parts(made) == address_parts(parsed_address(name, email))


@settings_(max_examples=1000, deadline=None)
@given(name=PLAIN_NAMES | ODD_NAMES, email=PLAIN_EMAILS | ODD_EMAILS)
def test_the_fast_path_gives_what_anymails_parser_gives_or_leaves_the_address_to_it(name, email):
    """`fast_address` is a shortcut past anymail's parse_address_list: for any name and
    address it takes, the EmailAddress must be the parser's, field by field."""
    from memo_service.memos.send.addresses import fast_address, parsed_address

    made = fast_address(name, email)
    if made is not None:
        assert address_parts(made) == address_parts(parsed_address(name, email))


def test_a_developer_at_an_international_address_gets_the_memo(memo, developers, mailgun, settings):
    make_developer("cn-idn", "CN", email="zoë@bücher.example", name="Zoë Ünal")
    make_developer("cn-quoted", "CN", email='"pat smith"@example.com', name='Smith, "Pat"')
    make_developer("cn-same", "CN", email='"cn-1"@example.com', name="Same address as Wang Wei, quoted")
    backends = ["anymail.backends.mailgun.EmailBackend", "memo_service.backends.mailgun.EmailBackend"]
    for backend, sent in zip(backends, [memo, make_memo(slug="regions-blocked-again")], strict=True):
        settings.EMAIL_BACKEND = backend  # once per email, then in batch calls
        delivery_send_batch(delivery_ids=queued(sent))
        assert set(Delivery.objects.filter(memo=sent).values_list("status", flat=True)) == {"sent"}
    by_external_id: dict[str, set[str]] = {}
    for d in Delivery.objects.select_related("developer"):
        by_external_id.setdefault(d.developer.external_id, set()).add(str(d.pk))
    for to, external_id in [
        ("Zoë Ünal <zoë@xn--bcher-kva.example>", "cn-idn"),
        ('"Smith, \\"Pat\\"" <"pat smith"@example.com>', "cn-quoted"),
        ("Wang Wei <cn-1@example.com>", "cn-1"),
        ('"Same address as Wang Wei, quoted" <cn-1@example.com>', "cn-same"),
    ]:
        got = [m for m in mailgun.accepted if m.first("to") == to]
        assert len(got) == 2, to  # once per backend, each with its own text and delivery id
        for message in got:
            assert message.first("subject") in ("来自中国的访问将被阻止", "Access from China ends 2027-07-09")
            assert "/ack/" in message.first("text")
        assert {message.first("v:delivery_id") for message in got} == by_external_id[external_id]
