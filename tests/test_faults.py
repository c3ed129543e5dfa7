"""Faults with real worker processes, judged by what the loopback provider recorded:
workers SIGKILLed 20 times while 10,000 recipients are sent, a worker machine dying
mid-send (its whole process group killed, its database sessions terminated), a Redis visibility timeout
shorter than a send, send_memo run three times at once, a send rolled back, the broker
flushed, a pause half-way, throttling, and recipients the provider refuses."""

from __future__ import annotations

import collections
import io
import os
import queue
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction

from memo_service.celery import app
from memo_service.memos.models import Delivery, Memo, SendLease
from memo_service.memos.send import sweeper
from memo_service.memos.send.dispatch import memo_dispatch, memo_send_start, send_batch_size
from tests.conftest import approve, database_url, make_memo, stop_process, wait_for
from tests.loopback_provider import (
    API_KEY,
    RESEND_KEY,
    Loopback,
    Provider,
    ResendProvider,
    mailgun_server,
)
from tests.loopback_resend import resend_batch_server
from tests.provider_cases import (
    assert_everyone_got_it_exactly_once,
    assert_nobody_lost_and_sent_means_once,
    developers_in_bulk,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

ONE_CALL_PER_EMAIL = "anymail.backends.mailgun.EmailBackend"
BATCHED = "memo_service.backends.mailgun.EmailBackend"  # one call per send task (production's)
RESEND = "memo_service.backends.resend.EmailBackend"
BROKER = settings.CELERY_BROKER_URL
ON_FILESYSTEM_BROKER = pytest.mark.skipif(
    BROKER.startswith("filesystem://"),
    reason="kombu's filesystem broker (the one-machine development default) leaves a worker idle "
    "after its pool processes are killed; run it on Redis or RabbitMQ (.ci/run does)",
)


@pytest.fixture
def provider() -> Iterator[Provider]:
    with mailgun_server() as server:
        server.delay = 0.02  # a send takes a moment, so a pause or a flush lands mid-send
        yield server


# Leases short enough for a test to wait out (production: 30 s, renewed every 10 s);
# the loopback's events are visible at once unless a test says otherwise.
QUICK_LEASES = {"DELIVERY_LEASE_SECONDS": "3", "DELIVERY_LEASE_RENEW_SECONDS": "1", "PROVIDER_EVENTS_LAG_SECONDS": "1"}


def start_worker(
    provider: Loopback,
    log: Path,
    backend: str = ONE_CALL_PER_EMAIL,
    loglevel: str = "WARNING",
    machine: bool = False,
    **env: str,
) -> subprocess.Popen[bytes]:
    """A `celery worker` with two pool processes, sending through `backend` to `provider`.
    `machine`: in a process group of its own, to be killed whole as a machine dies."""
    env_of = getattr(provider, "env", None)  # another provider's loopback: its backend and settings
    if env_of is not None:
        email = env_of()
    elif isinstance(provider, ResendProvider):
        email = {"EMAIL_BACKEND": RESEND, "ANYMAIL_RESEND_API_KEY": RESEND_KEY, "ANYMAIL_RESEND_API_URL": provider.url}
    else:
        email = {"EMAIL_BACKEND": backend, "ANYMAIL_MAILGUN_API_KEY": API_KEY, "ANYMAIL_MAILGUN_API_URL": provider.url}
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": BROKER,
        "VAR_DIR": str(settings.VAR_DIR),
        "EVIDENCE_HEADS_PATH": settings.EVIDENCE_HEADS_PATH,
        **QUICK_LEASES,
        **email,
        **env,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "memo_service",
            "worker",
            "--concurrency=2",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={loglevel}",
        ],
        env=env,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        cwd=settings.BASE_DIR,
        start_new_session=machine,
    )


def pool_children(pid: int) -> list[int]:
    """The worker's pool processes (not one just killed and not yet reaped), once it has one."""

    def live_children() -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p, stat in (line.split() for line in out.splitlines()) if "Z" not in stat]

    return wait_for(live_children, timeout=30, what="a pool process of the worker", interval=0.05)


