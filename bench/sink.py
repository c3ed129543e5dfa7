"""Benchmark: the send path against a provider that costs nothing, and a floor that
does the same durable writes.

The loopback Mailgun in bench/send.py parses every call in Python, so it limits the
product and its floor alike. Here an nginx (Debian's nginx-light, started with its own
config on a free port and stopped after) answers every Mailgun messages call at once with
Mailgun's JSON, so what is measured is our own work per recipient. In one run:

  pipeline       bench/send.py's setup and pipeline: N developers in PostgreSQL, a memo
                 approved and sent with `send_memo`, BENCH_WORKERS real Celery worker
                 processes (Redis broker) sending through the batching Mailgun backend;
  durable floor  no framework, one process per core (BENCH_FLOOR_PROCESSES), on a copy of
                 the deliveries table and an evidence table of its own, for each 1,000
                 developers: INSERT the queued rows, the guarded claim (queued → sending),
                 each email rendered and hashed, one call carrying the same body as the
                 product's (the memo's text once with Mailgun's merge fields, each
                 recipient's values in recipient-variables), the record UPDATE (status,
                 message id, send time, language, kept values, text hash) and one
                 handover evidence row per call (its lines from the UPDATE, HMAC-tagged).

Prints both rates, the CPU the workers, PostgreSQL and Redis spent per recipient, the
ratio, and a last JSON line. Not part of the tests.

    N=200000 .venv/bin/python bench/sink.py      # default N=1,000,000
    BENCH_DATABASE_URL, BENCH_BROKER_URL, BENCH_WORKERS, BENCH_FLOOR_PROCESSES as bench/send.py
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jinja2
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import send  # noqa: E402
from tests.loopback_provider import API_KEY  # noqa: E402

N = int(os.environ.get("N", "1000000"))
FLOOR_PROCESSES = int(os.environ.get("BENCH_FLOOR_PROCESSES", "2"))
BATCH = 1000  # Mailgun's recipients a call, the product's and the floor's


def nginx_binary() -> str:
    """Debian's nginx, installed first when it is missing and we may (root)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("bench/sink.py needs nginx: apt-get install nginx-light")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True, env=env, stdout=subprocess.DEVNULL)
    return "/usr/sbin/nginx"


