"""Benchmark: a memo sent end to end through the real pipeline, against a floor.

N developers (env N, default 1,000,000 for Mailgun, 200,000 for another provider) are
loaded into PostgreSQL, a memo is approved and sent with `send_memo`; three real Celery
worker processes (Redis broker) render each email and hand it through our backend for
PROVIDER (mailgun, amazon_ses, postmark, sendgrid, brevo, resend, sparkpost:
bench/providers.py; default mailgun) to that provider's loopback server (tests/) in this
process. The clock runs from `send_memo` until the memo is marked sent (none of its
deliveries queued or sending). In the same run, against the same server:

  floor        a script with no framework: raw SQL, an HMAC token and one Jinja2 render
               per recipient, each recipient's rendered email in the provider's batch
               call as bench/providers.py builds it by hand, the provider's batch size
               per call (Mailgun 1,000, SES 50, ...), http.client, one process per core
               (BENCH_FLOOR_PROCESSES, default 2);
  post_office  (Mailgun only) django-post_office sending the same memo
               (bench/post_office_send.py) to the first POST_OFFICE_N recipients (default
               10,000: it manages a few hundred a second, so a million would take an
               hour). Its rate is per-recipient, so the ratio compares like with like.

Prints recipients per second, microseconds per recipient, provider API calls per 1,000
recipients and each worker's peak RSS for each, and the ratios; for the pipeline also
the CPU its workers, PostgreSQL and Redis spent per recipient until the memo's evidence
was chained, and how long that took after the last email. The last line is one JSON
object. Not part of the tests. Needs requirements-bench.txt (`make bench` installs it).

    make bench                      # both benchmarks, N=1,000,000
    N=100000 .venv/bin/python bench/send.py
    PROVIDER=amazon_ses .venv/bin/python bench/send.py    # N=200,000 through SES's loopback
    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
    BENCH_BROKER_URL (default redis://127.0.0.1:6379/5), POST_OFFICE_N (default 10,000),
    BENCH_WORKERS (worker processes, default 3), BENCH_FLOOR_PROCESSES (default 2)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.import_developers import PRODUCTION  # noqa: E402  (run as deployed: DEBUG off)
from bench.post_office_send import post_office_run  # noqa: E402
from bench.providers import BenchProvider, Email, bench_provider  # noqa: E402

PROVIDER = os.environ.get("PROVIDER", "mailgun")
N = int(os.environ.get("N", "1000000" if PROVIDER == "mailgun" else "200000"))
POST_OFFICE_N = min(N, int(os.environ.get("POST_OFFICE_N", "10000")))
# Floor processes: one per core. With one, the floor had one core against the pipeline's
# two (and shared its interpreter lock with the loopback provider): the pipeline ran at
# 2.1 times it, which by our rule made it a straw man.
FLOOR_PROCESSES = int(os.environ.get("BENCH_FLOOR_PROCESSES", "2"))
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/5")
DB = os.environ.get("BENCH_SEND_DB", "memo_bench_send")  # another name lets two runs share a server
# Worker processes: each waits for PostgreSQL and the provider for part of every task,
# and with three the two cores stay busy (two: 48-53 s for 200,000, three: 44-46 s).
WORKERS = int(os.environ.get("BENCH_WORKERS", "3"))
# Our backend for PROVIDER (one API call per send task for Mailgun); BENCH_BACKEND
# overrides it, e.g. anymail.backends.mailgun.EmailBackend for one call per email.
BACKEND = os.environ.get("BENCH_BACKEND", "")
HTML = (
    "<p>Dear {{ developer.name }},</p><p>API traffic from {{ developer.country_name }} will be blocked from "
    "{{ memo.effective_date }}.</p>" + "<p>Details of the restriction and what to do next.</p>" * 40
)
TEXT = (
    "Dear {{ developer.name }},\nAPI traffic from {{ developer.country_name }} will be blocked.\n" + "Details.\n" * 40
)


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def manage(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def setup(env: dict[str, str]) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    manage("migrate", "-v0", env=env)
    csv_path = Path("/tmp/memo-bench-send.csv")
    with csv_path.open("w") as f:
        f.write("external_id,email,name,country,language\n")
        for i in range(N):
            f.write(f"b-{i:08d},dev{i}@example.com,Developer {i},CN,en\n")
    manage("import_developers", str(csv_path), env=env)
    manage(
        "shell",
        "-c",
        f"""
