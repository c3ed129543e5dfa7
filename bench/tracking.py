"""Benchmark: what comes back, against a floor. Signed Mailgun `delivered` webhooks for
one memo while developers acknowledge it, through gunicorn as the README's production
section starts it: one server for the provider's webhooks, one for the pages (DEBUG off,
PostgreSQL, Redis, a Celery worker running the evidence sequencer).

A memo with N sent deliveries (env N, default 100,000). 16 connections post one signed
`delivered` event per delivery to /anymail/mailgun/tracking/ while 2 connections post
acknowledgements for the same memo to the pages' server. In the same run, against the
webhooks' server and with the same acknowledgements beside it, a floor:
a bare Django view that checks Mailgun's signature and inserts one row
(bench/tracking_floor.py), posted the same N events from the same 16 connections.

Prints events/s, p50 and p99 of events and of acknowledgements, the ratio to the floor,
and after the flood: events answered 200 against events stored, seconds until every
evidence record is chained, and what `verify_evidence` says. The last line is one JSON
object. Not part of the tests.

    make bench                       # or: N=20000 .venv/bin/python bench/tracking.py
    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
    BENCH_BROKER_URL (default redis://127.0.0.1:6379/5), BENCH_TRACKING_DB (database name)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.import_developers import PRODUCTION  # noqa: E402  (after the path is set)

N = int(os.environ.get("N", "100000"))
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/5")
DB = os.environ.get("BENCH_TRACKING_DB", "memo_bench_tracking")
SIGNING_KEY = "bench-webhook-signing-key"
WEBHOOK_SECRET = "hook:bench-only"
EVENT_PROCESSES, EVENT_THREADS = 4, 4  # 16 connections posting events
ACK_THREADS = 2  # 2 connections posting acknowledgements
HOOK_WORKERS, WEB_WORKERS = 4, 2  # the two gunicorns of the README's production section
HOOK_PREFIX = ["nice", "-n", "10"]  # the webhooks' one yields the CPU to the pages, as there
SEAL_TIMEOUT_S = 600


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


ENV = {
    **os.environ,
    **PRODUCTION,
    "DATABASE_URL": db_url(DB),
    "CELERY_BROKER_URL": BROKER,
    "VAR_DIR": "/tmp/memo-bench-tracking-var",
    "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
    "ANYMAIL_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "DJANGO_SETTINGS_MODULE": "bench.tracking_settings",
}
AUTH = "Basic " + __import__("base64").b64encode(WEBHOOK_SECRET.encode()).decode()


def setup() -> tuple[int, list[int]]:
    """The database, a sent memo with 3N sent deliveries (N get the events, N answer
    during each flood), their handovers chained.
    Returns (memo id, developer ids)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    # The heads an earlier run published belong to the database just dropped: the fresh
    # chain would fail verification against them.
    shutil.rmtree(ENV["VAR_DIR"], ignore_errors=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=ENV, check=True)
    os.environ.update(ENV)
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from bench.approve import approve
    from memo_service.developers.models import Developer
    from memo_service.memos.evidence.append import evidence_record_handover
    from memo_service.memos.evidence.sequencer import evidence_seal
    from memo_service.memos.models import Delivery, Memo

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_floor_event (id bigserial PRIMARY KEY, event_id text UNIQUE, body jsonb)")
    Developer.objects.bulk_create(
        (
            Developer(external_id=f"t-{i:08d}", email=f"dev{i}@example.com", name=f"Developer {i}", country="CN")
            for i in range(N + 2 * N)  # N to get events, then N for each flood's acknowledgements
        ),
        batch_size=5000,
    )
    memo = Memo.objects.create(
        title="Bench",
        slug="bench-tracking",
        subject="s",
        html_body="h",
        text_body="t",
    )
    approve(memo)
    Memo.objects.filter(pk=memo.pk).update(status="sent")
    developers = list(Developer.objects.order_by("id").values_list("id", flat=True))
    now = timezone.now()
    Delivery.objects.bulk_create(
        (
            Delivery(
                memo=memo,
                developer_id=d,
                status="sent",
                country="CN",
                language="en",
                sent_at=now,
                provider_message_id=f"<{d}.bench@example.com>",
                rendered_with={},
                text_hash="0" * 64,
            )
            for d in developers
        ),
        batch_size=5000,
    )
    ids = list(Delivery.objects.filter(memo=memo).order_by("id").values_list("id", flat=True))
    for start in range(0, len(ids), 1000):  # as the send tasks record them, a call at a time
        evidence_record_handover(delivery_ids=ids[start : start + 1000])
    started = time.perf_counter()
    evidence_seal(memo_id=memo.pk)
    seconds = time.perf_counter() - started
    print(
        f"sequencer: {len(ids):,} emails' handovers (a record per call of 1,000) chained in {seconds:.1f} s "
        f"({len(ids) / seconds:,.0f} emails/s)"
    )
    connection.close()
    return memo.pk, developers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event_body(delivery_id: int, message_id: str) -> bytes:
    token = uuid.uuid4().hex
    timestamp = str(int(time.time()))
    signature = hmac.new(SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": {
                "event": "delivered",
                "id": uuid.uuid4().hex[:22],
                "timestamp": time.time(),
                "recipient": f"dev{delivery_id}@example.com",
                "message": {"headers": {"message-id": message_id}},
                "user-variables": {"delivery_id": str(delivery_id)},
            },
        }
    ).encode()