ANSWER = '{"id": "<sink.1@example.com>", "message": "Queued. Thank you."}'
CONFIG = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_buffer_size 32m;
    client_max_body_size 64m;
    client_body_temp_path {dir}/body;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/v3/[^/]+/messages$ {{
            default_type application/json;
            return 200 '{answer}';
        }}
        location = /status {{ stub_status; }}
        location / {{ return 404; }}
    }}
}}
"""


class Sink:
    """The running nginx: its URL, and the calls it has answered (stub_status), as
    bench/send.py's pipeline asks Mailgun's loopback for `calls` and `accepted`."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def calls(self) -> int:
        status = urllib.request.urlopen(self.url.removesuffix("/v3") + "/status", timeout=5).read().decode()
        # "Active connections: 1\nserver accepts handled requests\n 5 5 9\n..."; minus this request.
        return int(status.splitlines()[2].split()[2]) - 1

    @property
    def accepted(self) -> range:
        """The recipients recorded sent (the sink keeps nothing: the database counts)."""
        with psycopg.connect(send.db_url(send.DB)) as conn:
            row = conn.execute("SELECT count(*) FROM memos_delivery WHERE status = 'sent'").fetchone()
        return range(row[0] if row else 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nginx_sink() -> Iterator[Sink]:
    directory = Path(tempfile.mkdtemp(prefix="memo-sink-"))
    os.chmod(directory, 0o755)  # nginx's workers (nobody, when run as root) read nothing here but may need to
    port = free_port()
    (directory / "nginx.conf").write_text(CONFIG.format(dir=directory, port=port, answer=ANSWER))
    process = subprocess.Popen([nginx_binary(), "-c", str(directory / "nginx.conf"), "-g", "daemon off;"])
    url = f"http://127.0.0.1:{port}/v3"
    try:
        send_wait = time.monotonic() + 10
        while True:
            try:
                if Sink(url).calls >= 0:
                    break
            except OSError:
                if time.monotonic() > send_wait or process.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {(directory / 'error.log').read_text()}") from None
                time.sleep(0.1)
        yield Sink(url)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


FLOOR_TABLES = """
DROP TABLE IF EXISTS floor_delivery, floor_evidence;
CREATE TABLE floor_delivery (LIKE memos_delivery INCLUDING ALL);
CREATE TABLE floor_evidence (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, memo_id integer NOT NULL,
    kind varchar(16) NOT NULL, payload text NOT NULL, tag varchar(64) NOT NULL,
    created_at timestamptz NOT NULL
);
"""
INSERT = """
INSERT INTO floor_delivery (memo_id, developer_id, kind, sequence, status, language, country, reason,
    provider_message_id, attempts, status_reason, created_at, text_hash)
SELECT %(memo)s, d.id, 'initial', 0, 'queued', '', d.country, 'the account is in ' || d.country, '', 0, '', now(), ''
FROM developers_developer d WHERE d.id = ANY(%(ids)s) RETURNING id, developer_id
"""
CLAIM = """
UPDATE floor_delivery SET status = 'sending', attempts = attempts + 1, status_changed_at = now()
WHERE id = ANY(%(ids)s) AND status = 'queued' RETURNING id
"""
RECORD = """
UPDATE floor_delivery d SET status = CASE WHEN d.status = 'sending' THEN 'sent' ELSE d.status END,
    provider_message_id = %(message_id)s, sent_at = coalesce(d.sent_at, now()), status_changed_at = now(),
    status_reason = '', language = v.value ->> 1, rendered_with = v.value -> 2, text_hash = v.value ->> 3
FROM jsonb_array_elements(%(texts)s::jsonb) AS v WHERE d.id = (v.value ->> 0)::bigint
RETURNING d.id, d.developer_id, d.country, d.language, d.provider_message_id, d.sent_at, d.text_hash, d.reason
"""
EVIDENCE = "INSERT INTO floor_evidence (memo_id, kind, payload, tag, created_at) VALUES (%s, 'handover', %s, %s, now())"


def durable_floor(url: str, memo_id: int) -> dict[str, float]:
    with psycopg.connect(send.db_url(send.DB), autocommit=True) as conn:
        conn.execute(FLOOR_TABLES)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    start = time.perf_counter()
    shares = [
        ctx.Process(target=floor_share, args=(url, memo_id, n, FLOOR_PROCESSES, done)) for n in range(FLOOR_PROCESSES)
    ]
    for process in shares:
        process.start()
    results = [done.get() for _ in shares]
    seconds = time.perf_counter() - start
    for process in shares:
        process.join()
    return {"seconds": seconds, "calls": sum(r["calls"] for r in results), "messages": sum(r["sent"] for r in results)}


def floor_share(url: str, memo_id: int, share: int, shares: int, done: Any) -> None:
    """One floor process: the developers whose id leaves `share` modulo `shares`."""
    # The memo's text with Mailgun's merge fields where the values go, once; each email
    # also rendered whole to hash it, as the product hashes what it sent.
    names = {"name": "%recipient.v0%", "country_name": "%recipient.v1%"}
    html_t = jinja2.Environment(autoescape=True).from_string(send.HTML)
    text_t = jinja2.Environment().from_string(send.TEXT)
    memo = {"effective_date": "2027-07-09"}
    skeleton_html = html_t.render(developer=names, memo=memo)
    skeleton_text = text_t.render(developer=names, memo=memo) + "\n%recipient.v2%"
    target = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname, target.port)
    auth = "Basic " + __import__("base64").b64encode(f"api:{API_KEY}".encode()).decode()
    key = b"floor-secret"
    calls = sent = 0
    with psycopg.connect(send.db_url(send.DB), autocommit=True) as db:
        developers = psycopg.connect(send.db_url(send.DB))
        cursor = developers.cursor(name="developers")  # server-side: memory stays flat
        cursor.itersize = BATCH
        cursor.execute(
            "SELECT id, email, name, country FROM developers_developer WHERE id %% %s = %s ORDER BY id", [shares, share]
        )
        while rows := cursor.fetchmany(BATCH):
            by_id = {row[0]: row for row in rows}
            with db.transaction():
                inserted = db.execute(INSERT, {"memo": memo_id, "ids": list(by_id)}).fetchall()
            with db.transaction():
                claimed = [r[0] for r in db.execute(CLAIM, {"ids": [r[0] for r in inserted]}).fetchall()]
            developer_of = dict(inserted)
            variables, to, texts = {}, [], []
            for delivery_id in claimed:
                dev_id, email, name, country = by_id[developer_of[delivery_id]]
                token = hmac.new(key, f"{memo_id}:{dev_id}".encode(), hashlib.sha256).hexdigest()
                link = f"https://example.com/ack/{token}/"
                ctx = {"developer": {"name": name, "country_name": country}, "memo": memo}
                subject = f"Access from {country} ends"
                text_hash = hashlib.sha256(
                    "\0".join((subject, text_t.render(ctx) + "\n" + link, html_t.render(ctx))).encode()
                ).hexdigest()
                variables[email] = {"v0": name, "v1": country, "v2": link, "subject": subject}
                to.append(f"{name} <{email}>")
                texts.append([delivery_id, "en", [name, country], text_hash])
            body = urllib.parse.urlencode(
                {
                    "from": "notices@example.com",
                    "to": to,
                    "subject": "%recipient.subject%",
                    "text": skeleton_text,
                    "html": skeleton_html,
                    "recipient-variables": json.dumps(variables),
                    "o:tag": f"memo-{memo_id}",
                },
                doseq=True,
            )
            conn.request(
                "POST",
                f"{target.path}/example.com/messages",
                body,
                {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"},
            )
            message_id = json.loads(conn.getresponse().read())["id"]
            with db.transaction():
                lines = db.execute(RECORD, {"message_id": message_id, "texts": json.dumps(texts)}).fetchall()
                payload = json.dumps([[str(v) for v in line] for line in lines], separators=(",", ":"))
                tag = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
                db.execute(EVIDENCE, [memo_id, payload, tag])
            calls += 1
            sent += len(claimed)
        developers.close()
    done.put({"calls": calls, "sent": sent})


def main() -> None:
    send.N = N  # bench/send.py's setup imports this many developers
    env = send.bench_env()
    print(
        f"{N:,} recipients; PostgreSQL, Redis, {send.WORKERS} worker processes, an nginx sink, {send.BACKEND or send.bench_provider('mailgun').backend}"
    )
    send.setup(env)
    with nginx_sink() as sink:
        ours = send.pipeline(sink.url, env, sink)
        with psycopg.connect(send.db_url(send.DB)) as conn:
            memo_id, sent = conn.execute(
                "SELECT memo_id, count(*) FROM memos_delivery WHERE status = 'sent' GROUP BY memo_id"
            ).fetchone() or (0, 0)
        assert sent == N, f"{sent} deliveries recorded sent, not {N}"
        base = durable_floor(sink.url, memo_id)
        assert base["messages"] == N, f"the floor sent {base['messages']}, not {N}"
    rate, floor_rate = N / ours["seconds"], N / base["seconds"]
    cpu = send.cpu_us(ours, N)
    print(
        f"pipeline:      {rate:10,.0f} recipients/s  {ours['seconds']:7.1f} s  {ours['calls'] * 1000 / N:.0f} calls/1,000  "
        f"worker peak RSS {ours['peak_rss_mb']:.0f} MB  (send_memo returned after {ours['dispatch_seconds']:.1f} s)"
    )
    print(
        f"durable floor: {floor_rate:10,.0f} recipients/s  {base['seconds']:7.1f} s  {base['calls'] * 1000 / N:.0f} calls/1,000"
    )
    print(
        f"pipeline CPU: workers {ours['worker_cpu_seconds'] * 1e6 / N:.0f} µs/recipient, PostgreSQL and Redis "
        f"{ours['services_cpu_seconds'] * 1e6 / N:.0f}"
    )
    print(f"ratio to the durable floor: {rate / floor_rate:.2f}")
    print(
        json.dumps(
            {
                "bench": "sink",
                "recipients": N,
                "recipients_per_s": round(rate),
                "floor_recipients_per_s": round(floor_rate),
                "floor_ratio": round(rate / floor_rate, 3),
                "cpu_us_per_recipient": round(cpu),
                "api_calls_per_1000": round(ours["calls"] * 1000 / N, 1),
                "peak_rss_mb": round(ours["peak_rss_mb"], 1),
                "dispatch_s": round(ours["dispatch_seconds"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
