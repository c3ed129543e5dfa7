"""Personas and builders shared by the tests.

Personas: `admin` (a platform admin), developers in CN (zh-hans), RU and US (en), and the
demo-style memo `memo` addressed to CN and RU.

Builders reach a state the way production reaches it, never by writing a status:
approve and memo_in (the admin's steps), dispatched, sent_memo and sent_delivery (the
send, its claims and the provider's answers), tracking_event (the provider's webhook),
answered (the developer's page). What happened some time ago happens on Django's clock
set back (clock_at, or the `clock` fixture a test moves on); a test waits for a
condition (wait_for), not for a fixed time. The `later` fixture catches the send tasks
put off for later (tests/provider_cases.py has what the provider tests share besides).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import pytest
from anymail.signals import AnymailTrackingEvent
from django.conf import settings
from django.db import connection
from django.utils import timezone

from memo_service.celery import app
from memo_service.developers.models import Developer, Region
from memo_service.memos.answer.answers import answer_record
from memo_service.memos.answer.tokens import answer_target
from memo_service.memos.delivery_status import (
    delivery_claim,
    delivery_record_failure,
    delivery_record_skipped,
)
from memo_service.memos.memo_status import memo_mark_sent_if_done
from memo_service.memos.models import DELIVERY_HANDED_OVER, MEMO_STARTABLE, Answer, Delivery, Memo, MemoTranslation
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
from memo_service.memos.send.sending import delivery_send_batch
from memo_service.memos.tasks import send_batch
from memo_service.memos.tracking import delivery_record_event
from tests.loopback_provider import API_KEY, Provider, mailgun_server


def pytest_configure(config: Any) -> None:
    # Passwords the tests set are hashed with MD5, not PBKDF2's million rounds (most of a
    # test's setup time went there); production's hashers stay behind it, so a password
    # hashed elsewhere still checks. No test starts a process that checks a password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


T = TypeVar("T")
WEBHOOK_SIGNING_KEY = "whsec-loopback"
WEBHOOK_SECRET = "hook:secret"


@pytest.fixture(autouse=True)
def _isolated_outbox(settings: Any, tmp_path: Any) -> None:
    from django.core.cache import cache

    settings.OUTBOX_DIR = tmp_path / "outbox"
    settings.EVIDENCE_HEADS_PATH = str(tmp_path / "evidence-heads.jsonl")
    from memo_service.memos.evidence import append

    settings.SITE_URL = "http://testserver"
    cache.clear()  # rate-limit and credential-error counters start at zero
    append.started_here.clear()  # and no sequencer counts as started by this process


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("alice", "alice@example.com", "pw-alice-123")


@pytest.fixture
def admin_client(client: Any, admin_user: Any) -> Any:
    client.force_login(admin_user)
    return client


def make_developer(external_id: str, country: str, language: str = "en", **extra: Any) -> Developer:
    return Developer.objects.create(
        external_id=external_id,
        email=extra.pop("email", f"{external_id}@example.com"),
        name=extra.pop("name", f"Dev {external_id}"),
        organization=extra.pop("organization", "Acme"),
        country=country,
        language=language,
        **extra,
    )


@pytest.fixture
def developers(db: None) -> dict[str, Developer]:
    return {
        "cn": make_developer("cn-1", "CN", "zh-hans", name="Wang Wei"),
        "ru": make_developer("ru-1", "RU", name="Olga Petrova"),
        "us": make_developer("us-1", "US", name="John Smith"),
    }


def make_memo(countries: Sequence[str] = ("CN", "RU"), **extra: Any) -> Memo:
    """A draft memo to the developers in `countries` (the "Unsupported regions", CN and RU)."""
    memo = Memo.objects.create(
        title=extra.pop("title", "Regions blocked"),
        slug=extra.pop("slug", "regions-blocked"),
        subject=extra.pop("subject", "Access from {{ developer.country_name }} ends {{ memo.effective_date }}"),
        html_body=extra.pop(
            "html_body",
            "<p>Dear {{ developer.name }},</p><p>Traffic from {{ developer.country_name }} will be blocked.</p>",
        ),
        text_body=extra.pop(
            "text_body", "Dear {{ developer.name }},\nTraffic from {{ developer.country_name }} will be blocked."
        ),
        effective_date=dt.date(2027, 7, 9),
        ack_deadline=extra.pop("ack_deadline", timezone.now() + dt.timedelta(days=30)),
        **extra,
    )
    add_region(memo, *countries)
    MemoTranslation.objects.create(
        memo=memo,
        language="zh-hans",
        subject="来自{{ developer.country_name }}的访问将被阻止",
        html_body="<p>{{ developer.name }}，您好：</p><p>来自{{ developer.country_name }}的流量将被阻止。</p>",
        text_body="{{ developer.name }}，您好：\n来自{{ developer.country_name }}的流量将被阻止。",
    )
    return memo


def add_region(memo: Memo, *countries: str) -> Memo:
    """The draft memo's audience widened to developers in `countries`, as its composer
    adds a region of them."""
    name = "Unsupported regions" if countries == ("CN", "RU") else f"Regions {' '.join(countries)}"
    region = Region.objects.get_or_create(name=name, defaults={"countries": list(countries), "source": "policy v1"})[0]
    memo.include_regions.add(region)
    return memo


@pytest.fixture
def memo(developers: dict[str, Developer]) -> Memo:
    return make_memo()


@pytest.fixture
def mailgun(settings: Any) -> Iterator[Provider]:
    """anymail's real Mailgun backend, talking HTTP to a loopback Mailgun."""
    with mailgun_server() as provider:
        settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
        settings.ANYMAIL = {
            "MAILGUN_API_KEY": API_KEY,
            "MAILGUN_API_URL": provider.url,
            "MAILGUN_WEBHOOK_SIGNING_KEY": WEBHOOK_SIGNING_KEY,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        yield provider


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], float]]:
    """Send tasks the sender put off for later, instead of enqueued: (ids, countdown)."""
    calls: list[tuple[list[int], float]] = []
    monkeypatch.setattr(send_batch, "apply_async", lambda args, countdown=0, **kw: calls.append((args[0], countdown)))
    return calls