def kill_a_pool_process(pid: int, rng: random.Random) -> None:
    """SIGKILL one of the worker's pool processes, chosen at random. One that ended between
    the listing and the signal (an earlier kill's victim being reaped) is passed over for
    another: the kill must land on a live process."""
    while True:
        try:
            os.kill(rng.choice(pool_children(pid)), signal.SIGKILL)
            return
        except ProcessLookupError:
            continue  # gone from the process table: the next listing leaves it out


def received_tasks(log: Path) -> list[tuple[str, str]]:
    """(task name, task id) of each task the worker took from the broker (its INFO log)."""
    return re.findall(r"Task (\S+)\[([0-9a-f-]+)\] received", log.read_text())


def queued_messages() -> int:
    """Messages waiting in the tests' queue on the broker."""
    with app.connection_for_read() as connection:
        try:
            return connection.default_channel.queue_declare(app.conf.task_default_queue, passive=True).message_count
        except connection.channel_errors:  # no such queue (Redis keeps none that is empty)
            return 0


def wait_until_idle(log: Path, timeout: float = 60) -> None:
    """Until the broker's queue is empty and the worker (logging at INFO) has finished
    every task it took, on two looks in a row half a second apart (a task taken from the
    queue and not yet logged is caught by the second): whatever was enqueued has been
    done, without a sleep long enough to guess it."""
    finished = re.compile(r"Task \S+\[([0-9a-f-]+)\] (?:succeeded|raised|failed|retry)")
    looks: list[bool] = []

    def idle() -> bool:
        received = collections.Counter(task_id for _, task_id in received_tasks(log))
        done = collections.Counter(finished.findall(log.read_text()))
        looks.append(not received - done and queued_messages() == 0)
        return looks[-2:] == [True, True]

    wait_for(idle, timeout, what="the worker to finish every task and its queue to be empty", interval=0.5)


def audience(n: int, **memo: Any) -> Memo:
    """n developers in CN, inserted in bulk (10,000 in about a second), and a memo to
    them, approved."""
    developers_in_bulk(n, "cn", lambda i: f"Dev cn-{i:05d}", country="CN")
    return approve(make_memo(**memo))


def mailgun_recipient(message: Any) -> str:
    return message.first("to").split("<")[-1].rstrip(">")


def resend_recipient(email: dict[str, Any]) -> str:
    return email["to"][0].split("<")[-1].rstrip(">")


def pending(memo: Memo) -> Any:
    return Delivery.objects.filter(memo=memo, status__in=["queued", "sending"])


def settle(memo: Memo, monkeypatch: Any) -> None:
    """What beat's sweeper does over time, at once: once the workers have done what they
    could (nothing moved for 3 s), settle rows of killed workers and re-enqueue those
    whose task died with them, until nothing is left pending."""
    monkeypatch.setattr(sweeper, "SENDING_GRACE", sweeper.dt.timedelta(seconds=5))
    monkeypatch.setattr(sweeper, "QUEUED_GRACE", sweeper.dt.timedelta(seconds=5))
    for name, value in QUICK_LEASES.items():  # as the workers have them
        monkeypatch.setattr(settings, name, int(value))
    looked: list[int] = []

    def settled() -> bool:
        left = pending(memo).count()
        if left and looked[-1:] == [left]:  # nothing moved since the last look, 3 s ago
            sweeper.deliveries_sweep()
        looked.append(left)
        return not left

    wait_for(settled, timeout=180, what="every delivery to be settled", interval=3)