def post_all(port: int, path: str, jobs: list[int], threads: int, out: multiprocessing.Queue) -> None:
    """Post one event per delivery id from `threads` connections; report (status counts, latencies)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    chunks = [jobs[n::threads] for n in range(threads)]

    def run(chunk: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        codes: dict[int, int] = {}
        for delivery_id in chunk:
            body = event_body(delivery_id, f"{delivery_id}.bench@example.com")
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json", "Authorization": AUTH})
                response = conn.getresponse()
                response.read()
                code = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                code = 0
            mine.append(time.perf_counter() - start)
            codes[code] = codes.get(code, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, count in codes.items():
                statuses[code] = statuses.get(code, 0) + count

    workers = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((statuses, latencies))


def ack_all(port: int, paths: list[str], stop: multiprocessing.Event, out: multiprocessing.Queue) -> None:
    """Acknowledge, developer after developer, from ACK_THREADS connections until `stop`."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    body = urllib.parse.urlencode({"response": "acknowledged", "interacted": "1"})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Mozilla/5.0 (bench) Mobile"}

    def run(chunk: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for path in chunk:
            if stop.is_set():
                break
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
                code = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                code = 0
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses[code] = statuses.get(code, 0) + 1

    workers = [threading.Thread(target=run, args=(paths[n::ACK_THREADS],)) for n in range(ACK_THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((statuses, latencies))


def flood(
    port: int, path: str, ids: list[int], ack_port: int = 0, ack_paths: list[str] | None = None
) -> dict[str, object]:
    out: multiprocessing.Queue = multiprocessing.Queue()
    acks_out: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    shares = [ids[n::EVENT_PROCESSES] for n in range(EVENT_PROCESSES)]
    processes = [
        multiprocessing.Process(target=post_all, args=(port, path, share, EVENT_THREADS, out)) for share in shares
    ]
    acker = multiprocessing.Process(target=ack_all, args=(ack_port, ack_paths, stop, acks_out)) if ack_paths else None
    start = time.perf_counter()
    for p in processes:
        p.start()
    if acker:
        acker.start()
    results = [out.get() for _ in processes]
    elapsed = time.perf_counter() - start
    stop.set()
    for p in processes:
        p.join()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    for codes, lat in results:
        latencies += lat
        for code, count in codes.items():
            statuses[code] = statuses.get(code, 0) + count
    run: dict[str, object] = {"seconds": elapsed, "statuses": statuses, "latencies": sorted(latencies)}
    if acker:
        ack_statuses, ack_latencies = acks_out.get()
        acker.join()
        run["ack_statuses"], run["ack_latencies"] = ack_statuses, sorted(ack_latencies)
    return run


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else 0.0


def main() -> None:
    print(
        f"{N:,} delivered events for one memo; gunicorn --workers {HOOK_WORKERS} for the webhooks and "
        f"--workers {WEB_WORKERS} for the pages, PostgreSQL, Redis, "
        f"{EVENT_PROCESSES * EVENT_THREADS} event connections + {ACK_THREADS} acknowledging"
    )
    memo_id, developers = setup()
    from memo_service.memos.answer.tokens import answer_token

    # The first N developers' deliveries get the events; each flood's acknowledgements
    # come from N others of their own (a second answer is not recorded again).
    ack_paths = [f"/ack/{answer_token(memo_id, d)}/" for d in developers[N:]]
    from memo_service.memos.models import Delivery

    ids = list(Delivery.objects.filter(memo_id=memo_id).order_by("id").values_list("id", flat=True))[:N]
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "memo_service", "purge", "-f"],
        cwd=ROOT,
        env=ENV,
        check=False,
        capture_output=True,
    )
    # As under "Running in production": one gunicorn for the pages (acknowledgements, the
    # admin, the API), one for the provider's webhooks.
    port, web_port = free_port(), free_port()
    servers = [
        subprocess.Popen(
            [*prefix, str(ROOT / ".venv/bin/gunicorn"), "memo_service.wsgi", "--bind", f"127.0.0.1:{bind}"]
            + ["--workers", str(workers), "--log-level", "warning"],
            cwd=ROOT,
            env=ENV,
        )
        for bind, workers, prefix in [(web_port, WEB_WORKERS, []), (port, HOOK_WORKERS, HOOK_PREFIX)]
    ]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "memo_service",
            "worker",
            "--concurrency=2",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for bind in (port, web_port):
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", bind), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
        time.sleep(3)  # the worker starts before the clock does
        # Developers acknowledge during both floods, so the floor's server shares the
        # machine with the same pages as the product's.
        base = flood(port, "/bench/floor/", ids, web_port, ack_paths[N:])
        ours = flood(port, "/anymail/mailgun/tracking/", ids, web_port, ack_paths[:N])
        flood_end = time.perf_counter()
        with psycopg.connect(db_url(DB)) as conn:
            while True:
                pending = conn.execute(
                    "SELECT count(*) FROM memos_evidencerecord WHERE memo_id = %s AND seq IS NULL", [memo_id]
                ).fetchone()[0]
                if pending == 0 or time.perf_counter() - flood_end > SEAL_TIMEOUT_S:
                    break
                time.sleep(0.2)
            seal_lag = time.perf_counter() - flood_end
            stored = conn.execute("SELECT count(*) FROM memos_deliveryevent").fetchone()[0]
            records = conn.execute(
                "SELECT count(*) FROM memos_evidencerecord WHERE memo_id = %s", [memo_id]
            ).fetchone()[0]
            checkpoints = conn.execute(
                "SELECT count(*) FROM memos_evidencecheckpoint WHERE memo_id = %s", [memo_id]
            ).fetchone()[0]
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
        worker.wait(timeout=60)
    check = subprocess.run(
        [sys.executable, "manage.py", "verify_evidence", "bench-tracking", "--no-seal"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    verified = check.returncode == 0 and "chain intact" in check.stdout
    ok = ours["statuses"].get(200, 0)  # type: ignore[union-attr]
    floor_ok = base["statuses"].get(200, 0)  # type: ignore[union-attr]
    rate, floor_rate = ok / ours["seconds"], floor_ok / base["seconds"]  # type: ignore[operator]
    lat, ack_lat = ours["latencies"], ours["ack_latencies"]
    acks = ours["ack_statuses"]
    print(
        f"floor:    {floor_rate:8,.0f} events/s  p50 {pct(base['latencies'], 0.5):6.1f} ms  "  # type: ignore[arg-type]
        f"p99 {pct(base['latencies'], 0.99):6.1f} ms  statuses {base['statuses']}"
    )  # type: ignore[arg-type]
    print(
        f"tracking: {rate:8,.0f} events/s  p50 {pct(lat, 0.5):6.1f} ms  p99 {pct(lat, 0.99):6.1f} ms  "  # type: ignore[arg-type]
        f"statuses {ours['statuses']}"
    )
    print(
        f"acknowledgements during the floor's flood: {sum(base['ack_statuses'].values())} "  # type: ignore[union-attr]
        f"p50 {pct(base['ack_latencies'], 0.5):6.1f} ms  p99 {pct(base['ack_latencies'], 0.99):6.1f} ms"  # type: ignore[arg-type]
    )
    print(
        f"acknowledgements during the flood: {sum(acks.values())} (statuses {acks}), "  # type: ignore[union-attr]
        f"p50 {pct(ack_lat, 0.5):6.1f} ms  p99 {pct(ack_lat, 0.99):6.1f} ms"
    )  # type: ignore[arg-type]
    print(f"ratio to the floor: {rate / floor_rate:.2f}")
    print(
        f"after the flood: {ok:,} events answered 200, {stored:,} stored; every record chained "
        f"{seal_lag:.1f} s after the last event ({records:,} records, {checkpoints:,} checkpoints)"
    )
    print(f"verify_evidence: {(check.stdout or check.stderr).strip()}")
    print(
        json.dumps(
            {
                "events": N,
                "events_per_s": round(rate),
                "floor_events_per_s": round(floor_rate),
                "floor_ratio": round(rate / floor_rate, 3),
                "event_p50_ms": round(pct(lat, 0.5), 1),  # type: ignore[arg-type]
                "event_p99_ms": round(pct(lat, 0.99), 1),
                "ack_p50_ms": round(pct(ack_lat, 0.5), 1),  # type: ignore[arg-type]
                "ack_p99_ms": round(pct(ack_lat, 0.99), 1),
                "acks": sum(acks.values()),  # type: ignore[arg-type,union-attr]
                "lost": max(0, ok - stored),
                "seal_lag_s": round(seal_lag, 1),
                "verified": verified,
            }
        )
    )


if __name__ == "__main__":
    main()
