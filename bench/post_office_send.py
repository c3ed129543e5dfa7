"""Benchmark: the bench memo sent with django-post_office, for comparison with the pipeline.

What a django-post_office user would write to send the same memo to the same
recipients through the same provider (settings: bench/post_office_settings.py):

  queue    one process reads the first n developers (ORM, ORDER BY id), renders the
           memo's subject, HTML and text for each with Jinja2 (the HTML and TEXT of
           bench/send.py), adds a signed acknowledgement link (django.core.signing,
           HMAC-SHA256, as the service signs its own) and queues the emails with
           post_office.mail.send_many(), 1,000 per call (one bulk INSERT each);
  deliver  post_office's own `send_queued_mail --processes 2` (2 cores, as the
           pipeline's 2 workers) hands them to anymail's Mailgun backend, one API call
           per email, until the queue is empty.

Each phase runs in its own subprocess and times itself after Django has started; the
figure is the sum of the two (so interpreter and Django start-up are not counted,
which favours post_office slightly). Peak RSS is the highest VmHWM of the processes
involved: the queueing process, send_queued_mail and the workers it forks. Needs
`pip install -r requirements-bench.txt`.

    post_office_run(database_url, provider_url, provider, n)   # from bench/send.py
    N=2000 .venv/bin/python bench/post_office_send.py          # standalone, own DB memo_bench_po
    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)
"""

from __future__ import annotations

import base64
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.loopback_provider import API_KEY, mailgun_server  # noqa: E402

SETTINGS = "bench.post_office_settings"
PROCESSES = 2  # send_queued_mail --processes: one per core, as the pipeline's 2 workers
QUEUE_CHUNK = 1000  # emails per mail.send_many() call
SUBJECT = "Access from {{ developer.country_name }} ends"  # the bench memo's subject
EFFECTIVE_DATE = "2027-07-09"
ACK_SALT = "memo_service.memos.ack"  # the service's ack-token salt, so links would verify


