"""Verify an evidence export with nothing else: no database, no settings, no secret.

    python -m memo_service.memos.evidence.verify_file EXPORT.json [--heads HEADS.jsonl]

The export's chain is checked record by record against its signed checkpoints (one pass,
nothing kept), and, given a copy of the heads the operator published, the chain must
hold every head published for the memo and reach the newest one. Exit status 0 when it
verifies, 1 when it does not, 2 when a file cannot be read. Imports no Django.
"""

from __future__ import annotations

import argparse
import binascii
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from memo_service.memos.evidence import checkpoints, heads
from memo_service.memos.evidence.export_claims import ExportClaims
from memo_service.memos.evidence.export_file import ExportError, members


class Unreadable(Exception):
    """A file that is not there, or not an evidence export or heads file."""


def export_problem(path: Path, heads_path: Path | None = None) -> tuple[str, str]:
    """(problem, summary): problem is "" when the export verifies. Raises Unreadable."""
    published = _published(heads_path)
    known, chain, (problem, records), claimed = _export_read(path, published)
    if not problem and heads_path is not None:
        mine = [h for h in published if h["memo"] == known.get("memo_id")]
        problem = heads.heads_problem(_keys(known), mine, chain.hashes.get, chain.length)
        checked = f"holding all {len(mine)} heads published for it in {heads_path}"
    else:
        checked = "no published heads given (--heads), so an export cut short could not be ruled out"
    # Once the chain holds: what the export says beside it (approval, cases, answers).
    problem = problem or claimed
    public = list(_keys(known).values())
    summary = (
        f"evidence of {known.get('memo')} verifies: {records} records, chain intact, "
        f"sealed by {len(known['checkpoints'])} signed checkpoints, {checked}; "
        f"public key{'s' if len(public) > 1 else ''} {', '.join(checkpoints.key_id(k) for k in public)} "
        "(compare with the ones the operator published)"
    )
    return problem, summary


def _export_read(
    path: Path, published: list[dict[str, Any]]
) -> tuple[dict[str, Any], heads.HashesAt, tuple[str, int], str]:
    """The export read in one pass, its chain checked as it goes: (its members other than
    the chain, cases and recipients, the chain's hashes at the heads `published` for the
    memo, the chain's (problem, records), what the export claims beside the chain that
    the chain does not hold). Raises Unreadable."""
    try:
        with path.open(encoding="utf-8") as f:
            known, chain, outcome, claims = _members_read(f, published)
    except OSError as exc:
        raise Unreadable(f"{path}: cannot read it: {exc}") from None
    except (ExportError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{path}: cannot read it as JSON: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise Unreadable(
            f"{path}: not a well-formed evidence export with its chain, checkpoints and public key "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if outcome is None or chain is None:
        raise Unreadable(f"{path}: not a well-formed evidence export: it holds no chain")
    return known, chain, outcome, claims.problem()


def _members_read(
    f: IO[str], published: list[dict[str, Any]]
) -> tuple[dict[str, Any], heads.HashesAt | None, tuple[str, int] | None, ExportClaims]:
    """One pass over the export's members: the chain is checked against the checkpoints
    and public keys, which must come before it, and against what the approval, cases,
    recipients and withdrawal before it claim (export_claims.py)."""
    known: dict[str, Any] = {}
    outcome: tuple[str, int] | None = None
    chain: heads.HashesAt | None = None
    claims = ExportClaims(members=known)
    for key, value in members(f):
        if key == "chain":
            if not {"checkpoints", "public_keys"} <= known.keys():
                for _ in value:  # read to its end: a file that is not JSON says so first
                    pass
                raise KeyError("its checkpoints and public keys must come before its chain")
            memo_id = known.get("memo_id")
            wanted = [h["seq"] for h in published if h["memo"] == memo_id]
            chain = heads.HashesAt(_claimed(value, claims), wanted)
            outcome = checkpoints.chain_problem(_keys(known), chain, known["checkpoints"])
        elif key == "cases":
            for case in value:
                claims.case(case)
        elif key == "recipients":
            for recipient in value:
                claims.recipient(recipient)
        else:
            known[key] = value
    return known, chain, outcome, claims


def _claimed(chain: Iterator[dict[str, Any]], claims: ExportClaims) -> Iterator[dict[str, Any]]:
    """The chain's records passed through, each shown to `claims` as it goes by."""
    for record in chain:
        if isinstance(record, dict):
            claims.record(record)
        yield record


def _published(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        return heads.heads_read(path)
    except OSError as exc:
        raise Unreadable(f"{path}: cannot read it: {exc}") from None
    except ValueError as exc:
        raise Unreadable(str(exc)) from None


def _keys(known: dict[str, Any]) -> dict[str, str]:
    return checkpoints.keyring(known["public_keys"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="an export_evidence --format json file")
    parser.add_argument("--heads", type=Path, help="a copy of the published heads (EVIDENCE_HEADS_PATH's file)")
    args = parser.parse_args(argv)
    try:
        problem, summary = export_problem(args.export, args.heads)
    except Unreadable as exc:
        print(exc, file=sys.stderr)
        return 2
    if problem:
        print(f"{args.export}: evidence does NOT verify: {problem}", file=sys.stderr)
        return 1
    print(f"{args.export}: {summary}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
