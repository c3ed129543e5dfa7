"""Checkpoint heads published outside the database (Certificate Transparency's signed
tree heads, CloudTrail's digest files), and checking a chain against them.

As each checkpoint is signed, it is appended as one JSON line to EVIDENCE_HEADS_PATH and
sent as a signed `evidence.checkpoint` message to the outbound webhook endpoints that ask
for it, so the platform keeps its own copy. Whoever rewrites the database cannot take a
head back: a chain must contain every head published for its memo and reach the newest
one, or it was cut short, re-sealed or erased.

This module knows nothing of Django: an export is checked with it alone; the sequencer
publishes (sequencer.heads_publish).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from memo_service.memos.evidence import checkpoints

EVENT = "evidence.checkpoint"  # the outbound webhook event that carries each head


def append_line(path: Path, line: str) -> None:
    """One write to a file opened for appending (created readable by its owner only):
    the lines of processes writing at once never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def heads_read(path: Path, memo_id: int | None = None) -> list[dict[str, Any]]:
    """The heads in a heads file (of one memo, given its id), in the order they were
    published. Raises ValueError naming the line that is not a head."""
    found = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                head = json.loads(line)
                if not isinstance(head, dict) or not isinstance(head["memo"], int) or not isinstance(head["seq"], int):
                    raise ValueError("not a checkpoint")
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}, line {number}: not a published head ({exc})") from None
            if memo_id is None or head["memo"] == memo_id:
                found.append(head)
    return found


def heads_problem(
    keys: dict[str, str], heads: list[dict[str, Any]], hash_at: Callable[[int], str | None], length: int
) -> str:
    """Each published head must be signed by an evidence key and be in the chain (the
    record at its seq has its hash), and the chain must reach the newest one. `hash_at`
    gives the hash of the chain's record at a seq (None: no such record)."""
    for head in heads:
        where = f"the head published at {head.get('at')} over {head.get('seq')} records"
        public_b64 = keys.get(str(head.get("key_id", "")))
        if public_b64 is None or not checkpoints.signature_valid(public_b64, head, str(head.get("signature", ""))):
            return f"{where}: its signature does not verify with the evidence keys"
    newest = max(heads, key=lambda h: h["seq"], default=None)
    if newest is not None and length < newest["seq"]:
        return (
            f"the chain holds {length} records, but a head was published at {newest['at']} over {newest['seq']} "
            f"(records {length + 1}–{newest['seq']} are missing: cut off or erased)"
        )
    for head in heads:
        if hash_at(head["seq"]) != head["head"]:
            return (
                f"record {head['seq']}: the chain differs from the head published at {head['at']} "
                "(rewritten and sealed again)"
            )
    return ""


class HashesAt:
    """Passes a chain's records through, keeping the hash of those at the given seqs
    (and how many there were): an export's chain is read once."""

    def __init__(self, records: Iterable[dict[str, Any]], seqs: Iterable[int]) -> None:
        self.records, self.wanted, self.length = records, set(seqs), 0
        self.hashes: dict[int, str | None] = {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for record in self.records:
            self.length += 1
            if record.get("seq") in self.wanted:
                self.hashes[record["seq"]] = record.get("hash")
            yield record