# Made per run: with DEBUG off the service refuses any key the repository holds.
BENCH_SECRET_KEY = secrets.token_urlsafe(50)
BENCH_EVIDENCE_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _env(database_url: str, provider_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": database_url,
        "ANYMAIL_MAILGUN_API_KEY": API_KEY,
        "ANYMAIL_MAILGUN_API_URL": provider_url,
        "DEBUG": os.environ.get("DEBUG", "false"),
        "SECRET_KEY": BENCH_SECRET_KEY,
        "EVIDENCE_SIGNING_KEY": BENCH_EVIDENCE_KEY,
        "VAR_DIR": os.environ.get("VAR_DIR", "/tmp/memo-bench-po-var"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done.stdout


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def post_office_run(database_url: str, provider_url: str, provider: object, n: int) -> dict:
    """Send the bench memo to the first n developers (ORDER BY id) of database_url with
    django-post_office, through the loopback Mailgun at provider_url (`provider` is the
    tests.loopback_provider.Provider serving it). Migrates post_office's tables into
    that database and empties them first. Returns seconds (queueing + delivery),
    calls (provider API requests made), messages (messages the provider accepted),
    peak_rss_mb (highest of the processes involved) and recipients (n), plus
    queue_seconds, deliver_seconds and wall_seconds (with process start-ups), and the
    peak RSS of each: queue_rss_mb, deliver_rss_mb (send_queued_mail), worker_rss_mb
    (the largest of the workers it forked)."""
    env = _env(database_url, provider_url)
    _run(["manage.py", "migrate", "post_office", "-v0"], env)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE post_office_email CASCADE")  # its logs and attachment links too
        available = conn.execute("SELECT count(*) FROM developers_developer").fetchone()[0]
    assert available >= n, f"only {available} developers in the database, {n} asked for"
    # Our own lock file: post_office's default (/tmp/post_office.lock) is shared by every
    # send_queued_mail on the machine, and a held lock makes it exit at once, sending nothing.
    lockfile = os.path.join(tempfile.gettempdir(), f"memo-bench-post-office-{os.getpid()}")
    requests_before = provider.requests  # type: ignore[attr-defined]
    accepted_before = len(provider.accepted)  # type: ignore[attr-defined]
    wall = time.perf_counter()
    queued = _last_json(_run([__file__, "queue", str(n)], env))
    delivered = _last_json(_run([__file__, "deliver", lockfile], env))
    wall = time.perf_counter() - wall
    messages = len(provider.accepted) - accepted_before  # type: ignore[attr-defined]
    assert queued["queued"] == n, f"queued {queued['queued']} of {n}"
    assert delivered["status"] == {"sent": n}, f"post_office email statuses: {delivered['status']} (expected {n} sent)"
    assert messages == n, f"only {messages} of {n} post_office emails reached the provider"
    return {
        "seconds": queued["seconds"] + delivered["seconds"],
        "calls": provider.requests - requests_before,  # type: ignore[attr-defined]
        "messages": messages,
        "peak_rss_mb": max(queued["rss_mb"], delivered["rss_mb"], delivered["children_rss_mb"]),
        "recipients": n,
        "queue_seconds": queued["seconds"],
        "deliver_seconds": delivered["seconds"],
        "wall_seconds": wall,
        "queue_rss_mb": queued["rss_mb"],
        "deliver_rss_mb": delivered["rss_mb"],
        "worker_rss_mb": delivered["children_rss_mb"],
    }


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _queue(n: int) -> None:
    """Subprocess: read, render, sign, queue. Prints one JSON line."""
    import django

    django.setup()
    import jinja2
    from django.conf import settings
    from django.core import signing
    from django.urls import reverse
    from django.utils import translation
    from django_countries import countries
    from post_office import mail

    from memo_service.developers.models import Developer
    from memo_service.memos.models import Memo

    sys.path.insert(0, str(BENCH))
    from send import HTML, TEXT  # the bench memo's bodies

    start = time.perf_counter()
    html_env, text_env = jinja2.Environment(autoescape=True), jinja2.Environment()
    subject_t, html_t, text_t = text_env.from_string(SUBJECT), html_env.from_string(HTML), text_env.from_string(TEXT)
    memo_id = Memo.objects.filter(slug="bench").values_list("id", flat=True).first() or 1
    signer = signing.TimestampSigner(salt=ACK_SALT)
    country_names: dict[tuple[str, str], str] = {}
    queued, batch = 0, []
    developers = Developer.objects.order_by("id").values_list("id", "email", "name", "country", "language")[:n]
    for dev_id, email, name, country, language in developers.iterator(chunk_size=2000):
        if (country, language) not in country_names:
            with translation.override(language):
                country_names[country, language] = str(countries.name(country))
        ack = settings.SITE_URL + reverse("ack", args=[signer.sign_object([memo_id, dev_id])])
        ctx = {
            "developer": {
                "name": name,
                "email": email,
                "country": country,
                "country_name": country_names[country, language],
                "language": language,
            },
            "memo": {"title": "Bench", "effective_date": EFFECTIVE_DATE},
            "ack_url": ack,
        }
        batch.append(
            {
                "recipients": [f"{name} <{email}>"],
                "subject": " ".join(subject_t.render(ctx).split()),
                "message": text_t.render(ctx) + f"\n\nAcknowledge: {ack}\n",
                "html_message": html_t.render(ctx) + f'<p><a href="{ack}">Acknowledge</a></p>',
            }
        )
        if len(batch) == QUEUE_CHUNK:
            queued += len(mail.send_many(batch))
            batch = []
    if batch:
        queued += len(mail.send_many(batch))
    seconds = time.perf_counter() - start
    print(json.dumps({"queued": queued, "seconds": seconds, "rss_mb": _rss_mb(resource.RUSAGE_SELF)}))


def _deliver(lockfile: str) -> None:
    """Subprocess: post_office's send_queued_mail until the queue is empty. Prints one JSON line."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Count
    from post_office.models import STATUS, Email

    start = time.perf_counter()
    call_command("send_queued_mail", processes=PROCESSES, lockfile=lockfile)
    seconds = time.perf_counter() - start
    names = dict(enumerate(STATUS._fields))  # 0 sent, 1 failed, 2 queued, 3 requeued
    status = {names[row["status"]]: row["n"] for row in Email.objects.values("status").annotate(n=Count("id"))}
    print(
        json.dumps(
            {
                "seconds": seconds,
                "status": status,
                "rss_mb": _rss_mb(resource.RUSAGE_SELF),
                # the pool workers are reaped when the pool closes, so they count here
                "children_rss_mb": _rss_mb(resource.RUSAGE_CHILDREN),
            }
        )
    )


# --- standalone ----------------------------------------------------------------------

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB = "memo_bench_po"


def _db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _setup(n: int) -> None:
    """A fresh memo_bench_po with n developers, as bench/send.py seeds its own."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    env = _env(_db_url(DB), "http://127.0.0.1:9/v3")
    _run(["manage.py", "migrate", "-v0"], env)
    csv_path = Path(tempfile.gettempdir()) / "memo-bench-po.csv"
    with csv_path.open("w") as f:
        f.write("external_id,email,name,country,language\n")
        for i in range(n):
            f.write(f"b-{i:08d},dev{i}@example.com,Developer {i},CN,en\n")
    _run(["manage.py", "import_developers", str(csv_path)], env)


def main() -> None:
    n = int(os.environ.get("N", "2000"))
    print(
        f"{n:,} recipients; PostgreSQL, django-post_office send_many + send_queued_mail "
        f"--processes {PROCESSES}, loopback Mailgun, anymail.backends.mailgun.EmailBackend"
    )
    _setup(n)
    with mailgun_server() as provider:
        result = post_office_run(_db_url(DB), provider.url, provider, n)
    rate = n / result["seconds"]
    print(
        f"post_office: {rate:10,.0f} recipients/s  {1e6 / rate:8.0f} µs/recipient  "
        f"{result['calls'] * 1000 / n:6.0f} API calls/1,000  peak RSS {result['peak_rss_mb']:.0f} MB  "
        f"(queue {result['queue_seconds']:.2f} s + deliver {result['deliver_seconds']:.2f} s; "
        f"{result['wall_seconds']:.2f} s with start-ups)"
    )
    print(
        f"peak RSS: queueing {result['queue_rss_mb']:.0f} MB, send_queued_mail {result['deliver_rss_mb']:.0f} MB, "
        f"its workers {result['worker_rss_mb']:.0f} MB"
    )
    print(json.dumps({**result, "recipients_per_s": round(rate)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["queue"]:
        _queue(int(sys.argv[2]))
    elif sys.argv[1:2] == ["deliver"]:
        _deliver(sys.argv[2])
    else:
        main()