from django.contrib.auth.models import User, Group
from memo_service.memos.models import Memo
from memo_service.memos.approval import memo_request_approval, memo_approve
a = User.objects.create_user('bench-author', 'a@example.com', 'x')
b = User.objects.create_user('bench-approver', 'b@example.com', 'x'); b.groups.add(Group.objects.get(name='Approver'))
m = Memo.objects.create(title='Bench', slug='bench', subject='Access from {{{{ developer.country_name }}}} ends',
    html_body={HTML!r}, text_body={TEXT!r}, effective_date='2027-07-09', include_countries=['CN'], author=a)
m.refresh_from_db()  # the effective date as the database gives it back (a date, not the string)
memo_request_approval(memo=m, by=a); memo_approve(memo=m, by=b)
from memo_service.memos.evidence.sequencer import evidence_seal
evidence_seal(memo_id=m.pk)  # its approval record, chained as its sequencer would a second later
""",
        env=env,
    )


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The process's children, from the kernel's list of each of its threads' (a pool
    process started later may be a supervisor thread's): read four times a second while
    the pipeline runs, where `ps --ppid` took 4 ms of CPU from the cores it measures."""
    found: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in listing.read_text().split()]
        except OSError:
            pass  # the thread or process has ended
    return found


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command (state first), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_ticks(pid: int) -> int | None:
    """CPU clock ticks a process has used, None when it is gone."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else None


def service_ticks() -> int:
    """CPU ticks of this machine's PostgreSQL and Redis (0 when they run elsewhere): each
    process's, and the parent's reaped children's (backends already ended)."""
    total = 0
    for name in ("postgres", "redis-server"):
        pids = {int(p) for p in subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()}
        for fields in filter(None, map(proc_stat, pids)):
            total += int(fields[11]) + int(fields[12])
            if int(fields[1]) not in pids:  # the parent (the postmaster)
                total += int(fields[13]) + int(fields[14])
    return total


TICK = os.sysconf("SC_CLK_TCK")
SENT = "SELECT status = 'sent' FROM memos_memo WHERE id = %s"
PENDING = "SELECT EXISTS (SELECT FROM memos_delivery WHERE memo_id = %s AND status IN ('queued', 'sending'))"


def pipeline(
    provider_url: str,
    env: dict[str, str],
    provider: Any,
    app: str = "memo_service",
    bench: BenchProvider | None = None,
) -> dict[str, float]:
    """The send through `app`'s workers (bench/no_evidence.py's for evidence_cost.py's
    baseline) to `provider`, the loopback server of `bench` (default Mailgun's). Also
    counts the CPU the workers, PostgreSQL and Redis spend from `send_memo` until the
    memo's evidence is chained, and how long that took after the last email."""
    bench = bench or bench_provider("mailgun")
    worker_env = {**env, **bench.env(provider)}
    if BACKEND:
        worker_env["EMAIL_BACKEND"] = BACKEND
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            f"--concurrency={WORKERS}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(4)  # the worker starts before the clock does
    calls_before, recipients_before = bench.calls(provider), bench.recipients(provider)
    peaks: dict[int, float] = {}
    ticks: dict[int, int] = {}

    def look() -> None:
        pool = children(worker.pid)
        for pid in pool:  # the peak RSS of the processes that send
            peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mb(pid))
        for pid in [worker.pid, *pool]:
            ticks[pid] = proc_ticks(pid) or ticks.get(pid, 0)

    look()
    worker_before, services_before = dict(ticks), service_ticks()
    start = time.perf_counter()
    manage("send_memo", "bench", env=worker_env)  # every process of a deployment has one config
    dispatched = time.perf_counter() - start
    with psycopg.connect(db_url(DB), autocommit=True) as conn:
        memo = conn.execute("SELECT id FROM memos_memo WHERE slug = 'bench'").fetchone()[0]
        # Done when the product marks the memo sent (memo_mark_sent_if_done, once none of
        # its deliveries is queued or sending), asked of its one row four times a second.
        # Counting the pending deliveries instead, even through the (memo, status) index,
        # visited every pending row's page each time: at a million, twice as many of the
        # deliveries' pages read into PostgreSQL's buffers as the send itself read, and
        # the more the slower the send, so it widened every gap it measured. Every 5 s
        # the rows are asked too, in case the memo is never marked.
        polls = 0
        while True:
            look()
            polls += 1
            if conn.execute(SENT, [memo]).fetchone()[0] or (
                polls % 20 == 0 and not conn.execute(PENDING, [memo]).fetchone()[0]
            ):
                break
            time.sleep(0.25)
        elapsed = time.perf_counter() - start
        assert not conn.execute(PENDING, [memo]).fetchone()[0], "the memo is marked sent with deliveries pending"
        unchained = "SELECT count(*) FROM memos_evidencerecord WHERE memo_id = %s AND seq IS NULL"
        while conn.execute(unchained, [memo]).fetchone()[0] and time.perf_counter() - start < elapsed + 300:
            look()
            time.sleep(0.25)
        sealed = time.perf_counter() - start
    look()
    worker_cpu = sum(ticks[pid] - worker_before.get(pid, 0) for pid in ticks) / TICK
    services_cpu = (service_ticks() - services_before) / TICK
    worker.send_signal(signal.SIGTERM)
    stopping = time.perf_counter()
    try:
        worker.wait(timeout=120)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    # Outside the figure, but said: it usually stops in 2-3 s, and about one run in fifteen
    # in 32 s: a pool process waits out billiard's 30 s for the main process to read its
    # last results (Worker._ensure_messages_consumed; bench/RESULTS.md).
    if (stopped := time.perf_counter() - stopping) > 10:
        print(f"the worker took {stopped:.0f} s to stop after SIGTERM", file=sys.stderr)
    return {
        "seconds": elapsed,
        "dispatch_seconds": dispatched,
        "seal_lag_seconds": sealed - elapsed,
        "worker_cpu_seconds": worker_cpu,
        "services_cpu_seconds": services_cpu,
        "calls": bench.calls(provider) - calls_before,
        "messages": bench.recipients(provider) - recipients_before,
        "peak_rss_mb": max(peaks.values() or [0.0]),
    }


