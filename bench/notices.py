"""Benchmark: the console's notices call, against a floor on the same server.

N developers (env N, default 1,000,000) are loaded into PostgreSQL and a memo (English
and Chinese) is sent to all of them. The project then runs under gunicorn as deployed
(DEBUG off; BENCH_WEB_WORKERS processes of 4 threads, default 2 on this 2-core machine)
and CONNECTIONS (8) keep-alive connections, each in its own process, ask for
`GET /api/v1/developers/{external_id}/notices` of random developers for SECONDS (30)
after a warm-up. In the same run, the same way, against the same server, taking turns
with it (ROUNDS of 3), so that other load on the machine falls on both alike:

  floor   a bare Django view (bench/notices_site.py) that reads one developer by
          primary key and returns two of its fields as JSON: the project's middleware,
          one indexed query, no authentication, no rendering.

Prints requests/s, p50 and p99 of each and the ratio; also the server's CPU time a
request (web processes and PostgreSQL backends, from /proc), which other load on the
machine disturbs far less than the rates. The last line is one JSON object with
`per_s`, `floor_ratio` and `p99_ms`. Not part of the tests. Target: floor_ratio ≥ 0.5.

    make bench                         # N=1,000,000
    N=5000 SECONDS=6 .venv/bin/python bench/notices.py
    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
    BENCH_DB (default memo_bench_notices), BENCH_PORT (default 8731)
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.import_developers import PRODUCTION  # noqa: E402  (run as deployed: DEBUG off)

N = int(os.environ.get("N", "1000000"))
SECONDS = float(os.environ.get("SECONDS", "30"))  # of each, in ROUNDS turns
ROUNDS = 3
KINDS = ("floor", "notices")
WARMUP_SECONDS = 2.0  # every web thread has compiled the memo and opened its connection
CONNECTIONS = 8
THREADS = 4  # per web process: with 2 processes, one thread for each connection
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "2"))
PORT = int(os.environ.get("BENCH_PORT", "8731"))
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB = os.environ.get("BENCH_DB", "memo_bench_notices")
TEXT = (
    "Dear {{ developer.name }},\nAPI traffic from {{ developer.country_name }} will be blocked.\n" + "Details.\n" * 40
)


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def environment() -> dict[str, str]:
    return {
        **os.environ,
        **PRODUCTION,
        "DATABASE_URL": db_url(DB),
        "DJANGO_SETTINGS_MODULE": "bench.notices_site",
        "SITE_URL": f"http://127.0.0.1:{PORT}",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }


def setup() -> str:
    """A fresh database with N developers and one memo sent to all; returns a console token."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    env = environment()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from bench.approve import approve
    from memo_service.api.models import ApiClient, Scope
    from memo_service.memos.models import Memo, MemoTranslation

    started = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO developers_developer (external_id, email, name, organization, org_contact_email, country, "
            "language, is_active, attributes, email_status, created_at) "
            "SELECT 'acct-' || lpad(g::text, 8, '0'), 'dev' || g || '@example.com', 'Developer ' || g, "
            "'Org ' || (g %% 5000), '', (ARRAY['CN','RU','IR','HK'])[1 + g %% 4], "
            "CASE WHEN g %% 2 = 0 THEN 'zh-hans' ELSE 'en' END, true, '{}', 'ok', now() "
            "FROM generate_series(1, %s) g",
            [N],
        )
    memo = Memo.objects.create(
        title="Regions blocked",
        slug="regions-blocked",
        subject="Access from {{ developer.country_name }} ends",
        html_body="<p>Dear {{ developer.name }},</p>",
        text_body=TEXT,
        ack_deadline=timezone.now() + dt.timedelta(days=30),
    )
    MemoTranslation.objects.create(
        memo=memo,
        language="zh-hans",
        subject="来自{{ developer.country_name }}的访问将被阻止",
        html_body="<p>{{ developer.name }}，您好</p>",
        text_body="{{ developer.name }}，您好：\n来自{{ developer.country_name }}的流量将被阻止。",
    )
    approve(memo)
    Memo.objects.filter(pk=memo.pk).update(
        status="sent",
        send_started_at=timezone.now(),
        dispatched_at=timezone.now(),
    )
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO memos_delivery (memo_id, developer_id, kind, sequence, status, language, country, reason, "
            "provider_message_id, attempts, status_reason, created_at, sent_at, status_changed_at) "
            "SELECT %s, id, 'initial', 0, 'delivered', language, country, 'in Unsupported regions', "
            "'<' || id || '@bench>', 1, '', now(), now() - interval '1 day', now() FROM developers_developer",
            [memo.pk],
        )
        cur.execute("ANALYZE")
    client = ApiClient(name="console", scopes=[Scope.NOTICES_READ.value])
    token = client.token_rotate()
    client.save()
    print(f"setup: {N:,} developers and deliveries in {time.perf_counter() - started:.1f} s")
    return token


