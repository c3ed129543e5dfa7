"""Benchmark: a memo sent end to end through the real pipeline, against a floor.

N developers (env N, default 20,000) are loaded into PostgreSQL, a memo is approved and
sent with `send_memo`; two real Celery worker processes (Redis broker) render each email
and hand it through anymail's Mailgun backend to a loopback Mailgun in this process. In
the same run, a floor script with no framework (raw SQL, HMAC token, one Jinja2 render
per recipient, http.client to the same server) sends the same memo. Prints recipients
per second, microseconds per recipient, provider API calls per 1,000 recipients, each
worker's peak RSS, and the ratio to the floor; the last line is one JSON object.
django-post_office is not measured (post_office_ratio is null). Not part of the tests.

    make bench                      # both benchmarks
    N=100000 .venv/bin/python bench/send.py
    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
    BENCH_BROKER_URL (default redis://127.0.0.1:6379/5)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import jinja2
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.loopback_provider import API_KEY, mailgun_server  # noqa: E402

N = int(os.environ.get("N", "20000"))
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/5")
DB = "memo_bench_send"
WORKERS = 2
# The batching Mailgun backend (one API call per send task); BENCH_BACKEND overrides it,
# e.g. anymail.backends.mailgun.EmailBackend for one call per email.
BACKEND = os.environ.get("BENCH_BACKEND", "memo_service.backends.mailgun.EmailBackend")
HTML = "<p>Dear {{ developer.name }},</p><p>API traffic from {{ developer.country_name }} will be blocked from " \
       "{{ memo.effective_date }}.</p>" + "<p>Details of the restriction and what to do next.</p>" * 40
TEXT = "Dear {{ developer.name }},\nAPI traffic from {{ developer.country_name }} will be blocked.\n" + "Details.\n" * 40


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def manage(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


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
    manage("shell", "-c", f"""
from django.contrib.auth.models import User, Group
from memo_service.memos.models import Memo
from memo_service.memos.approval import memo_request_approval, memo_approve
a = User.objects.create_user('bench-author', 'a@example.com', 'x')
b = User.objects.create_user('bench-approver', 'b@example.com', 'x'); b.groups.add(Group.objects.get(name='Approver'))
m = Memo.objects.create(title='Bench', slug='bench', subject='Access from {{{{ developer.country_name }}}} ends',
    html_body={HTML!r}, text_body={TEXT!r}, effective_date='2027-07-09', include_countries=['CN'], author=a)
memo_request_approval(memo=m, by=a); memo_approve(memo=m, by=b)
""", env=env)


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def pipeline(provider_url: str, env: dict[str, str], provider: object) -> dict[str, float]:
    worker_env = {**env, "EMAIL_BACKEND": BACKEND,
                  "ANYMAIL_MAILGUN_API_KEY": API_KEY, "ANYMAIL_MAILGUN_API_URL": provider_url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "memo_service", "worker", f"--concurrency={WORKERS}",
         "--pool=prefork", "--without-gossip", "--without-mingle", "--loglevel=WARNING"],
        cwd=ROOT, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(4)  # the worker starts before the clock does
    requests_before = provider.requests  # type: ignore[attr-defined]
    start = time.perf_counter()
    manage("send_memo", "bench", env=env)
    peaks: dict[int, float] = {}
    with psycopg.connect(db_url(DB)) as conn:
        while True:
            for pid in children(worker.pid):
                peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mb(pid))
            pending = conn.execute("SELECT count(*) FROM memos_delivery WHERE status IN ('queued', 'sending')").fetchone()[0]
            if pending == 0:
                break
            time.sleep(0.5)
    elapsed = time.perf_counter() - start
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    return {"seconds": elapsed, "calls": provider.requests - requests_before,  # type: ignore[attr-defined]
            "messages": len(provider.accepted),  # type: ignore[attr-defined]
            "peak_rss_mb": max(peaks.values() or [0.0])}


def floor(provider_url: str) -> dict[str, float]:
    """No framework: raw SQL, an HMAC token, one Jinja2 render, http.client, one process."""
    env = jinja2.Environment(autoescape=True)
    html, text = env.from_string(HTML), jinja2.Environment().from_string(TEXT)
    url = urllib.parse.urlsplit(provider_url)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    auth = "Basic " + __import__("base64").b64encode(f"api:{API_KEY}".encode()).decode()
    key = b"floor-secret"
    start = time.perf_counter()
    with psycopg.connect(db_url(DB)) as db:
        rows = db.execute("SELECT id, email, name, country FROM developers_developer ORDER BY id").fetchall()
        for dev_id, email, name, country in rows:
            token = hmac.new(key, f"1:{dev_id}".encode(), hashlib.sha256).hexdigest()
            ctx = {"developer": {"name": name, "country_name": country}, "memo": {"effective_date": "2027-07-09"}}
            body = urllib.parse.urlencode({
                "from": "notices@example.com", "to": f"{name} <{email}>", "subject": f"Access from {country} ends",
                "text": text.render(ctx) + f"\nhttps://example.com/ack/{token}/", "html": html.render(ctx),
            })
            conn.request("POST", f"{url.path}/example.com/messages", body,
                         {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
            conn.getresponse().read()
    return {"seconds": time.perf_counter() - start, "calls": len(rows)}


def main() -> None:
    env = {**os.environ, "DATABASE_URL": db_url(DB), "CELERY_BROKER_URL": BROKER, "DEBUG": "true",
           "VAR_DIR": "/tmp/memo-bench-var"}
    print(f"{N:,} recipients; PostgreSQL, Redis, {WORKERS} worker processes, loopback Mailgun, {BACKEND}")
    setup(env)
    with mailgun_server() as provider:
        ours = pipeline(provider.url, env, provider)
        base = floor(provider.url)
    assert ours["messages"] >= N, f"only {ours['messages']} of {N} emails reached the provider"
    rate, floor_rate = N / ours["seconds"], N / base["seconds"]
    print(f"pipeline: {rate:10,.0f} recipients/s  {1e6 / rate:8.0f} µs/recipient  "
          f"{ours['calls'] * 1000 / N:6.0f} API calls/1,000  worker peak RSS {ours['peak_rss_mb']:.0f} MB")
    print(f"floor:    {floor_rate:10,.0f} recipients/s  {1e6 / floor_rate:8.0f} µs/recipient  "
          f"{base['calls'] * 1000 / N:6.0f} API calls/1,000")
    print(f"ratio to the floor: {rate / floor_rate:.2f}   (django-post_office: not measured)")
    print(json.dumps({
        "recipients": N, "recipients_per_s": round(rate), "floor_ratio": round(rate / floor_rate, 3),
        "post_office_ratio": None, "api_calls_per_1000": round(ours["calls"] * 1000 / N),
        "peak_rss_mb": round(ours["peak_rss_mb"], 1),
    }))


if __name__ == "__main__":
    main()
