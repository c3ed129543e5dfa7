"""Personas and builders shared by the tests.

Personas: `admin` (a platform admin), developers in CN (zh-hans), RU and US (en), and the
demo-style memo `memo` addressed to CN and RU.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from memo_service.celery import app
from memo_service.developers.models import Developer, Region
from memo_service.memos.models import Memo, MemoTranslation
from tests.loopback_provider import API_KEY, Provider, mailgun_server


def pytest_configure(config: Any) -> None:
    # Passwords the tests set are hashed with MD5, not PBKDF2's million rounds (most of a
    # test's setup time went there); production's hashers stay behind it, so a password
    # hashed elsewhere still checks. No test starts a process that checks a password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


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


def make_memo(**extra: Any) -> Memo:
    region = Region.objects.get_or_create(
        name="Unsupported regions", defaults={"countries": ["CN", "RU"], "source": "policy v1"}
    )[0]
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
    memo.include_regions.add(region)
    MemoTranslation.objects.create(
        memo=memo,
        language="zh-hans",
        subject="来自{{ developer.country_name }}的访问将被阻止",
        html_body="<p>{{ developer.name }}，您好：</p><p>来自{{ developer.country_name }}的流量将被阻止。</p>",
        text_body="{{ developer.name }}，您好：\n来自{{ developer.country_name }}的流量将被阻止。",
    )
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
def eager(settings: Any) -> Iterator[None]:
    """Tasks run in-process when enqueued (for tests about what they do, not how they travel)."""
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def approve(memo: Memo) -> Memo:
    """Have the memo approved the way the admin does: its author asks, a second person approves."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from memo_service.memos.approval import memo_approve, memo_request_approval

    User = get_user_model()
    author = User.objects.filter(username="composer").first() or User.objects.create_user(
        "composer", "composer@example.com", "pw-composer-1"
    )
    approver = User.objects.filter(username="approver").first()
    if approver is None:
        approver = User.objects.create_user("approver", "approver@example.com", "pw-approver-1", is_staff=True)
        approver.groups.add(Group.objects.get(name="Approver"))
    Memo.objects.filter(pk=memo.pk).update(author=author)
    memo_request_approval(memo=memo, by=author)
    memo_approve(memo=memo, by=approver)
    memo.refresh_from_db()
    return memo


def mark_sent(memo: Memo, **fields: Any) -> Memo:
    """A memo approved through the front door (its approval in the evidence), then
    marked sent: for tests about what comes after a send."""
    if memo.status == Memo.Status.DRAFT:
        approve(memo)
    Memo.objects.filter(pk=memo.pk).update(status="sent", **fields)
    memo.refresh_from_db()
    return memo


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


def wait_for(predicate: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Sent memos' compiled templates are cached by id and content hash; tests reuse both
    (SQLite hands out ids again after a rollback, and tests set hashes by hand)."""
    from memo_service.api.auth import api_clients_forget
    from memo_service.memos.answer.sent_text import _sent_renderer

    _sent_renderer.cache_clear()
    api_clients_forget()  # and API clients, cached by token for a few seconds