def ask(args: tuple[str, str, float, int]) -> list[float]:
    """One keep-alive connection asking until `until`; returns each request's latency (s)."""
    kind, token, until, seed = args
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if kind == "notices" else {}
    latencies = []
    while (now := time.perf_counter()) < until:
        n = rng.randint(1, N)
        path = f"/api/v1/developers/acct-{n:08d}/notices" if kind == "notices" else f"/bench/floor/{n}"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or (kind == "notices" and b'"state"' not in body):
            raise SystemExit(f"{path}: {response.status} {body[:300]!r}")
        latencies.append(time.perf_counter() - now)
    conn.close()
    return latencies


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ended
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def server_cpu(web_pid: int) -> dict[int, float]:
    """CPU seconds so far of each web process and each PostgreSQL backend serving the
    benchmark's database: what a request costs the server whatever else the machine runs."""
    web = [
        int(p)
        for p in subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(web_pid)], capture_output=True, text=True, check=False
        ).stdout.split()
    ]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        backends = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB]
            )
        ]
    return {pid: _cpu_seconds(pid) for pid in web + backends}


def measure(pool: multiprocessing.pool.Pool, token: str, web_pid: int) -> dict[str, dict[str, float]]:
    """Both, alternating in ROUNDS rounds (so a change in the machine's other load falls
    on both alike), after a warm-up of each."""
    for kind in KINDS:
        pool.map(ask, [(kind, token, time.perf_counter() + WARMUP_SECONDS, i) for i in range(CONNECTIONS)])
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    elapsed = dict.fromkeys(KINDS, 0.0)
    cpu = dict.fromkeys(KINDS, 0.0)
    for n in range(ROUNDS):
        for kind in KINDS:
            before = server_cpu(web_pid)
            started = time.perf_counter()
            runs = pool.map(ask, [(kind, token, started + SECONDS / ROUNDS, 1000 * n + i) for i in range(CONNECTIONS)])
            elapsed[kind] += time.perf_counter() - started
            cpu[kind] += sum(t - before.get(pid, 0.0) for pid, t in server_cpu(web_pid).items())
            latencies[kind] += [x for run in runs for x in run]
    results = {}
    for kind in KINDS:
        done = sorted(latencies[kind])
        results[kind] = result = {
            "requests": len(done),
            "per_s": round(len(done) / elapsed[kind], 1),
            "p50_ms": round(done[len(done) // 2] * 1000, 2),
            "p99_ms": round(done[int(len(done) * 0.99)] * 1000, 2),
            "server_cpu_ms": round(cpu[kind] / len(done) * 1000, 3),
        }
        print(
            f"{kind:>8}: {result['per_s']:>8,.1f} requests/s   p50 {result['p50_ms']:6.2f} ms   "
            f"p99 {result['p99_ms']:6.2f} ms   server CPU {result['server_cpu_ms']:.2f} ms a request   "
            f"({result['requests']:,} requests)"
        )
    return results


def wait_until_up() -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            conn.request("GET", "/bench/floor/1")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the web server did not start")
        time.sleep(0.2)


def main() -> None:
    token = setup()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "memo_service.wsgi:application",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--workers",
            str(WEB_WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(THREADS),
            "--backlog",
            "1024",
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=environment(),
    )
    try:
        wait_until_up()
        print(
            f"N={N:,}, {CONNECTIONS} connections, {SECONDS:.0f} s of each in {ROUNDS} turns, "
            f"gunicorn {WEB_WORKERS} x {THREADS} threads"
        )
        with multiprocessing.get_context("fork").Pool(CONNECTIONS) as pool:
            results = measure(pool, token, server.pid)
        floor, notices = results["floor"], results["notices"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    ratio = round(notices["per_s"] / floor["per_s"], 2)
    cpu_ratio = round(floor["server_cpu_ms"] / notices["server_cpu_ms"], 2)
    print(f"ratio to the floor: {ratio} (target ≥ 0.5); by server CPU a request: {cpu_ratio}")
    print(
        json.dumps(
            {
                "bench": "notices",
                "n": N,
                "per_s": notices["per_s"],
                "floor_ratio": ratio,
                "p50_ms": notices["p50_ms"],
                "p99_ms": notices["p99_ms"],
                "floor_per_s": floor["per_s"],
                "floor_p50_ms": floor["p50_ms"],
                "floor_p99_ms": floor["p99_ms"],
                "server_cpu_ms": notices["server_cpu_ms"],
                "floor_server_cpu_ms": floor["server_cpu_ms"],
                "cpu_ratio": cpu_ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
