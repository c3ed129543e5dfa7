"""A provider's daily quota: at most SEND_DAILY_QUOTA recipients in any 24 hours (an SES
account's "Max send in 24 hours"), shared by every worker; 0: none.

A send that reaches it does not fail: the call goes with the recipients the window still
has room for, and the rest wait (their task comes back with a countdown) until the
window's oldest sends have left it. A call of 500 recipients counts 500.

What is counted, and why it cannot drift from what was sent:
- with Redis as the broker, a counter per minute in one hash, read and written by one
  Lua script (atomic across machines). Room is taken before the claim and the call, and
  what was not sent after all is given back (not claimed, or refused with an answer);
  a call whose answer was lost stays counted, as the provider may have counted it. A
  minute's count leaves the window at the end of its minute: never early.
- otherwise the Delivery rows are the count (sent, or claimed and not yet answered,
  in the last 24 hours), read and claimed under the provider's ProviderThrottle row
  lock, so two workers cannot both take the last room.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string

from memo_service.memos.models import DELIVERY_HANDED_OVER, Delivery, ProviderThrottle

WINDOW = dt.timedelta(hours=24)
BUCKET_S = 60  # a minute per Redis counter: 1,440 of them in a window, summed in one script

# The room script: forget minutes out of the window, grant up to ARGV[2] of what is left,
# and say when the next recipient may go once the window is full (0: now).
TAKE = """
local now, wanted, quota = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, bucket = tonumber(ARGV[4]), tonumber(ARGV[5])
local minutes, used = {}, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local minute, n = tonumber(all[i]), tonumber(all[i + 1])
  if minute * bucket + bucket + window <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif n > 0 then
    used = used + n
    table.insert(minutes, {minute, n})
  end
end
local granted = math.max(0, math.min(wanted, quota - used))
local here = math.floor(now / bucket)
if granted > 0 then
  redis.call('HINCRBY', KEYS[1], tostring(here), granted)
  redis.call('EXPIRE', KEYS[1], window + 2 * bucket)
  used = used + granted
end
local free_at = 0
if used >= quota then
  table.sort(minutes, function(a, b) return a[1] < b[1] end)
  if granted > 0 then table.insert(minutes, {here, granted}) end
  local leaving = 0
  for _, m in ipairs(minutes) do
    leaving = leaving + m[2]
    if used - leaving < quota then free_at = m[1] * bucket + bucket + window; break end
  end
end
return {granted, tostring(here), tostring(free_at)}
"""


@dataclass(frozen=True)
class Taken:
    """What a call got of the window: the deliveries claimed within the quota, and when
    the window has room again for those it had none for (None: they all fit)."""

    claimed: set[int]
    free_at: dt.datetime | None
    minute: int | None = None  # the Redis counter they were counted in, to give back to


def provider_of_settings() -> str:
    """The provider the quota is kept for, as a send names it (its backend's module)."""
    return import_string(settings.EMAIL_BACKEND).__module__


@functools.lru_cache(maxsize=1)
def _redis():
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _key(provider: str) -> str:
    return f"memo:quota:{provider}"


def quota_claim(*, provider: str, delivery_ids: list[int], claim: Callable[[list[int]], set[int]]) -> Taken:
    """Claim (with `claim`) as many of `delivery_ids`, in order, as the window has room
    for; the others are not claimed. Without a quota, `claim` takes them all."""
    quota = settings.SEND_DAILY_QUOTA
    if quota <= 0 or not delivery_ids:
        return Taken(claim(delivery_ids), None)
    client = _redis()
    now = timezone.now()
    if client is not None:
        granted, minute, free_at = client.eval(
            TAKE, 1, _key(provider), now.timestamp(), len(delivery_ids), quota, WINDOW.total_seconds(), BUCKET_S
        )
        claimed = claim(delivery_ids[: int(granted)]) if int(granted) else set()
        if unclaimed := int(granted) - len(claimed):
            quota_give_back(provider=provider, count=unclaimed, minute=int(minute))
        return Taken(claimed, _time(float(free_at)) if int(granted) < len(delivery_ids) else None, int(minute))
    with transaction.atomic():
        # The row's write lock (on SQLite, the database's) until the claim is committed.
        ProviderThrottle.objects.get_or_create(provider=provider)
        ProviderThrottle.objects.filter(pk=provider).update(next_slot=F("next_slot"))
        used = _counted(now).count()
        granted = max(0, min(len(delivery_ids), quota - used))
        claimed = claim(delivery_ids[:granted]) if granted else set()
        full = granted < len(delivery_ids)
    return Taken(claimed, _db_free_at(now, quota) if full else None)


def quota_give_back(*, provider: str, count: int, minute: int | None = None) -> None:
    """`count` recipients counted for a call were not sent after all (the provider
    answered with a refusal). With the database as the count there is nothing to do:
    a refused delivery is no longer counted."""
    if settings.SEND_DAILY_QUOTA <= 0 or count <= 0:
        return
    client = _redis()
    if client is not None and minute is not None:
        client.hincrby(_key(provider), str(minute), -count)


def quota_free_at(provider: str) -> dt.datetime | None:
    """When the window next has room, if it has none now (for the memo's page)."""
    quota = settings.SEND_DAILY_QUOTA
    if quota <= 0:
        return None
    now = timezone.now()
    client = _redis()
    if client is not None:
        _, _, free_at = client.eval(
            TAKE, 1, _key(provider), now.timestamp(), 0, quota, WINDOW.total_seconds(), BUCKET_S
        )
        return _time(float(free_at)) if float(free_at) > now.timestamp() else None
    return _db_free_at(now, quota) if _counted(now).count() >= quota else None


def _counted(now: dt.datetime) -> QuerySet[Delivery]:
    """The deliveries the provider counts in the window ending `now`: taken, or claimed
    for a call that has not answered (or never will: its outcome is unknown)."""
    since = now - WINDOW
    in_flight = (Delivery.Status.SENDING, Delivery.Status.OUTCOME_UNKNOWN)
    return Delivery.objects.filter(
        Q(status__in=DELIVERY_HANDED_OVER, sent_at__gt=since) | Q(status__in=in_flight, status_changed_at__gt=since)
    )


def _db_free_at(now: dt.datetime, quota: int) -> dt.datetime | None:
    """When enough of the window's oldest have left it for one more recipient."""
    used = _counted(now).count()
    if used < quota:
        return None
    sent_at, claimed_at = (
        _counted(now)
        .order_by(Coalesce("sent_at", "status_changed_at"))
        .values_list("sent_at", "status_changed_at")[used - quota]
    )
    return (sent_at or claimed_at or now) + WINDOW  # one of them is set: _counted filters on it


def _time(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