def floor(provider_url: str, bench: BenchProvider) -> dict[str, float]:
    """No framework: FLOOR_PROCESSES processes (one per core: the pipeline has the same
    two cores, and the loopback provider in this process holds its own interpreter lock),
    each sending its share of the developers (by id) with raw SQL, an HMAC token, one
    Jinja2 render per recipient, the provider's batch call as bench/providers.py builds it
    by hand and http.client."""
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    start = time.perf_counter()
    shares = [
        ctx.Process(target=floor_share, args=(provider_url, bench, n, FLOOR_PROCESSES, done))
        for n in range(FLOOR_PROCESSES)
    ]
    for process in shares:
        process.start()
    results = [done.get() for _ in shares]
    seconds = time.perf_counter() - start
    for process in shares:
        process.join()
    return {
        "seconds": seconds,
        "calls": sum(r["calls"] for r in results),
        "messages": sum(r["messages"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


def floor_share(provider_url: str, bench: BenchProvider, share: int, shares: int, done: Any) -> None:
    """One floor process: the developers whose id leaves `share` modulo `shares`."""
    env = jinja2.Environment(autoescape=True)
    html, text = env.from_string(HTML), jinja2.Environment().from_string(TEXT)
    url = urllib.parse.urlsplit(provider_url)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    key = b"floor-secret"
    calls = sent = 0
    with psycopg.connect(db_url(DB)) as db:
        cursor = db.cursor(name="developers")  # server-side: memory stays flat
        cursor.itersize = bench.batch
        cursor.execute(
            "SELECT id, email, name, country FROM developers_developer WHERE id %% %s = %s ORDER BY id", [shares, share]
        )
        while rows := cursor.fetchmany(bench.batch):
            emails = []
            for dev_id, email, name, country in rows:
                token = hmac.new(key, f"1:{dev_id}".encode(), hashlib.sha256).hexdigest()
                ctx = {"developer": {"name": name, "country_name": country}, "memo": {"effective_date": "2027-07-09"}}
                emails.append(
                    Email(
                        email,
                        name,
                        f"Access from {country} ends",
                        html.render(ctx),
                        text.render(ctx) + f"\nhttps://example.com/ack/{token}/",
                        str(dev_id),
                    )
                )
            path, headers, body = bench.floor_request(provider_url, emails)
            conn.request("POST", path, body, headers)
            answer = conn.getresponse()
            answer.read()
            assert answer.status < 300, f"the floor's call was answered {answer.status}"
            calls += 1
            sent += len(rows)
    done.put({"calls": calls, "messages": sent, "peak_rss_mb": peak_rss_mb(os.getpid())})


def rates(run: dict[str, float], n: int) -> tuple[float, float, float]:
    """(recipients/s, µs per recipient, API calls per 1,000 recipients)."""
    rate = n / run["seconds"]
    return rate, 1e6 / rate, run["calls"] * 1000 / n


def cpu_us(run: dict[str, float], n: int) -> float:
    """CPU of the workers, PostgreSQL and Redis per recipient, in µs."""
    return (run["worker_cpu_seconds"] + run["services_cpu_seconds"]) * 1e6 / n


def bench_env() -> dict[str, str]:
    """The environment of every process of the bench's deployment (DEBUG off)."""
    return {
        **os.environ,
        "DATABASE_URL": db_url(DB),
        "CELERY_BROKER_URL": BROKER,
        **PRODUCTION,
        "VAR_DIR": "/tmp/memo-bench-var",
    }


def main() -> None:
    env = bench_env()
    bench = bench_provider(PROVIDER)
    print(
        f"{N:,} recipients; PostgreSQL, Redis, {WORKERS} worker processes, loopback {bench.name}, "
        f"{BACKEND or bench.backend}"
    )
    setup(env)
    with bench.server() as provider:
        ours = pipeline(provider.url, env, provider, bench=bench)
        taken = bench.recipients(provider)
        assert taken == N, f"{taken} emails reached the provider, not {N}"
        assert len(set(bench.addresses(provider))) == N, "someone got the memo twice"
        base = floor(provider.url, bench)
        assert bench.recipients(provider) - taken == N
        # django-post_office sends through anymail's Mailgun backend only.
        post_office = (
            post_office_run(db_url(DB), provider.url, provider, POST_OFFICE_N) if PROVIDER == "mailgun" else None
        )
    rate, us, calls = rates(ours, N)
    floor_rate, floor_us, floor_calls = rates(base, N)
    print(
        f"pipeline:    {rate:10,.0f} recipients/s {us:8.0f} µs/recipient {calls:6.1f} API calls/1,000  "
        f"{ours['seconds']:7.1f} s  worker peak RSS {ours['peak_rss_mb']:.0f} MB  "
        f"(send_memo returned after {ours['dispatch_seconds']:.1f} s)"
    )
    print(
        f"floor:       {floor_rate:10,.0f} recipients/s {floor_us:8.0f} µs/recipient {floor_calls:6.1f} API calls/1,000  "
        f"{base['seconds']:7.1f} s  peak RSS {base['peak_rss_mb']:.0f} MB"
    )
    po_rate = 0.0
    if post_office is not None:
        po_rate, po_us, po_calls = rates(post_office, POST_OFFICE_N)
        print(
            f"post_office: {po_rate:10,.0f} recipients/s {po_us:8.0f} µs/recipient {po_calls:6.0f} API calls/1,000  "
            f"{post_office['seconds']:7.1f} s for {POST_OFFICE_N:,}  peak RSS {post_office['peak_rss_mb']:.0f} MB"
        )
    print(
        f"pipeline CPU: workers {ours['worker_cpu_seconds'] * 1e6 / N:.0f} µs/recipient, PostgreSQL and Redis "
        f"{ours['services_cpu_seconds'] * 1e6 / N:.0f} (until its evidence was chained, "
        f"{ours['seal_lag_seconds']:.1f} s after the last email)"
    )
    print(
        f"ratio to the floor: {rate / floor_rate:.2f}"
        + (f"   to django-post_office: {rate / po_rate:.1f}" if po_rate else "")
    )
    print(
        json.dumps(
            {
                "provider": bench.name,
                "recipients": N,
                "seconds": round(ours["seconds"], 1),
                "recipients_per_s": round(rate),
                "us_per_recipient": round(us),
                "floor_ratio": round(rate / floor_rate, 3),
                **({"post_office_ratio": round(rate / po_rate, 1)} if po_rate else {}),
                "api_calls_per_1000": round(calls, 1),
                "peak_rss_mb": round(ours["peak_rss_mb"], 1),
                "cpu_us_per_recipient": round(cpu_us(ours, N)),
                "seal_lag_s": round(ours["seal_lag_seconds"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