@pytest.fixture
def eager(settings: Any) -> Iterator[None]:
    """Tasks run in-process when enqueued (for tests about what they do, not how they travel)."""
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def _author_and_approver() -> tuple[Any, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    User = get_user_model()
    author = User.objects.filter(username="composer").first() or User.objects.create_user(
        "composer", "composer@example.com", "pw-composer-1"
    )
    approver = User.objects.filter(username="approver").first()
    if approver is None:
        approver = User.objects.create_user("approver", "approver@example.com", "pw-approver-1", is_staff=True)
        approver.groups.add(Group.objects.get(name="Approver"))
    return author, approver


def approval_requested(memo: Memo) -> Memo:
    """The memo's author asks for its approval, as the admin's button does."""
    from memo_service.memos.approval import memo_request_approval

    author, _ = _author_and_approver()
    Memo.objects.filter(pk=memo.pk).update(author=author)
    memo_request_approval(memo=memo, by=author)
    memo.refresh_from_db()
    return memo


def approve(memo: Memo) -> Memo:
    """Have the memo approved the way the admin does: its author asks, a second person approves."""
    from memo_service.memos.approval import memo_approve

    approval_requested(memo)
    memo_approve(memo=memo, by=_author_and_approver()[1])
    memo.refresh_from_db()
    return memo


def memo_in(memo: Memo, status: str) -> Memo:
    """The draft memo brought to `status` by the steps that bring it there: asked for
    approval, approved, sending (dispatched, its emails queued), paused or cancelled by
    an admin while sending, sent (sent_memo)."""
    from memo_service.memos.send.control import memo_cancel, memo_pause

    S = Memo.Status
    if status == S.AWAITING_APPROVAL:
        approval_requested(memo)
    elif status == S.APPROVED:
        approve(memo)
    elif status in (S.SENDING, S.PAUSED, S.CANCELLED):
        dispatched(memo)
        if status == S.PAUSED:
            memo_pause(memo=memo, by=None)
        elif status == S.CANCELLED:
            memo_cancel(memo=memo, by=None)
    elif status == S.SENT:
        sent_memo(memo)
    memo.refresh_from_db()
    assert memo.status == status, f"memo {memo.slug} is {memo.status}, not {status}"
    return memo


class Clock:
    """Django's clock (timezone.now, which the service and auto_now fields read) as a
    test sets it: moved to a time, and running on from there."""

    def __init__(self) -> None:
        self._real_now = timezone.now
        self._offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return self._real_now() + self._offset

    def move_to(self, when: dt.datetime) -> None:
        self._offset = when - self._real_now()


@contextlib.contextmanager
def clock_at(when: dt.datetime) -> Iterator[Clock]:
    """Django's clock set to `when` and running on from there: for what happened some
    time ago (or will, some time from now)."""
    clock = Clock()
    clock.move_to(when)
    with mock.patch.object(timezone, "now", clock.now):
        yield clock


@pytest.fixture
def clock() -> Iterator[Clock]:
    """Django's clock for the test to move on (days pass), until the test ends."""
    with clock_at(timezone.now()) as clock:
        yield clock


def dispatched(memo: Memo) -> Memo:
    """The memo approved (if it is a draft), its send started (if it is not yet) and
    dispatched as `send_memo` does it: a queued Delivery for everyone in its audience."""
    if memo.status == Memo.Status.DRAFT:
        approve(memo)
    if memo.status in MEMO_STARTABLE:
        memo_send_start(memo=memo, dispatch_in_worker=False)
    memo.refresh_from_db()
    if memo.dispatched_at is None:
        memo_dispatch(memo_id=memo.pk)
    memo.refresh_from_db()
    return memo


# How a delivery reaches each status: claimed for the provider's call, then what the call
# said; or handed over by the send, then the provider's tracking event.
_CALL_ENDED: dict[str, str] = {
    Delivery.Status.FAILED: "the provider refused it",
    Delivery.Status.OUTCOME_UNKNOWN: "the provider's answer was lost",
    Delivery.Status.SKIPPED: "not sent: the developer answered first",
}


def _settle(delivery: Delivery, status: str, reason: str) -> None:
    """Move a queued delivery to `status` the way a send and the provider do."""
    S = Delivery.Status
    if status == S.QUEUED:
        return
    if status in DELIVERY_HANDED_OVER:
        delivery_send_batch(delivery_ids=[delivery.pk])
        if status != S.SENT:
            tracking_event(delivery, status, reason)
        return
    if status not in (S.SENDING, *_CALL_ENDED):
        raise ValueError(f"no delivery becomes {status} by being sent")
    delivery_claim(delivery_id=delivery.pk)
    if status == S.SKIPPED:
        delivery_record_skipped(delivery_id=delivery.pk, reason=reason or _CALL_ENDED[status])
    elif status != S.SENDING:
        outcome_unknown = status == S.OUTCOME_UNKNOWN
        error = reason or _CALL_ENDED[status]
        delivery_record_failure(delivery_id=delivery.pk, error=error, outcome_unknown=outcome_unknown)


def tracking_event(delivery: Delivery, status: str, reason: str = "", payload: dict[str, Any] | None = None) -> None:
    """The provider's tracking event that moves a handed-over delivery to `status`
    (delivered, bounced, complained, failed), as its webhook records it; `payload`:
    the provider's own body of the event, as it is kept."""
    delivery_record_event(
        provider="mailgun",
        event=AnymailTrackingEvent(
            event_type=status,
            event_id=f"evt-{delivery.pk}-{status}",
            metadata={"delivery_id": str(delivery.pk)},
            timestamp=timezone.now(),
            description=reason or None,
            esp_event=payload,
        ),
    )


def sent_delivery(
    memo: Memo, developer: Developer, status: str = "sent", *, reason: str = "", at: dt.datetime | None = None
) -> Delivery:
    """The developer's email of the memo, brought to `status` through the send and the
    delivery's state machine (the memo dispatched first if it is not yet): sent by the
    send task, delivered/bounced/complained by a tracking event after it; failed,
    outcome unknown or skipped when its provider call ended so (with `reason`); sending
    while the call is on its way. `at`: when it was sent (Django's clock set back)."""
    with clock_at(at) if at else contextlib.nullcontext():
        memo.refresh_from_db()
        if memo.dispatched_at is None:
            dispatched(memo)
        delivery = Delivery.objects.get(memo=memo, developer=developer, kind=Delivery.Kind.INITIAL)
        _settle(delivery, status, reason)
        memo_mark_sent_if_done(memo_id=memo.pk)
    delivery.refresh_from_db()
    memo.refresh_from_db()
    assert delivery.status == status, f"{developer.external_id}'s delivery is {delivery.status}, not {status}"
    return delivery


def sent_memo(
    memo: Memo,
    outcomes: Mapping[Developer, str] | None = None,
    *,
    reasons: Mapping[Developer, str] | None = None,
    at: dt.datetime | None = None,
) -> Memo:
    """The memo approved, dispatched and sent to its whole audience through the send
    (the test's email backend, the outbox by default), as a worker sends it; then each
    developer's email moved on to its status in `outcomes` (sent if not named; see
    sent_delivery). The memo is sent once no email is left queued or sending. `at`:
    when all that happened (Django's clock set back)."""
    outcomes, reasons = outcomes or {}, reasons or {}
    with clock_at(at) if at else contextlib.nullcontext():
        dispatched(memo)
        deliveries = list(Delivery.objects.filter(memo=memo).select_related("developer").order_by("id"))
        named = {developer.pk: status for developer, status in outcomes.items()}
        handed_over = [d for d in deliveries if named.get(d.developer_id, "sent") in DELIVERY_HANDED_OVER]
        for delivery in deliveries:  # the calls that ended otherwise are made first
            if delivery not in handed_over:
                _settle(delivery, named[delivery.developer_id], reasons.get(delivery.developer, ""))
        delivery_send_batch(delivery_ids=[d.pk for d in handed_over])
        for delivery in handed_over:
            if (status := named.get(delivery.developer_id, "sent")) != "sent":
                tracking_event(delivery, status, reasons.get(delivery.developer, ""))
        memo_mark_sent_if_done(memo_id=memo.pk)
    missing = {d.external_id for d in outcomes} - {d.developer.external_id for d in deliveries}
    assert not missing, f"not in the memo's audience: {sorted(missing)}"
    actual = dict(Delivery.objects.filter(memo=memo).values_list("developer_id", "status"))
    wrong = {d.external_id: actual[d.pk] for d in outcomes if actual[d.pk] != outcomes[d]}
    assert not wrong, f"deliveries not in the status asked for: {wrong}"
    memo.refresh_from_db()
    return memo


def found(pattern: str, text: str, group: int = 0) -> str:
    """What `pattern`'s first match in `text` (its `group`) says; the test fails naming
    the pattern when there is none."""
    match = re.search(pattern, text)
    assert match is not None, f"no {pattern!r} in {text[:1000]!r}"
    return match.group(group)


def answered(memo: Memo, developer: Developer, response: str = "acknowledged", **fields: Any) -> Answer:
    """The developer's answer to the memo, recorded as their page records it (a person
    on a phone, who touched the page); `fields`: comment, country. An answer within
    seconds of the email is flagged as possibly automated: send the memo earlier
    (`sent_memo(..., at=...)`) to have it read as a person's."""
    target = answer_target(memo_id=memo.pk, developer_id=developer.pk)
    assert target is not None, f"the memo was not sent to {developer.external_id}"
    answer, _ = answer_record(
        target=target,
        response=response,
        ip_address="203.0.113.9",
        user_agent="Mozilla/5.0 (Linux; Android 15; Pixel 9) Mobile Safari/537.36",
        interacted=True,
        **fields,
    )
    return answer


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Path]:
    """A real `celery worker` (prefork, 2 processes) on the suite's database and broker;
    yields the outbox folder it writes emails to. Its links use the test's SITE_URL."""
    outbox = Path(settings.VAR_DIR) / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    app.control.purge()
    args = ["worker", "--concurrency=2", "--pool=prefork", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
    env = {"SITE_URL": settings.SITE_URL, "EMAIL_BACKEND": "memo_service.outbox.OutboxEmailBackend"}
    with celery_process(tmp_path / "worker.log", args, env):
        yield outbox


@pytest.fixture
def beat(tmp_path: Path) -> Iterator[None]:
    """A real `celery beat` on the suite's broker, checking for due scheduled memos every
    second (SCHEDULED_SEND_CHECK_SECONDS), its schedule state in the test's own folder."""
    args = ["beat", "--loglevel=INFO", "--schedule", str(tmp_path / "celerybeat-schedule")]
    with celery_process(tmp_path / "beat.log", args, {"SCHEDULED_SEND_CHECK_SECONDS": "1"}):
        yield


@contextlib.contextmanager
def celery_process(log: Path, args: list[str], env: dict[str, str]) -> Iterator[None]:
    """`celery -A memo_service ARGS` on the suite's database and broker, logging to `log`
    (its tail printed when it stops)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "VAR_DIR": str(settings.VAR_DIR),
        # The test's own heads file: what its sequencers publish, its verify reads.
        "EVIDENCE_HEADS_PATH": settings.EVIDENCE_HEADS_PATH,
        **env,
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "memo_service", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
    try:
        yield
    finally:
        stop_process(process)
        print(log.read_text()[-4000:])


def stop_process(process: subprocess.Popen[Any]) -> None:
    """A warm shutdown, or after 20 s a kill of the worker and its pool processes."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pool = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True).stdout
        for pid in map(int, pool.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


def wait_for(predicate: Callable[[], T], timeout: float = 90, what: str = "", interval: float = 0.25) -> T:
    """Ask `predicate` every `interval` seconds until it answers something true, and
    return that; after `timeout` seconds fail, saying what was waited for. What a test
    waits for, instead of a sleep long enough on the machine it was written on."""
    deadline = time.monotonic() + timeout
    while not (answer := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return answer


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Sent memos' compiled templates are cached by id and content hash; tests reuse both
    (SQLite hands out ids again after a rollback, and tests set hashes by hand)."""
    from memo_service.api.auth import api_clients_forget
    from memo_service.memos.answer.sent_text import _sent_renderer

    _sent_renderer.cache_clear()
    api_clients_forget()  # and API clients, cached by token for a few seconds