def client_pid(port: int, server_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the TCP connection from local port `port` to `server_port`
    (Linux /proc). Both ends count: a local port is unique only per destination, and
    another process's connection to PostgreSQL or the broker may have the same one."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in columns[1:3])
            if (local, remote) == (port, server_port):
                inodes.add(f"socket:[{columns[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                pass
    return None


@dataclass
class Kills:
    made: int = 0
    between_acceptance_and_commit: int = 0  # chosen to land there; others may by chance


def kill_after_acceptance(provider: Loopback, worker: subprocess.Popen[bytes]) -> bool:
    """Have the provider record the next call and hold its answer, SIGKILL the pool
    process waiting for that answer, then let the answer go (to nobody). A held call whose
    process an earlier kill has already ended (its request was on the wire) is let go and
    the next one held. False when no call came within 3 s (the send had none left)."""
    while True:
        provider.hold = 1
        try:
            port, release = provider.held.get(timeout=3)
        except queue.Empty:
            with provider.lock:
                provider.hold = 0
                if provider.held.empty():
                    return False
            port, release = provider.held.get()
        server_port = urlsplit(provider.url).port
        assert server_port is not None
        pid = client_pid(port, server_port, pool_children(worker.pid))
        try:
            if pid is None:
                raise ProcessLookupError
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            release.set()  # its process is gone: hold the next call
            continue
        release.set()
        return True


def send_while_killing_workers(
    memo: Memo,
    provider: Loopback,
    tmp_path: Path,
    monkeypatch: Any,
    kills: int = 20,
    backend: str = ONE_CALL_PER_EMAIL,
) -> Kills:
    """Send the memo while SIGKILLing a worker pool process `kills` times at random
    moments: each once a random share (2–90 %) of the deliveries has been taken up. A
    quarter of the kills hit the process whose call the provider has just recorded: the
    first (calls are surely still coming then; a batched send of 10,000 makes only ten)
    and others chosen at random. The rest hit a random process after a random pause of up
    to 0.3 s, so they land anywhere in a send (claim, render, the call, the answer, our
    commit)."""
    seed = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill moments: random seed {seed} (FAULT_SEED={seed} repeats them)")
    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.02, 0.9) for _ in range(kills))
    after_acceptance = {0, *rng.sample(range(1, kills), kills // 4 - 1)}
    app.control.purge()
    worker = start_worker(provider, tmp_path / "worker.log", backend)
    made = Kills()
    try:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
        queued = Delivery.objects.filter(memo=memo, status="queued")
        total = Delivery.objects.filter(memo=memo).count()
        started = time.monotonic()
        for kill, share in enumerate(moments):

            def taken_up(share: float = share) -> bool:
                return queued.count() <= total * (1 - share)

            wait_for(
                taken_up,
                timeout=max(started + 300 - time.monotonic(), 0),
                what=f"the send to take up {share:.0%} (it stalled after {made.made} kills)",
                interval=0.05,
            )
            if kill in after_acceptance and kill_after_acceptance(provider, worker):
                made.between_acceptance_and_commit += 1
            else:
                time.sleep(rng.uniform(0, 0.3))  # the scenario: a kill at a random moment of a send
                kill_a_pool_process(worker.pid, rng)
            made.made += 1
        print(
            f"{made.made} kills ({made.between_acceptance_and_commit} between acceptance and commit)"
            f" in {time.monotonic() - started:.1f} s"
        )
        settle(memo, monkeypatch)
        print(f"settled after {time.monotonic() - started:.1f} s")
    finally:
        stop_process(worker)
    assert made.between_acceptance_and_commit, "no kill could be made between the provider's acceptance and our commit"
    return made


@ON_FILESYSTEM_BROKER
@pytest.mark.parametrize("backend", [ONE_CALL_PER_EMAIL, BATCHED], ids=["one-call-per-email", "batched"])
def test_workers_killed_mid_send_lose_nobody_and_flag_every_possible_duplicate(
    backend, tmp_path, monkeypatch, settings
):
    """10,000 recipients, a worker process SIGKILLed 20 times, some of them after Mailgun
    accepted an email and before we recorded it. One call per email (anymail's backend,
    which cannot ask Mailgun): everyone the provider has was sent it once, and every
    recipient we cannot vouch for is flagged "outcome unknown", never silently lost.
    Batched (ours, which asks Mailgun's Logs API): everyone exactly once, all sent."""
    recipients = 10_000
    memo = audience(recipients)
    settings.EMAIL_BACKEND = backend  # send_memo sizes the send tasks for it, as in production
    with mailgun_server() as provider:
        kills = send_while_killing_workers(memo, provider, tmp_path, monkeypatch, backend=backend)

    addresses = [mailgun_recipient(m) for m in provider.accepted]
    calls = {mailgun_recipient(m): m.message_id for m in provider.accepted}
    if backend == BATCHED:
        # Our Mailgun backend can ask Mailgun (its Logs API): what a killed worker left
        # is recorded sent where Mailgun has it and sent again exactly where it has not.
        print(
            f"{provider.log_requests} Logs API and {provider.event_requests} events API requests; "
            f"{Delivery.objects.filter(memo=memo, attempts__gt=1).count()} deliveries sent again"
        )
        outcome = assert_everyone_got_it_exactly_once(memo, recipients, addresses)
        assert len(outcome.deliveries) == recipients  # one Delivery each
        assert set(outcome.per_recipient) == set(outcome.deliveries)
        assert all(d.provider_message_id == calls[a] for a, d in outcome.deliveries.items())
        return
    outcome = assert_nobody_lost_and_sent_means_once(memo, recipients, addresses)
    per_recipient, unknown, duplicates = outcome.per_recipient, outcome.unknown, outcome.duplicates
    # A kill between the provider's acceptance and our commit leaves its call's
    # deliveries flagged although the provider has them.
    hit_window = {calls[a] for a in unknown if per_recipient[a]}
    print(
        f"{len(hit_window)} of {kills.made} kills landed between the provider's acceptance and our commit "
        f"({kills.between_acceptance_and_commit} chosen to); {len(unknown)} deliveries flagged, "
        f"{sum(1 for a in unknown if not per_recipient[a])} of them never reached the provider; "
        f"{len(duplicates)} duplicates"
    )
    assert kills.between_acceptance_and_commit <= len(hit_window) <= kills.made
    assert len(duplicates) <= len(hit_window)
    assert all(outcome.deliveries[a].status == "outcome_unknown" for a in duplicates)
    per_kill = 1 if backend == ONE_CALL_PER_EMAIL else send_batch_size()  # a batch call's rows are claimed at once
    assert len(unknown) <= kills.made * per_kill


@ON_FILESYSTEM_BROKER
def test_with_an_idempotency_key_killed_workers_cause_no_duplicate_at_all(tmp_path, monkeypatch, settings):
    """10,000 recipients through Resend, a worker process SIGKILLed 20 times: what a
    killed worker left is sent again with the same idempotency key, so everyone gets
    exactly one email, even those whose email Resend had accepted before the kill."""
    recipients = 10_000
    memo = audience(recipients)
    # The sweeper runs in this process: it must know the backend deduplicates.
    settings.EMAIL_BACKEND = RESEND
    with resend_batch_server() as resend:
        kills = send_while_killing_workers(memo, resend, tmp_path, monkeypatch)
    again = set(resend.repeated + resend.conflicts)
    print(
        f"{len(again)} of {kills.made} kills landed between Resend's acceptance and our commit "
        f"({kills.between_acceptance_and_commit} chosen to)"
    )
    assert_everyone_got_it_exactly_once(memo, recipients, map(resend_recipient, resend.emails))
    # Sent again after a kill, and answered with the first email instead of a second.
    assert kills.between_acceptance_and_commit <= len(again) <= kills.made


@pytest.mark.skipif(
    not BROKER.startswith(("redis://", "rediss://")),
    reason="the visibility timeout is Redis's: RabbitMQ re-delivers a task only when the "
    "worker holding it goes away, and the filesystem broker never does",
)
def test_a_batch_redis_redelivers_while_it_still_sends_sends_nobody_twice(provider, tmp_path):
    """Each send slower than Redis's visibility timeout (2 s here; an hour in production):
    Redis hands the batch to the other worker process while the first still sends it.
    Both work through it, and each recipient still gets one email."""
    recipients = 8
    provider.delay = 2.5
    memo = audience(recipients)
    app.control.purge()
    log = tmp_path / "worker.log"
    worker = start_worker(provider, log, loglevel="INFO", CELERY_VISIBILITY_TIMEOUT="2")
    try:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
        wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", timeout=90, what="the memo to be sent")
    finally:
        stop_process(worker)
    batches = collections.Counter(task_id for name, task_id in received_tasks(log) if name == "memos.send_batch")
    assert max(batches.values(), default=0) > 1, f"Redis did not re-deliver the batch: {batches}"
    accepted_at = sorted(t for t, status in provider.log if status == 200)
    assert min(b - a for a, b in zip(accepted_at, accepted_at[1:], strict=False)) < provider.delay, (
        "one process sent it all"
    )
    addresses = [mailgun_recipient(m) for m in provider.accepted]
    assert len(addresses) == recipients and len(set(addresses)) == recipients
    assert set(Delivery.objects.filter(memo=memo).values_list("status", flat=True)) == {"sent"}


def test_send_memo_three_times_at_once_sends_each_recipient_once(provider, tmp_path, monkeypatch):
    """Three admins run send_memo for one memo at the same moment: one Delivery and one
    email per recipient."""
    memo = audience(60)
    app.control.purge()
    env = {**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": BROKER, "VAR_DIR": str(settings.VAR_DIR)}
    runs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "send_memo", memo.slug],
            env=env,
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [r.communicate(timeout=120)[0].decode() for r in runs]
    assert any("60 developers targeted" in o for o in outputs), outputs
    worker = start_worker(provider, tmp_path / "worker.log")
    try:
        wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", timeout=90, what="the memo to be sent")
    finally:
        stop_process(worker)
    assert Delivery.objects.filter(memo=memo).count() == 60
    addresses = [m.first("to") for m in provider.accepted]
    assert len(addresses) == 60 and len(set(addresses)) == 60


def test_a_send_whose_transaction_rolls_back_sends_nothing(provider, tmp_path):
    """A send started in a transaction that then rolls back (the admin's request fails
    after the start) hands the workers nothing: running all along, they send nothing of
    it, while a memo sent after it goes out."""
    memo = audience(30)
    after = approve(make_memo(title="Sent after", slug="sent-after", subject="Sent after the rollback"))
    app.control.purge()
    log = tmp_path / "worker.log"
    worker = start_worker(provider, log, loglevel="INFO")
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            memo_send_start(memo=memo)  # enqueues its dispatch on commit (the admin, the scheduler)
            memo_dispatch(memo_id=memo.pk)  # how send_memo dispatches
            raise RuntimeError("the request failed after the send started")
        call_command("send_memo", after.slug, stdout=io.StringIO())
        wait_for(lambda: Memo.objects.get(pk=after.pk).status == "sent", timeout=90, what="the later memo to be sent")
        wait_until_idle(log)  # and anything enqueued before it taken and done
    finally:
        stop_process(worker)
    assert collections.Counter(m.first("subject") for m in provider.accepted) == {"Sent after the rollback": 30}
    # The later memo's one batch is all the workers were ever handed to send (and its
    # evidence sequencer, which chains what that batch handed over).
    received = [name for name, _ in received_tasks(log)]
    assert [name for name in received if name != "memos.evidence_seal"] == ["memos.send_batch"]
    assert Memo.objects.get(pk=memo.pk).status == "approved" and not Delivery.objects.filter(memo=memo).exists()


def test_a_send_paused_half_way_and_resumed_reaches_everyone_once(provider, tmp_path):
    """The admin pauses a send half-way (send_memo --pause): the workers stop within the
    email each is on, and nothing more goes out while it is paused; resumed (--resume),
    the rest goes out: nobody twice, nobody missing."""
    recipients = 400
    memo = audience(recipients)
    app.control.purge()
    log = tmp_path / "worker.log"
    worker = start_worker(provider, log, loglevel="INFO")
    try:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
        wait_for(
            lambda: len(provider.accepted) >= recipients / 2,
            timeout=90,
            what="the send to reach half-way",
            interval=0.01,
        )
        call_command("send_memo", memo.slug, "--pause", stdout=io.StringIO())
        at_pause = len(provider.accepted)
        wait_for(
            lambda: not Delivery.objects.filter(memo=memo, status="sending").exists(),
            timeout=30,
            what="the emails in flight",
        )
        wait_until_idle(log)  # the batches still in the queue are taken, and send nothing
        while_paused = len(provider.accepted)
        assert while_paused - at_pause <= 2  # at most the email each worker process was on
        assert while_paused < recipients * 0.7 and Memo.objects.get(pk=memo.pk).status == "paused"
        call_command("send_memo", memo.slug, "--resume", stdout=io.StringIO())
        wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", timeout=90, what="the memo to be sent")
    finally:
        stop_process(worker)
    addresses = [mailgun_recipient(m) for m in provider.accepted]
    assert len(addresses) == recipients and len(set(addresses)) == recipients
    assert set(Delivery.objects.filter(memo=memo).values_list("status", flat=True)) == {"sent"}


def test_throttling_is_honoured_by_every_worker_and_the_rate_stays_at_the_limit(provider, tmp_path, monkeypatch):
    """30 % of calls answered 429 with Retry-After: no request before it; the request rate,
    shared by two worker processes, stays within 10 % of SEND_RATE_LIMIT."""
    limit, retry_after, recipients = 20, 0.4, 80
    provider.delay = 0
    provider.throttle_ratio, provider.retry_after = 0.3, str(retry_after)
    memo = audience(recipients)
    app.control.purge()
    worker = start_worker(provider, tmp_path / "worker.log", SEND_RATE_LIMIT=str(limit))
    try:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
        wait_for(lambda: not pending(memo).exists(), timeout=180, what="every delivery to settle")
    finally:
        stop_process(worker)
    addresses = [m.first("to") for m in provider.accepted]
    assert len(addresses) == recipients and len(set(addresses)) == recipients
    log = sorted(provider.log)
    throttled = [t for t, status in log if status == 429]
    assert throttled, "the provider never throttled"
    # A request already on its way when the 429 left may still arrive; none after that.
    in_flight = 0.1
    early = [t for t, _ in log for t429 in throttled if t429 + in_flight < t < t429 + retry_after]
    assert early == [], f"{len(early)} requests came before Retry-After"
    times = [t for t, _ in log]
    busiest = max(sum(1 for u in times if t <= u < t + 1) for t in times)
    assert busiest <= limit * 1.1 + 1, busiest


def test_a_broker_flushed_mid_send_is_finished_by_the_sweeper(provider, tmp_path, monkeypatch):
    """The broker loses every queued task mid-send: the sweeper enqueues what was left,
    and nobody is missed or sent twice."""
    memo = audience(120)
    app.control.purge()
    worker = start_worker(provider, tmp_path / "worker.log")
    try:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
        wait_for(lambda: len(provider.accepted) >= 10, timeout=60, what="the send to start")
        app.control.purge()  # every queued task is gone
        settle(memo, monkeypatch)
    finally:
        stop_process(worker)
    addresses = [m.first("to") for m in provider.accepted]
    statuses = collections.Counter(Delivery.objects.filter(memo=memo).values_list("status", flat=True))
    assert len(set(addresses)) == len(addresses)  # nobody twice
    assert statuses["sent"] == len(addresses) and statuses["sent"] + statuses["outcome_unknown"] == 120


@pytest.mark.parametrize(
    "backend",
    [
        ONE_CALL_PER_EMAIL,
        BATCHED,
    ],
    ids=["one-call-per-email", "batched"],
)
def test_recipients_the_provider_refuses_fail_with_its_reason_and_the_others_get_it_once(backend, provider, tmp_path):
    """Mailgun refuses 3 of 60 addresses: those 3 deliveries fail with Mailgun's reason;
    the 57 others get the memo once."""
    recipients = 60
    provider.delay = 0
    refused = {"cn-00007@example.com", "cn-00031@example.com", "cn-00052@example.com"}
    provider.refuse = refused
    memo = audience(recipients)
    app.control.purge()
    worker = start_worker(provider, tmp_path / "worker.log", backend)
    try:
        call_command("send_memo", memo.slug, stdout=io.StringIO())
        wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", timeout=90, what="the memo to be sent")
    finally:
        stop_process(worker)
    addresses = [mailgun_recipient(m) for m in provider.accepted]
    assert (
        len(addresses) == recipients - 3
        and set(addresses).isdisjoint(refused)
        and len(set(addresses)) == len(addresses)
    )
    failed = Delivery.objects.filter(memo=memo, status="failed").select_related("developer")
    assert {d.developer.email for d in failed} == refused
    assert all(d.developer.email in d.status_reason and "not a valid address" in d.status_reason for d in failed)
    assert Delivery.objects.filter(memo=memo, status="sent").count() == recipients - 3


def start_beat(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """`celery beat`, as production runs it: the sweeper every minute."""
    env = {**os.environ, "CELERY_BROKER_URL": BROKER, "VAR_DIR": str(settings.VAR_DIR), **env}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "memo_service",
            "beat",
            "--loglevel=INFO",
            f"--schedule={tmp_path / 'beat-schedule'}",
        ],
        env=env,
        stdout=(tmp_path / "beat.log").open("w"),
        stderr=subprocess.STDOUT,
        cwd=settings.BASE_DIR,
        start_new_session=True,
    )


def workers_connections_terminate() -> int:
    """Terminate every other PostgreSQL session on the test database (the workers')."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@ON_FILESYSTEM_BROKER
@pytest.mark.skipif(not database_url().startswith("postgres"), reason="terminates the workers' PostgreSQL sessions")
def test_a_worker_machine_dying_mid_send_is_recovered_within_two_minutes_and_everyone_gets_it_once(tmp_path):
    """A machine dies mid-send, as an operator fears it: 6,000 recipients through the
    batching Mailgun backend (six calls of 1,000), one worker (2 processes) and beat,
    production's lease settings. When a third has been sent, both processes are in a
    call: Mailgun has accepted one and never got the other. The worker's whole process
    group is SIGKILLed and a fresh worker starts 3 s later; at two thirds every
    PostgreSQL session of the workers is terminated. Judged by what the loopback
    Mailgun recorded: finished within two minutes of the crash, every developer has it
    exactly once, and no delivery is "outcome unknown"."""
    recipients = 6_000
    memo = audience(recipients)
    settings.EMAIL_BACKEND = BATCHED  # send_memo sizes the send tasks for it
    production = {
        "DELIVERY_LEASE_SECONDS": "30",
        "DELIVERY_LEASE_RENEW_SECONDS": "10",
        # the loopback's events show 3 s after a call; the margin is the operator's
        "PROVIDER_EVENTS_LAG_SECONDS": "10",
    }
    app.control.purge()
    with mailgun_server() as provider:
        provider.delay, provider.events_lag = 1.0, 3.0  # a call waits 1 s before it is recorded
        log = tmp_path / "worker.log"
        worker = start_worker(provider, log, BATCHED, loglevel="INFO", machine=True, **production)
        beat = start_beat(tmp_path)
        restarted = None
        try:
            call_command("send_memo", memo.slug, stdout=io.StringIO())
            # A third: the next calls are still waiting.
            wait_for(lambda: provider.calls >= 2, timeout=60, what="the send to make two calls", interval=0.01)
            provider.hold_unrecorded, provider.hold = 1, 1
            wait_for(lambda: provider.held.qsize() == 2, timeout=30, what="both processes to be in a call")
            os.killpg(worker.pid, signal.SIGKILL)  # the machine dies
            crashed = time.monotonic()
            worker.wait()
            # Its pool processes die with it, their sockets closed by the kernel.
            wait_for(
                lambda: subprocess.run(["pgrep", "-g", str(worker.pid)], capture_output=True).returncode == 1,
                timeout=10,
                what="the worker's processes to be gone",
            )
            while not provider.held.empty():
                provider.held.get()[1].set()  # Mailgun drops the call whose client is gone
            wait_for(lambda: provider.dropped == 1, timeout=10, what="the unrecorded call to be dropped")
            accepted_before = len(provider.accepted)
            assert accepted_before < recipients * 2 / 3  # one held call accepted, the other never got
            time.sleep(3)  # the scenario: the machine's replacement starts 3 s after the crash
            restarted = start_worker(provider, log, BATCHED, loglevel="INFO", machine=True, **production)
            wait_for(lambda: len(provider.accepted) >= recipients * 2 / 3, timeout=60, what="two thirds to be sent")
            terminated = workers_connections_terminate()
            wait_for(lambda: Memo.objects.get(pk=memo.pk).status == "sent", timeout=150, what="the memo to finish")
            finished = time.monotonic() - crashed
        finally:
            for process in (restarted, beat):
                if process is not None:
                    stop_process(process)
        print(
            f"Mailgun had {accepted_before} at the crash; "
            f"finished {finished:.1f} s after the crash; {terminated} database sessions terminated; "
            f"{provider.log_requests} Logs API and {provider.event_requests} events API requests"
        )
    per_recipient = collections.Counter(mailgun_recipient(m) for m in provider.accepted)
    statuses = collections.Counter(Delivery.objects.filter(memo=memo).values_list("status", flat=True))
    assert statuses == {"sent": recipients}, statuses
    assert len(per_recipient) == recipients and set(per_recipient.values()) == {1}
    assert finished < 120
    assert provider.log_requests + provider.event_requests, "Mailgun was never asked"
    assert not SendLease.objects.exists()
