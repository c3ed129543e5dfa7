"""Signed checkpoints of the evidence chain, and checking them with no database.

After AWS CloudTrail's log-file integrity validation (each digest signed and naming the
previous one) and Certificate Transparency's signed tree heads: a checkpoint says "memo
M's chain held N records, the last one's hash was H, and the checkpoint before this one
was P", signed with Ed25519. The private key (EVIDENCE_SIGNING_KEY) is never in the
database, so whoever can rewrite the database can delete checkpoints but cannot make one.

This module knows nothing of models: an export is verified with it alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = "0" * 64
FIELDS = ("memo", "seq", "head", "count", "prev", "at")


def canonical(value: Any) -> str:
    """The canonical JSON a record's hash and tag are made over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, kind: str, object_id: int, payload: Any, payload_json: str | None = None) -> str:
    """A chain record's hash: SHA-256 over the previous hash and the record's canonical
    JSON ({"kind", "object_id", "payload"}), given the payload's canonical JSON when the
    caller has it (a handover's is 150 KB: the sequencer makes it once for hash and tag)."""
    if payload_json is None:
        payload_json = canonical(payload)
    body = f'{{"kind":{canonical(kind)},"object_id":{canonical(object_id)},"payload":{payload_json}}}'
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def body(checkpoint: dict[str, Any]) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return json.dumps({k: checkpoint[k] for k in FIELDS}, sort_keys=True, separators=(",", ":")).encode()


def body_hash(checkpoint: dict[str, Any]) -> str:
    return hashlib.sha256(body(checkpoint)).hexdigest()


def new_private_key() -> str:
    """A new signing key as EVIDENCE_SIGNING_KEY holds it: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def is_raw_key(encoded: str) -> bool:
    """Whether `encoded` is base64 of 32 bytes, the form of both halves of an Ed25519 key."""
    try:
        return len(base64.b64decode(encoded, validate=True)) == 32
    except ValueError:
        return False


@functools.lru_cache(maxsize=4)
def private_key(encoded: str) -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(encoded, validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("EVIDENCE_SIGNING_KEY must be base64 of a raw 32-byte Ed25519 private key") from exc


def public_key_b64(encoded_private: str) -> str:
    raw = private_key(encoded_private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public_b64: str) -> str:
    """The public key's fingerprint, SHA-256 of its raw bytes: what an auditor compares."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()


def sign(encoded_private: str, checkpoint: dict[str, Any]) -> str:
    return base64.b64encode(private_key(encoded_private).sign(body(checkpoint))).decode()


def keyring(public_keys: Iterable[str]) -> dict[str, str]:
    """Public keys by fingerprint: the current key and any retired ones a verification accepts."""
    return {key_id(public_b64): public_b64 for public_b64 in public_keys}


def signature_valid(public_b64: str, checkpoint: dict[str, Any], signature: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
        key.verify(base64.b64decode(signature), body(checkpoint))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def checkpoints_problem(keys: dict[str, str], checkpoints: list[dict[str, Any]]) -> tuple[str, int]:
    """Check signatures and the checkpoints' own chain, oldest first; returns (problem or
    "", how many checkpoints passed). `keys` is a keyring: each checkpoint names the
    fingerprint of the key that signed it, and only a key of the ring may have."""
    prev = GENESIS
    for n, checkpoint in enumerate(checkpoints):
        where = f"checkpoint at record {checkpoint['seq']} ({checkpoint['at']})"
        public_b64 = keys.get(checkpoint.get("key_id", ""))
        if public_b64 is None:
            return (
                f"{where}: signed with key {str(checkpoint.get('key_id'))[:16]}, which is neither the evidence "
                "key nor a retired one this verification was given (EVIDENCE_RETIRED_KEYS)",
                n,
            )
        if not signature_valid(public_b64, checkpoint, checkpoint.get("signature", "")):
            return f"{where}: its signature does not verify with the evidence key (forged or altered)", n
        if checkpoint["prev"] != prev:
            return f"{where}: does not follow the checkpoint before it (a checkpoint was removed)", n
        if checkpoint["count"] != checkpoint["seq"]:
            return f"{where}: counts {checkpoint['count']} records for {checkpoint['seq']} in the chain", n
        prev = body_hash(checkpoint)
    return "", len(checkpoints)


def chain_problem(
    keys: dict[str, str], chain: Iterable[dict[str, Any]], checkpoints: list[dict[str, Any]]
) -> tuple[str, int]:
    """An exported chain and its checkpoints, verified with nothing else: every record
    follows the one before it, every checkpoint is signed and matches the chain, and the
    newest checkpoint covers the whole chain. Returns (problem or "", records read); the
    chain is read once, in order, and not kept."""
    problem, _ = checkpoints_problem(keys, checkpoints)
    if problem:
        return problem, 0
    heads = {c["seq"]: c for c in checkpoints}
    prev_hash, last_good, count = GENESIS, 0, 0
    first_since_good: dict[str, Any] | None = None
    for expected_seq, record in enumerate(chain, start=1):
        where = f"record {record['seq']} ({record['kind']} {record['object_id']})"
        if record["seq"] != expected_seq:
            return f"record {expected_seq} is missing (next is {record['seq']})", count
        if record["prev_hash"] != prev_hash:
            return f"{where}: does not follow the record before it", count
        if record_hash(prev_hash, record["kind"], record["object_id"], record["payload"]) != record["hash"]:
            return f"{where}: its hash does not match its content (the record was altered)", count
        first_since_good = first_since_good or record
        checkpoint = heads.get(record["seq"])
        if checkpoint is not None:
            if checkpoint["head"] != record["hash"]:
                return rewritten(last_good, checkpoint, first_since_good), count
            last_good, first_since_good = record["seq"], None
        prev_hash, count = record["hash"], count + 1
    return coverage_problem(count, checkpoints[-1] if checkpoints else None), count


def rewritten(last_good: int, checkpoint: dict[str, Any], first: dict[str, Any] | None) -> str:
    """The chain differs from a signed head: the change lies after the last head that
    matched, from `first`, the first record after it."""
    what = f"record {first['seq']} ({first['kind']} {first['object_id']})" if first else f"record {last_good + 1}"
    span = what if checkpoint["seq"] == last_good + 1 else f"records {last_good + 1}–{checkpoint['seq']}, from {what}"
    return (
        f"{span}: the chain differs from the one signed at {checkpoint['at']} over {checkpoint['seq']} records "
        "(rewritten after it was sealed)"
    )


def coverage_problem(last_seq: int, newest: dict[str, Any] | None) -> str:
    if newest is None:
        return f"records 1–{last_seq} are chained but no signed checkpoint covers them" if last_seq else ""
    if last_seq < newest["seq"]:
        return (
            f"record {last_seq + 1} is missing: the checkpoint signed at {newest['at']} covers "
            f"{newest['seq']} records, the chain holds {last_seq}"
        )
    if last_seq > newest["seq"]:
        return (
            f"records {newest['seq'] + 1}–{last_seq} are chained but no signed checkpoint covers them "
            "(a checkpoint was removed, or they were added behind the sequencer's back)"
        )
    return ""
