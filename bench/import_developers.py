"""Benchmark: import_developers of N rows (env N, default 1,000,000) into PostgreSQL.

Prints rows per second and the command's peak RSS for a first import (all new) and a
second import of the same file (all unchanged), against a floor measured in the same
run: PostgreSQL's own COPY of the same file into a bare table. Not part of the tests.
Last line: one JSON object.

    make bench                       # or: N=100000 .venv/bin/python bench/import_developers.py
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (the default)
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("N", "1000000"))
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB = "memo_bench_import"
COUNTRIES = ["CN", "HK", "RU", "IR", "US", "DE", "FR", "JP", "BR", "IN", "GB", "NG", "China", "DEU", "usa"]


# As deployed: with DEBUG on, Django keeps every query a process makes (up to 9,000),
# which a worker's memory would show.
# Keys made per run: with DEBUG off the service refuses any key the repository holds.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_SSL_REDIRECT": "false",
    "EVIDENCE_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
}


def make_csv(path: Path) -> None:
    rng = random.Random(1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "external_id",
                "email",
                "name",
                "organization",
                "country",
                "language",
                "is_active",
                "last_active_at",
                "plan",
            ]
        )
        for i in range(N):
            w.writerow(
                [
                    f"acct-{i:08d}",
                    f"dev{i}@example.com",
                    f"Developer {i}",
                    f"Org {i % 5000}",
                    rng.choice(COUNTRIES),
                    rng.choice(["en", "zh-hans"]),
                    rng.choice(["true", "false"]),
                    f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
                    rng.choice(["free", "pro"]),
                ]
            )


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def recreate_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")


def run(*args: str, env: dict[str, str]) -> tuple[float, float]:
    """Run a manage.py command; (seconds, peak RSS in MB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    if status != 0:
        sys.exit(f"manage.py {' '.join(args)} failed: {out}")
    print(f"  {out.strip()}")
    return elapsed, usage.ru_maxrss / 1024


def copy_floor(path: Path) -> float:
    with psycopg.connect(db_url(DB), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE floor (external_id text, email text, name text, organization text, "
            "country text, language text, is_active text, last_active_at text, plan text)"
        )
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY floor FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            with path.open("rb") as f:
                while data := f.read(1 << 20):
                    copy.write(data)
        return time.perf_counter() - start


def main() -> None:
    env = {**os.environ, "DATABASE_URL": db_url(DB), **PRODUCTION}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "developers.csv"
        make_csv(path)
        print(f"{N:,} rows, {path.stat().st_size / 1e6:.0f} MB CSV")
        recreate_database()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        floor_s = copy_floor(path)
        print(f"floor: PostgreSQL COPY into a bare table   {N / floor_s:10,.0f} rows/s")
        first_s, first_rss = run("import_developers", str(path), env=env)
        print(f"import_developers, all new                {N / first_s:10,.0f} rows/s   peak RSS {first_rss:.0f} MB")
        second_s, second_rss = run("import_developers", str(path), env=env)
        print(f"import_developers again, all unchanged    {N / second_s:10,.0f} rows/s   peak RSS {second_rss:.0f} MB")
    floor_ratio = (N / first_s) / (N / floor_s)
    print(f"ratio to the COPY floor: {floor_ratio:.2f}")
    print(
        json.dumps(
            {
                "rows": N,
                "rows_per_s": round(N / first_s),
                "reimport_rows_per_s": round(N / second_s),
                "floor_rows_per_s": round(N / floor_s),
                "floor_ratio": round(floor_ratio, 3),
                "peak_rss_mb": round(max(first_rss, second_rss), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
