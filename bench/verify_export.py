"""Benchmark: `verify_evidence --file` on a million-recipient memo's export, against a
floor and against reading the whole export first.

An export of N recipients (env N, default 1,000,000) in the format `export_evidence
--format json` writes: each recipient's record, and a chain of about 2N records (a
handover record for each provider call of 1,000 emails, then each email's `delivered`
event and the status change it made) sealed by a signed checkpoint every 1,000 emails or
other records, as the sequencer seals them. Timed, each in a process of
its own, with its peak RSS:

  verify_evidence  `manage.py verify_evidence --file EXPORT.json` (DEBUG off, no database);
  whole            the way it read an export before: `json.load` of the whole file, then
                   the same checks over the list (checkpoints.chain_problem);
  floor            no framework: the file read line by line (the export writes one chain
                   record a line), `json.loads` of each chain line, the same SHA-256 over
                   the same canonical JSON and the same Ed25519 signature checks.

Prints seconds, records/s and peak RSS of each and the ratios; the last line is one JSON
object. Not part of the tests.

    N=100000 .venv/bin/python bench/verify_export.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.import_developers import PRODUCTION  # noqa: E402
from memo_service.memos.evidence import checkpoints  # noqa: E402  (no Django: pure functions)

N = int(os.environ.get("N", "1000000"))
SEAL_EVERY = 1000
CALL = 1000  # emails per provider call: one handover record each

WHOLE = """
import json, sys
from memo_service.memos.evidence import checkpoints
document = json.load(open(sys.argv[1]))
keys = checkpoints.keyring(document["public_keys"])
problem, count = checkpoints.chain_problem(keys, document["chain"], document["checkpoints"])
assert not problem, problem
print(count)
"""

FLOOR = """
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
fields = ("memo", "seq", "head", "count", "prev", "at")
head = None
prev, count, heads = "0" * 64, 0, {}
with open(sys.argv[1]) as f:
    for line in f:
        if head is None:  # the first line: the memo, its checkpoints and keys
            head = json.loads(line[: line.index(', "recipients": [')] + "}")
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(head["public_keys"][0]))
            body_prev = "0" * 64
            for c in head["checkpoints"]:
                body = json.dumps({k: c[k] for k in fields}, sort_keys=True, separators=(",", ":")).encode()
                key.verify(base64.b64decode(c["signature"]), body)
                assert c["prev"] == body_prev
                body_prev = hashlib.sha256(body).hexdigest()
                heads[c["seq"]] = c["head"]
            continue
        if not line.startswith('{"seq"'):
            continue
        r = json.loads(line.rstrip().rstrip(","))
        count += 1
        assert r["seq"] == count and r["prev_hash"] == prev
        body = json.dumps({"kind": r["kind"], "object_id": r["object_id"], "payload": r["payload"]},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = hashlib.sha256(f"{prev}\\n{body}".encode()).hexdigest()
        assert prev == r["hash"] and heads.get(count, prev) == prev
assert count == max(heads)
print(count)
"""


def write_export(path: Path) -> int:
    """An export as export_evidence writes it (the same members in the same order)."""
    private = checkpoints.new_private_key()
    public = checkpoints.public_key_b64(private)
    signed: list[dict[str, object]] = []
    prev, prev_body = checkpoints.GENESIS, checkpoints.GENESIS
    at = "2027-07-09T10:00:00+00:00"
    with tempfile.TemporaryFile("w+") as chain_file:
        seq, weight = 0, 0

        def append(kind: str, object_id: int, payload: dict[str, object], size: int) -> None:
            nonlocal seq, weight, prev, prev_body
            seq, weight = seq + 1, weight + size
            digest = checkpoints.record_hash(prev, kind, object_id, payload)
            record = {"seq": seq, "kind": kind, "object_id": object_id, "payload": payload}
            chain_file.write(json.dumps({**record, "prev_hash": prev, "hash": digest}) + "\n")
            prev = digest
            if weight >= SEAL_EVERY:  # the sequencer's step: about a thousand emails or other records
                checkpoint = {"memo": 1, "seq": seq, "head": digest, "count": seq, "prev": prev_body, "at": at}
                checkpoint.update(signature=checkpoints.sign(private, checkpoint), key_id=checkpoints.key_id(public))
                signed.append(checkpoint)
                prev_body, weight = checkpoints.body_hash(checkpoint), 0

        for first in range(1, N + 1, CALL):
            call = range(first, min(first + CALL, N + 1))
            # As chain.handover_payload writes it: the fields, then a line per email.
            lines = [json.dumps([d, d, "CN", "en", f"<{first}@mg.example.com>", at, "a" * 64]) for d in call]
            fields = ["delivery", "developer", "country", "language", "message_id", "sent_at", "text_hash"]
            append("handover", first, {"fields": fields, "lines": "\n".join(lines)}, len(lines))
            for d in call:
                append("event", d, {"delivery": d, "event_type": "delivered", "event_id": f"ev-{d}", "at": at}, 1)
                append("status", d, {"delivery": d, "status": "delivered"}, 1)
        if weight:
            append("status", N, {"delivery": N, "status": "delivered"}, SEAL_EVERY)  # the last step's checkpoint
        head = {"memo": "bench", "title": "Bench", "checkpoints": signed, "public_key": public, "public_keys": [public]}
        chain_file.seek(0)
        with path.open("w") as f:
            f.write(json.dumps(head)[:-1] + ', "recipients": [\n')
            for delivery in range(1, N + 1):
                recipient = {
                    "developer": f"b-{delivery:08d}",
                    "email": f"dev{delivery}@example.com",
                    "country_at_send": "CN",
                    "reason": "CN is in Unsupported regions",
                    "deliveries": [{"kind": "initial", "sequence": 0, "status": "delivered", "sent_at": at}],
                    "answers": [],
                }
                f.write(("" if delivery == 1 else ",\n") + json.dumps(recipient))
            f.write('\n], "chain": [\n')
            for n, line in enumerate(chain_file):
                f.write(("" if n == 0 else ",\n") + line.rstrip("\n"))
            f.write("\n]}\n")
    return seq


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    if status != 0:
        sys.exit(f"{' '.join(args[:3])} failed: {out}")
    return elapsed, usage.ru_maxrss / 1024, out.strip()


def main() -> None:
    env = {**os.environ, **PRODUCTION, "VAR_DIR": "/tmp/memo-bench-var"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evidence.json"
        records = write_export(path)
        size_mb = path.stat().st_size / 1e6
        print(f"{N:,} recipients, {records:,} chain records, {size_mb:,.0f} MB export")
        results = {}
        for name, args in [
            ("verify_evidence", [sys.executable, "manage.py", "verify_evidence", "--file", str(path)]),
            ("whole", [sys.executable, "-c", WHOLE, str(path)]),
            ("floor", [sys.executable, "-c", FLOOR, str(path)]),
        ]:
            seconds, rss, out = run(args, env)
            results[name] = (seconds, rss)
            print(f"{name:16} {seconds:7.1f} s  {records / seconds:10,.0f} records/s  peak RSS {rss:7,.0f} MB")
            if name == "verify_evidence":
                print(f"  {out}")
    ours, whole, floor = results["verify_evidence"], results["whole"], results["floor"]
    print(
        f"ratio to the floor (speed): {floor[0] / ours[0]:.2f}   to reading it whole: {whole[0] / ours[0]:.2f}   "
        f"peak RSS against reading it whole: {ours[1] / whole[1]:.3f}"
    )
    print(
        json.dumps(
            {
                "recipients": N,
                "records": records,
                "export_mb": round(size_mb),
                "seconds": round(ours[0], 1),
                "records_per_s": round(records / ours[0]),
                "peak_rss_mb": round(ours[1]),
                "floor_ratio": round(floor[0] / ours[0], 3),
                "whole_seconds": round(whole[0], 1),
                "whole_peak_rss_mb": round(whole[1]),
            }
        )
    )


if __name__ == "__main__":
    main()
