"""Benchmark: observed traffic in, and the audience it chooses, on PostgreSQL.

1. Ingest: N raw access-log lines (`external_id,timestamp,ip`, env N, default 10,000,000)
   for DEVELOPERS accounts (default 1,000,000) through `manage.py import_traffic`, against
   a floor in the same run with no framework: psycopg and iptocc read the same file,
   resolve the same addresses with the same database, sum each chunk, COPY the sums into
   a temporary table and write the rollups with one INSERT … SELECT … GROUP BY, as the
   product must to replace a day's counts. Prints lines/s of each, the ratio and the
   command's peak RSS.
2. Audience: DEVELOPERS accounts with ROLLUP_DAYS (default 30) days of rollups each
   (1,000,000 × 30 = 30,000,000 rows), a memo for traffic from CN, HK, MO, RU or IR in
   the last 30 days: the live count (`audience_counts`, what the admin's page asks) and the
   snapshot at approval (`audience_snapshot`, each developer with the reason that put them
   in), against the same SQL written by hand.

Not part of the tests. Last line: one JSON object. `AUDIENCE_ONLY=1` runs the audience part
again on the database an earlier run left.

    make bench        # or: N=1000000 DEVELOPERS=100000 .venv/bin/python bench/traffic.py
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (the default)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import iptocc
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_developers import PRODUCTION, ROOT, db_url  # noqa: E402

N = int(os.environ.get("N", "10000000"))
DEVELOPERS = int(os.environ.get("DEVELOPERS", "1000000"))
ROLLUP_DAYS = int(os.environ.get("ROLLUP_DAYS", "30"))
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB = "memo_bench_traffic"
TRAFFIC = "developers_trafficobservation"
TODAY = dt.datetime.now(dt.UTC).date()
CHUNK = 20_000  # as the product's CHUNK_LINES
# Only the audience part, again, on the database an earlier run left (its 30,000,000 rollups
# take minutes to write): AUDIENCE_ONLY=1.
AUDIENCE_ONLY = os.environ.get("AUDIENCE_ONLY") == "1"
WATCHED = ["CN", "HK", "MO", "RU", "IR"]


def recreate_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")


def make_developers(conn: psycopg.Connection) -> None:
    rng = random.Random(2)
    now = dt.datetime.now(dt.UTC)
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY developers_developer (external_id, email, name, organization, org_contact_email, country, "
            "language, is_active, attributes, email_status, created_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(DEVELOPERS):
            country = rng.choice(["US", "DE", "CN", "RU", "JP", "BR", "IN", "GB"])
            copy.write_row((f"acct-{i:08d}", f"dev{i}@example.com", "", "", "", country, "en", True, "{}", "ok", now))
    conn.execute("ANALYZE developers_developer")


def address_pool(rng: random.Random) -> list[str]:
    """Public addresses iptocc places, about a tenth of them in the watched countries."""
    found: list[str] = []
    while len(found) < 20_000:
        batch = [
            f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            for _ in range(20_000)
        ]
        found += [ip for ip, cc in zip(batch, iptocc.country_code(batch), strict=True) if cc]
    return found[:20_000]


def make_feed(path: Path) -> None:
    """N lines, in time order as a log is, each account using one of a few addresses."""
    rng = random.Random(1)
    pool = address_pool(rng)
    start = dt.datetime.combine(TODAY - dt.timedelta(days=ROLLUP_DAYS), dt.time(), dt.UTC).timestamp()
    step = ROLLUP_DAYS * 86_400 / N
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "timestamp", "ip"])
        for i in range(N):
            dev = rng.randrange(DEVELOPERS)
            ip = pool[(dev * 7 + rng.randrange(3)) % len(pool)]
            w.writerow([f"acct-{dev:08d}", int(start + i * step), ip])


def floor_ingest(path: Path) -> float:
    """The same job by the shortest honest path; seconds."""
    start = time.perf_counter()
    with psycopg.connect(db_url(DB)) as conn:
        ids = dict(conn.execute("SELECT external_id, id FROM developers_developer").fetchall())
        conn.execute(
            "CREATE TEMPORARY TABLE staging (developer_id bigint, country varchar(2), day date, requests bigint)"
        )
        with path.open(newline="") as f:
            reader = csv.reader(f)
            next(reader)
            while rows := [row for _, row in zip(range(CHUNK), reader, strict=False)]:
                codes = iptocc.country_code([row[2] for row in rows])
                sums: dict[tuple[int, str, dt.date], int] = {}
                for (external_id, stamp, _), code in zip(rows, codes, strict=True):
                    key = (ids[external_id], code, dt.datetime.fromtimestamp(int(stamp), dt.UTC).date())
                    sums[key] = sums.get(key, 0) + 1
                with conn.cursor().copy("COPY staging FROM STDIN") as copy:
                    for (dev, code, day), n in sums.items():
                        copy.write_row((dev, code, day, n))
        conn.execute(
            f"INSERT INTO {TRAFFIC} (developer_id, country, day, source, requests, geo_database) "
            "SELECT developer_id, country, day, 'floor', SUM(requests), 'iptocc' FROM staging "
            "GROUP BY developer_id, country, day"
        )
        conn.commit()
    return time.perf_counter() - start


def run(*args: str, env: dict[str, str]) -> tuple[float, float, str]:
    """A manage.py command's (seconds, peak RSS in MB, output)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text = out.read().decode()
        if status != 0:
            sys.exit(f"manage.py {args[0]} failed: {text} {err.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, text.strip()


def make_rollups(conn: psycopg.Connection) -> None:
    """ROLLUP_DAYS rows per developer, written by the database (the ingest's path is
    measured above): a tenth of the developers with traffic from the watched countries,
    on a third of the days."""
    conn.execute(f"TRUNCATE {TRAFFIC}")
    conn.execute(
        f"INSERT INTO {TRAFFIC} (developer_id, country, day, source, requests, geo_database) "
        "SELECT d.id, CASE WHEN d.id %% 10 = 0 AND g %% 3 = 0 THEN (%(watched)s::text[])[1 + (d.id + g) %% 5] "
        "ELSE (ARRAY['US','DE','JP','BR','GB'])[1 + (d.id + g) %% 5] END, "
        "%(today)s::date - g, 'bench', 1 + (d.id * g) %% 500, 'iptocc' "
        "FROM developers_developer d CROSS JOIN generate_series(0, %(days)s - 1) g",
        {"watched": WATCHED, "today": TODAY, "days": ROLLUP_DAYS},
    )
    conn.commit()
    conn.autocommit = True  # VACUUM runs outside a transaction
    conn.execute(f"VACUUM ANALYZE {TRAFFIC}")
    conn.autocommit = False


HAND_COUNT = f"""
SELECT country, count(*) FROM developers_developer d
WHERE d.is_active AND d.erased_at IS NULL AND d.id IN (
  SELECT developer_id FROM {TRAFFIC} WHERE country = ANY(%(watched)s) AND day BETWEEN %(first)s AND %(last)s
  GROUP BY developer_id HAVING SUM(requests) >= 1)
GROUP BY country
"""
HAND_SNAPSHOT = f"""
INSERT INTO memos_audiencesnapshot (memo_id, developer_id, country, reason, traffic)
SELECT %(memo)s, d.id, d.country, left(string_agg(
         format('traffic from %%s on %%s days between %%s and %%s, %%s requests (%%s)',
                t.country, t.days, t.first, t.last, t.requests, t.geo), '; '), 300),
       jsonb_agg(jsonb_build_array(t.country, t.days, t.first, t.last, t.requests, t.geo))
FROM developers_developer d JOIN (
  SELECT developer_id, country, count(DISTINCT day) days, min(day) first, max(day) last,
         sum(requests) requests, max(geo_database) geo
  FROM {TRAFFIC} WHERE country = ANY(%(watched)s) AND day BETWEEN %(first)s AND %(last)s
  GROUP BY developer_id, country) t ON t.developer_id = d.id
WHERE d.is_active AND d.erased_at IS NULL
GROUP BY d.id, d.country
"""

AUDIENCE = """
import time, json
from memo_service.memos.models import Memo, AudienceSnapshot
from memo_service.memos.audience import audience_counts
from memo_service.memos.approval import audience_snapshot
memo = Memo.objects.create(title="b", slug="b", subject="s", html_body="h", text_body="t",
    audience_basis="traffic", traffic_countries=%(watched)r, traffic_days=30)
start = time.perf_counter(); total, rows = audience_counts(memo); count_s = time.perf_counter() - start
start = time.perf_counter(); audience_snapshot(memo); snapshot_s = time.perf_counter() - start
print(json.dumps({"memo": memo.pk, "total": total, "count_s": count_s, "snapshot_s": snapshot_s,
    "snapshot_rows": AudienceSnapshot.objects.filter(memo=memo).count()}))
"""


def audience(env: dict[str, str]) -> dict[str, float]:
    with psycopg.connect(db_url(DB)) as conn:
        if not AUDIENCE_ONLY:
            make_rollups(conn)
        conn.execute("DELETE FROM memos_audiencesnapshot")
        conn.execute("DELETE FROM memos_memo_traffic_regions")
        conn.execute("DELETE FROM memos_memo")
        conn.commit()
        rows = conn.execute(f"SELECT count(*) FROM {TRAFFIC}").fetchone()[0]
    print(f"audience: {rows:,} rollups of {DEVELOPERS:,} developers")
    _, _, out = run("shell", "-c", AUDIENCE % {"watched": WATCHED}, env=env)
    product = json.loads(out.splitlines()[-1])
    first, last = TODAY - dt.timedelta(days=29), TODAY
    params = {"watched": WATCHED, "first": first, "last": last, "memo": product["memo"]}
    with psycopg.connect(db_url(DB)) as conn:
        start = time.perf_counter()
        hand_total = sum(n for _, n in conn.execute(HAND_COUNT, params).fetchall())
        hand_count_s = time.perf_counter() - start
        conn.execute("DELETE FROM memos_audiencesnapshot")
        start = time.perf_counter()
        conn.execute(HAND_SNAPSHOT, params)
        conn.commit()
        hand_snapshot_s = time.perf_counter() - start
    assert hand_total == product["total"], (hand_total, product["total"])
    print(
        f"  live count of the rule: product {product['count_s']:.2f} s, by hand {hand_count_s:.2f} s "
        f"({product['count_s'] / hand_count_s:.2f}×), {product['total']:,} developers"
    )
    print(
        f"  snapshot at approval:   product {product['snapshot_s']:.2f} s, by hand {hand_snapshot_s:.2f} s "
        f"({product['snapshot_s'] / hand_snapshot_s:.2f}×)"
    )
    return {
        "audience_developers": product["total"],
        "rollup_rows": rows,
        "count_s": round(product["count_s"], 3),
        "count_vs_hand": round(product["count_s"] / hand_count_s, 2),
        "snapshot_s": round(product["snapshot_s"], 3),
        "snapshot_vs_hand": round(product["snapshot_s"] / hand_snapshot_s, 2),
    }


def main() -> None:
    env = {**os.environ, "DATABASE_URL": db_url(DB), **PRODUCTION}
    if AUDIENCE_ONLY:  # the database of an earlier run, its rollups as they are
        print(json.dumps(audience(env)))
        return
    recreate_database()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    with psycopg.connect(db_url(DB)) as conn:
        make_developers(conn)
        conn.commit()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "access.csv"
        make_feed(path)
        print(f"ingest: {N:,} lines for {DEVELOPERS:,} developers, {path.stat().st_size / 1e6:.0f} MB")
        floor_s = floor_ingest(path)
        print(f"  floor (psycopg, iptocc, COPY, no framework)  {N / floor_s:10,.0f} lines/s")
        product_s, rss, out = run("import_traffic", str(path), "--source", "bench", env=env)
        print(f"  import_traffic                               {N / product_s:10,.0f} lines/s   peak RSS {rss:.0f} MB")
        print(f"  {out}")
    ratio = floor_s / product_s
    print(f"  ratio to the floor: {ratio:.2f}")
    result = {
        "lines": N,
        "developers": DEVELOPERS,
        "lines_per_s": round(N / product_s),
        "floor_lines_per_s": round(N / floor_s),
        "floor_ratio": round(ratio, 3),
        "peak_rss_mb": round(rss, 1),
        **audience(env),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
