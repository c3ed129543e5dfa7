"""The provider's daily quota (SEND_DAILY_QUOTA): a send bigger than it waits for the
24-hour window to move instead of failing, says so on the memo's page, and goes on by
itself. Sent through anymail's real Mailgun backend to the loopback Mailgun."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email.utils import formataddr
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from memo_service.celery import app
from memo_service.memos.models import Delivery, Memo
from memo_service.memos.send import quota
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start
from memo_service.memos.tasks import send_batch
from tests.conftest import Clock, approve, make_developer, stop_process, wait_for
from tests.loopback_provider import Provider, mailgun_server
from tests.test_faults import ONE_CALL_PER_EMAIL, audience, received_tasks, start_worker

pytestmark = pytest.mark.django_db
BATCHING = "memo_service.backends.mailgun.EmailBackend"
ON_REDIS = pytest.mark.skipif(
    not django_settings.CELERY_BROKER_URL.startswith("redis://"),
    reason="workers on several machines share the quota in Redis; .ci/run runs this with Redis as the broker",
)


@pytest.fixture(autouse=True)
def _empty_window() -> Iterator[None]:
    """Redis outlives a test: each starts with nothing counted in its window."""
    client = quota._redis()
    if client is not None:
        client.delete(*client.keys("memo:quota:*") or ["memo:quota:none"])
    yield


def run_later(later: list[tuple[list[int], float]]) -> None:
    """The tasks put off run now (their countdown is up), as a worker runs them."""
    due, later[:] = list(later), []
    for ids, _ in due:
        send_batch(ids)


def sending(memo: Memo, developers: int) -> list[int]:
    """The memo (to CN and RU) approved and dispatched to its two developers and
    `developers` more in RU; their delivery ids."""
    for i in range(developers):
        make_developer(f"ru-q{i}", "RU", name=f"Q{i} & <Co>")
    approve(memo)
    memo_send_start(memo=memo)
    memo_dispatch(memo_id=memo.pk)
    return list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True))


def progress(client: Client, memo: Memo) -> dict[str, Any]:
    """What the memo's page shows of the send (its progress bar's data)."""
    return client.get(reverse("admin:memos_memo_progress", args=[memo.pk])).json()


def recipients(mailgun: Provider) -> list[str]:
    return [message.first("to") for message in mailgun.accepted]


def half_past_a_minute(clock: Clock) -> dt.datetime:
    """Django's clock moved on to the middle of a minute, so a call made now is counted
    in that minute whichever way the quota is kept."""
    now = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=1, seconds=30)
    clock.move_to(now)
    return now


def test_a_send_bigger_than_the_daily_quota_sends_the_quota_says_until_when_and_finishes_as_the_window_moves(
    memo, developers, mailgun, settings, clock, later, admin_client
):
    settings.EMAIL_BACKEND, settings.SEND_DAILY_QUOTA = BATCHING, 5
    ids = sending(memo, developers=10)  # 12 recipients: 2.4 days of quota
    start = half_past_a_minute(clock)

    send_batch(ids)
    assert len(mailgun.accepted) == 5 and Delivery.objects.filter(status="sent").count() == 5
    [(waiting, countdown)] = later
    assert len(waiting) == 7 and 1 <= countdown <= 600  # back to look again; a worker is not held
    shown = progress(admin_client, memo)
    first_free = start.replace(second=0) + dt.timedelta(days=1, minutes=1)
    assert shown["summary"].startswith(
        f"Paused for the provider's daily quota until {first_free:%-d %b %H:%M} UTC, 7 to go."
    )
    assert not shown["finished"] and Memo.objects.get(pk=memo.pk).status == "sending"  # nobody must resume it

    clock.move_to(start + dt.timedelta(minutes=10))  # the task looks again: still full
    run_later(later)
    assert len(mailgun.accepted) == 5 and len(later) == 1

    # A minute on, the first five (sent in two calls, moments apart) have left the window.
    clock.move_to(dt.datetime.fromisoformat(shown["quota_until"]) + dt.timedelta(minutes=1))
    run_later(later)
    assert len(mailgun.accepted) == 10
    assert ", 2 to go." in progress(admin_client, memo)["summary"]

    clock.move_to(dt.datetime.fromisoformat(progress(admin_client, memo)["quota_until"]) + dt.timedelta(minutes=1))
    run_later(later)
    assert later == []
    everyone = [formataddr((d.developer.name, d.developer.email)) for d in Delivery.objects.select_related("developer")]
    assert sorted(recipients(mailgun)) == sorted(everyone)  # each exactly once
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    done = progress(admin_client, memo)
    assert "quota" not in done["summary"] and done["quota_until"] is None and done["finished"]
    assert Memo.objects.get(pk=memo.pk).status == "sent"


def test_two_send_batches_share_one_daily_quota(memo, developers, mailgun, settings, clock, later, admin_client):
    settings.SEND_DAILY_QUOTA = 5  # anymail's own Mailgun backend: an API call per email
    ids = sending(memo, developers=6)
    half_past_a_minute(clock)

    send_batch(ids[:3])
    send_batch(ids[3:])
    assert len(mailgun.accepted) == 5 and mailgun.calls == 5
    [(waiting, _)] = later
    assert sorted(waiting) == sorted(Delivery.objects.filter(status="queued").values_list("id", flat=True))
    assert len(waiting) == 3 and set(waiting) <= set(ids[3:])
    assert ", 3 to go." in progress(admin_client, memo)["summary"]


def test_a_call_the_provider_refused_does_not_use_up_the_quota(memo, developers, mailgun, settings, clock, later):
    settings.EMAIL_BACKEND, settings.SEND_DAILY_QUOTA = BATCHING, 4
    ids = sending(memo, developers=2)
    half_past_a_minute(clock)
    mailgun.failures += [(503, {"message": "Service unavailable"})] * 2  # a call per language

    send_batch(ids)
    assert mailgun.accepted == [] and len(later) == 1
    clock.move_to(timezone.now() + dt.timedelta(minutes=10))  # the backoff waited out
    run_later(later)
    assert len(mailgun.accepted) == 4 and later == []  # the quota had room for all four


def test_a_recipient_the_provider_refused_does_not_use_up_the_quota(memo, developers, mailgun, settings, clock, later):
    """Mailgun refuses a call for one bad address; its halves go until the refusal is
    down to its recipient: only the three sent count, so the fourth fits today."""
    settings.EMAIL_BACKEND, settings.SEND_DAILY_QUOTA = BATCHING, 4
    ids = sending(memo, developers=3)  # cn-1, then ru-1, ru-q0, ru-q1, ru-q2 in English
    mailgun.refuse = {"ru-q0@"}
    half_past_a_minute(clock)

    send_batch(ids)  # Chinese: 1; English: 3 of 4 (room for 3), one of them refused
    assert len(mailgun.accepted) == 3 and len(later) == 1
    assert Delivery.objects.get(status="failed").developer.external_id == "ru-q0"
    clock.move_to(timezone.now() + dt.timedelta(seconds=later[0][1]))  # the task looks again, the same day
    run_later(later)
    assert len(mailgun.accepted) == 4 and later == []
    assert Delivery.objects.filter(status="sent").count() == 4


def test_a_quota_of_zero_is_no_quota(memo, developers, mailgun, settings, later, admin_client):
    settings.EMAIL_BACKEND = BATCHING
    assert settings.SEND_DAILY_QUOTA == 0  # the default
    send_batch(sending(memo, developers=10))
    assert len(mailgun.accepted) == 12 and later == []
    shown = progress(admin_client, memo)
    assert shown["quota_until"] is None and "quota" not in shown["summary"]


@pytest.mark.e2e
@ON_REDIS
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_together_send_exactly_the_quota_and_leave_the_rest_waiting(tmp_path, admin_client, settings):
    """Four send tasks of 100, one call per email, in four pool processes of two worker
    processes at once: they race for the window's last room, and none is taken twice."""
    daily, recipients = 150, 400
    memo = audience(recipients)
    app.control.purge()
    with mailgun_server() as provider:
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
        workers = [start_worker(provider, log, loglevel="INFO", SEND_DAILY_QUOTA=str(daily)) for log in logs]
        try:
            call_command("send_memo", memo.slug, stdout=io.StringIO())

            def finished_send_tasks() -> int:
                done = re.compile(r"Task memos\.send_batch\[[0-9a-f-]+\] succeeded")
                return sum(len(done.findall(log.read_text())) for log in logs)

            # Each task sent what it could and put the rest off (for ten minutes: the window
            # stays full for a day).
            wait_for(lambda: finished_send_tasks() >= recipients // 100, timeout=120, what="the four tasks to run")
            assert sum(len(received_tasks(log)) for log in logs) > recipients // 100  # the put-off ones
        finally:
            for worker in workers:
                stop_process(worker)
            app.control.purge()
    addresses = [message.first("to") for message in provider.accepted]
    assert len(addresses) == daily and len(set(addresses)) == daily
    statuses = list(Delivery.objects.filter(memo=memo).values_list("status", flat=True))
    assert statuses.count("sent") == daily and statuses.count("queued") == recipients - daily
    # The admin's page, served with the workers' settings, says so.
    settings.EMAIL_BACKEND, settings.SEND_DAILY_QUOTA = ONE_CALL_PER_EMAIL, daily
    assert f", {recipients - daily} to go." in progress(admin_client, memo)["summary"]


@pytest.mark.process
@pytest.mark.parametrize("value", ["lots", "-1", "2.5"])
def test_a_bad_daily_quota_is_a_clear_settings_error(value):
    env = {**os.environ, "SEND_DAILY_QUOTA": value, "DEBUG": "true"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, cwd=django_settings.BASE_DIR
    )
    assert done.returncode != 0
    assert (
        f"SEND_DAILY_QUOTA must be a whole number of recipients per 24 hours (0: no quota), not '{value}'"
        in done.stderr
    )
