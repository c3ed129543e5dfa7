"""Benchmark: what a send's evidence costs, measured against the same send without it.

Issue 15 asks that the send figure drop by no more than 10 % for its evidence (each
email's text hash, the values it was rendered with, a handover record per provider
call, chained and signed by the sequencer). This bench runs bench/send.py's pipeline
(PostgreSQL, Redis, BENCH_WORKERS real worker processes, loopback Mailgun, the batching
backend) PAIRS times each way, alternately: with the product's workers, and with
bench/no_evidence.py's, which send the same emails without their evidence (the
baseline). Each run starts from a fresh copy of the same database (a memo approved for
N developers), so the two differ only in their workers.

Per run it prints recipients/s (timed from `send_memo` until the memo is marked
sent) and the CPU the workers, PostgreSQL and Redis spent per recipient until the
evidence was chained. Then the means of each, and their ratios: with / without. This
machine is shared and a run moves by up to 20 % from the one before, so only the means
of several pairs say anything (a pair's ratio is printed too). The last line is one
JSON object: pairs, with_per_s, without_per_s, rate_ratio, cpu_us_with,
cpu_us_without, cpu_ratio.

    N=300000 PAIRS=5 .venv/bin/python bench/evidence_cost.py     # the defaults

Not part of the tests, nor of `make bench` (it takes about three minutes a pair at
300,000); `make bench-evidence` runs it. The environment of bench/send.py applies.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import psycopg
import redis

os.environ.setdefault("N", "300000")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import send  # noqa: E402
from tests.loopback_provider import mailgun_server  # noqa: E402

PAIRS = int(os.environ.get("PAIRS", "5"))
TEMPLATE = f"{send.DB}_template"
WAYS = {"with": "memo_service", "without": "bench.no_evidence"}


def fresh_database(first: bool, env: dict[str, str]) -> None:
    """The memo and its developers as bench/send.py sets them up, copied anew each run."""
    with psycopg.connect(send.ADMIN_URL, autocommit=True) as conn:
        if first:
            send.setup(env)
            conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            conn.execute(f"CREATE DATABASE {TEMPLATE} TEMPLATE {send.DB}")
        else:
            conn.execute(f"DROP DATABASE IF EXISTS {send.DB}")
            conn.execute(f"CREATE DATABASE {send.DB} TEMPLATE {TEMPLATE}")
    with psycopg.connect(send.db_url(send.DB), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    redis.Redis.from_url(send.BROKER).flushdb()  # no task of the run before


def main() -> None:
    env = send.bench_env()
    n = send.N
    print(f"{n:,} recipients, {PAIRS} pairs; PostgreSQL, Redis, {send.WORKERS} worker processes, loopback Mailgun")
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with mailgun_server() as provider:
        provider.expand = False
        for pair in range(PAIRS):
            order = list(WAYS) if pair % 2 == 0 else list(WAYS)[::-1]
            for way in order:
                fresh_database(not any(runs.values()), env)
                provider.accepted.clear()
                run = send.pipeline(provider.url, env, provider, app=WAYS[way])
                assert len(provider.accepted) == n, f"{len(provider.accepted)} emails reached the provider, not {n}"
                runs[way].append(run)
                print(
                    f"pair {pair + 1} {way:8s} {n / run['seconds']:8,.0f} recipients/s  "
                    f"CPU {send.cpu_us(run, n):5.0f} µs/recipient (workers {run['worker_cpu_seconds'] * 1e6 / n:.0f})  "
                    f"evidence chained {run['seal_lag_seconds']:.1f} s after the last email",
                    flush=True,
                )
            print(
                f"pair {pair + 1} ratio {runs['without'][-1]['seconds'] / runs['with'][-1]['seconds']:.3f}", flush=True
            )
    rate = {way: statistics.mean(n / run["seconds"] for run in runs[way]) for way in WAYS}
    cpu = {way: statistics.mean(send.cpu_us(run, n) for run in runs[way]) for way in WAYS}
    print(
        f"with evidence {rate['with']:,.0f} recipients/s, {cpu['with']:.0f} µs CPU each; without "
        f"{rate['without']:,.0f}/s, {cpu['without']:.0f} µs: ratio {rate['with'] / rate['without']:.3f} by rate, "
        f"{cpu['without'] / cpu['with']:.3f} by CPU"
    )
    print(
        json.dumps(
            {
                "pairs": PAIRS,
                "with_per_s": round(rate["with"]),
                "without_per_s": round(rate["without"]),
                "rate_ratio": round(rate["with"] / rate["without"], 3),
                "cpu_us_with": round(cpu["with"], 1),
                "cpu_us_without": round(cpu["without"], 1),
                "cpu_ratio": round(cpu["without"] / cpu["with"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
