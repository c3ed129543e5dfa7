"""One send rate per provider, shared by every worker on every machine.

SEND_RATE_LIMIT emails per second (0: no limit). Each call first takes the next free
slot, the slots a call's recipients apart (1/rate each); a 429's Retry-After moves every worker's next slot past it. The
state lives in Redis when Redis is the broker (one Lua script, atomic), otherwise in the
database (one locked row). Workers sleep until their slot, so the provider sees a steady
rate however many workers there are.
"""

from __future__ import annotations

import functools
import time

from django.conf import settings
from django.db import transaction

from memo_service.memos.models import ProviderThrottle

# The slot script: next = max(now, stored next, blocked until); store next + interval.
TAKE_SLOT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('SET', KEYS[1], tostring(slot + interval), 'EX', 3600)
return tostring(slot)
"""
BLOCK = """
local blocked = tonumber(ARGV[1])
if blocked > tonumber(redis.call('GET', KEYS[1]) or '0') then redis.call('SET', KEYS[1], tostring(blocked), 'EX', 3600) end
return 1
"""


@functools.lru_cache(maxsize=1)
def _redis():
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _keys(provider: str) -> list[str]:
    return [f"memo:throttle:{provider}:next", f"memo:throttle:{provider}:blocked"]


def throttle_take(provider: str, recipients: int = 1) -> float:
    """Wait for this provider's next send slot, for a call to `recipients` (the next
    call's slot comes that many intervals later: the rate is of emails, as providers
    count theirs); returns the seconds waited."""
    rate = settings.SEND_RATE_LIMIT
    if rate <= 0:
        return 0.0
    now = time.time()
    interval = recipients / rate
    client = _redis()
    if client is not None:
        slot = float(client.eval(TAKE_SLOT, 2, *_keys(provider), now, interval))
    else:
        with transaction.atomic():
            row, _ = ProviderThrottle.objects.select_for_update().get_or_create(provider=provider)
            slot = max(now, row.next_slot, row.blocked_until)
            ProviderThrottle.objects.filter(pk=provider).update(next_slot=slot + interval)
    wait = max(0.0, slot - now)
    if wait:
        time.sleep(wait)
    # A 429 seen by another worker while this one slept still holds.
    blocked = _blocked_until(provider, client) - time.time()
    if blocked > 0:
        time.sleep(blocked)
        wait += blocked
    return wait


def _blocked_until(provider: str, client: object) -> float:
    if client is not None:
        return float(client.get(_keys(provider)[1]) or 0)  # type: ignore[attr-defined]
    return ProviderThrottle.objects.filter(pk=provider).values_list("blocked_until", flat=True).first() or 0.0


def throttle_block(provider: str, seconds: float) -> bool:
    """The provider said "retry after": no worker sends to it before then. False when no
    limiter is configured (the caller then defers its own work instead)."""
    if settings.SEND_RATE_LIMIT <= 0:
        return False
    until = time.time() + seconds
    client = _redis()
    if client is not None:
        client.eval(BLOCK, 1, _keys(provider)[1], until)
        return True
    with transaction.atomic():
        ProviderThrottle.objects.get_or_create(provider=provider)
        ProviderThrottle.objects.filter(pk=provider, blocked_until__lt=until).update(blocked_until=until)
    return True
