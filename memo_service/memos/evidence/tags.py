"""Evidence records authenticated by the process that writes them.

Whoever can write the database can insert a row that looks like a record; they cannot
make its tag: an HMAC-SHA256, with a key derived from EVIDENCE_SIGNING_KEY (which the
database never holds), over everything the record claims (memo, kind, object, payload,
creation time). The sequencer chains only records whose tag holds, and verification
checks every tag again, so a record the service did not write is named, never signed.

An event's row id is given by the statement that stores it, after its record's tag was
made: an event's record is bound to the event by the provider's own id for it
(provider/event id, unique), which its payload holds and its row must match.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from memo_service.memos.evidence.checkpoints import canonical

# The derivation's label: a key made for tags is no use for anything else.
_LABEL = b"memo-service evidence record tag v1"


@functools.lru_cache(maxsize=4)
def _key(signing_key: str) -> bytes:
    return hmac.new(base64.b64decode(signing_key), _LABEL, hashlib.sha256).digest()


def stamp(at: dt.datetime) -> str:
    """A record's creation time as its tag covers it: UTC, to the microsecond."""
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def object_ref(kind: str, object_id: int | None, payload: dict[str, Any]) -> str:
    """What the record is of, as its tag names it: the object's id, or for an event the
    provider's id for it (see the module's docstring)."""
    if kind == "event":
        return f"{payload.get('provider')}/{payload.get('event_id')}"
    return str(object_id)


def key_label() -> str:
    """The tag key's short fingerprint, which every tag begins with: after the signing
    key is rotated, records tagged with the old one are told apart (their checkpoints,
    signed when the sequencer had checked them, vouch for them)."""
    return _label(settings.EVIDENCE_SIGNING_KEY)


@functools.lru_cache(maxsize=4)
def _label(signing_key: str) -> str:
    return hashlib.sha256(_key(signing_key)).hexdigest()[:8]


def record_tag(
    *,
    memo_id: int,
    kind: str,
    object_id: int | None,
    payload: dict[str, Any],
    created_at: dt.datetime,
    payload_json: str | None = None,
) -> str:
    """The tag: HMAC-SHA256 over what the record claims (its payload as canonical JSON,
    `payload_json` when the caller has it)."""
    claims = canonical([memo_id, kind, object_ref(kind, object_id, payload), stamp(created_at)])
    body = f"{claims}\n{canonical(payload) if payload_json is None else payload_json}"
    digest = hmac.new(_key(settings.EVIDENCE_SIGNING_KEY), body.encode(), hashlib.sha256).hexdigest()
    return f"{key_label()}:{digest}"


def tag_holds(
    tag: str,
    *,
    memo_id: int,
    kind: str,
    object_id: int | None,
    payload: Any,
    created_at: dt.datetime | None,
    payload_json: str | None = None,
) -> bool | None:
    """True when the tag is this service's over exactly this record; False when it is
    missing, or made over something else (or by someone without the key); None when it
    was made with a key this process no longer has (rotated)."""
    if not tag or created_at is None or not isinstance(payload, dict):
        return False
    label, _, digest = tag.partition(":")
    if label != key_label():
        return None if len(label) == 8 and len(digest) == 64 else False
    expected = record_tag(
        memo_id=memo_id,
        kind=kind,
        object_id=object_id,
        payload=payload,
        created_at=created_at,
        payload_json=payload_json,
    )
    return hmac.compare_digest(tag, expected)


def record_authentic(record: Mapping[str, Any], payload_json: str | None = None) -> bool | None:
    """tag_holds for a record as read (memo_id, kind, object_id, payload, created_at, tag)."""
    return tag_holds(
        record["tag"],
        memo_id=record["memo_id"],
        kind=record["kind"],
        object_id=record["object_id"],
        payload=record["payload"],
        created_at=record["created_at"],
        payload_json=payload_json,
    )
