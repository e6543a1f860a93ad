"""The abuse limits counted in Redis, exactly, across every process that shares the store.

Layout. Every limit is a sliding-window log: a sorted set of one member per counted request,
scored by its time in ms. The limits of one scope share a hash tag, so one script serves them on
Redis Cluster; each tag is a keyed digest (HMAC with the service key) of the client and the
counted value, so neither a phone number nor an IP is ever in a key or a member, in plain text
or as a digest anyone without the key could recompute:

    vf:{lim:phone:H(client, phone digits)}:per_phone
    vf:{lim:phone:H(client, phone digits)}:resend_cooldown:H(verification id)
    vf:{lim:ip:H(client, ip)}:per_ip
    vf:{lim:prefix:H(client, first digits)}:per_prefix
    vf:{lim:client:H(client)}:per_client

A verification has one phone, so its cooldown (a window of one send) lives in its phone's slot:
per_phone and the cooldown are checked and counted in one script, all or nothing.

Across slots (ip, prefix, client) no script can be atomic, so a request reserves: one script per
scope, in `SCOPE_ORDER`, checks every limit of that scope and, when all have room, adds the
request's member to all of them. When a scope refuses, the members already added are removed
again and the request is refused: a refused request counts nothing. A reservation counts at
once, so no two requests can both take the last place: the limit is never exceeded, whatever the
concurrency. Concurrent requests that count in the same keys (one client's starts to one
phone from one IP) get exactly min(M, N) places: a scope refuses only when N reservations are
held there, and a reservation is given back only when a later scope is full, which by induction
from the last scope (never given back) means N requests got through. Between requests counted
in partly different keys, a reservation that a later scope then gives back can, for the moment
it is held, refuse another request: such a race errs on refusing, never on allowing.

When counts happen. `acquire` is called once the request is valid and before the state machine
commits (once per request: an event built again after a version conflict does not acquire
again); its counts hold from that moment. The caller gives them back with `release` when the
request then is not accepted: the start whose create fails (a duplicate tx_id), the resend or
fallback the machine refuses (4302, 4150), or the part for sends of a start that sends nothing
(`release(grant, limits=SEND_LIMITS)`). So what stays counted is the sends and starts of the
accepted requests, counted from the moment they were accepted, and a request refused by a
limit changes nothing: it is refused before the machine spends a resend. A process that dies
between `acquire` and `release` leaves its counts until they slide out of their windows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from service.limits import (
    Counted,
    Kind,
    LimitName,
    LimitSettings,
    Refusal,
    Scope,
    Window,
    counted_by,
    refusal_of,
)

log = structlog.get_logger(__name__)

SEND_LIMITS: tuple[LimitName, ...] = ("per_phone", "resend_cooldown")
ALL_LIMITS: tuple[LimitName, ...] = ("per_phone", "resend_cooldown", "per_ip", "per_prefix", "per_client")

# Check the window sets of one slot and, when every one has room, count the request in all.
# KEYS: the sets. ARGV: now ms, member ('' only checks), then per key: limit, window ms, and
# now - window (an entry counts while its score is above it).
# Returns {1} when every set has room (then the member is in all of them), else {0, then key
# index and wait ms for each set without room}: then nothing is written.
ACQUIRE = """
local reply = {0}
for i, key in ipairs(KEYS) do
  local at = i * 3
  local limit = tonumber(ARGV[at])
  local after = '(' .. ARGV[at + 2]
  local count = redis.call('ZCOUNT', key, after, '+inf')
  if count >= limit then
    -- Room comes when the entry `count - limit` places from the oldest leaves the window.
    local entry = redis.call('ZRANGEBYSCORE', key, after, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
    reply[#reply + 1] = i
    reply[#reply + 1] = tonumber(entry[2]) + tonumber(ARGV[at + 1]) - tonumber(ARGV[1])
  end
end
if #reply > 1 then return reply end
if ARGV[2] ~= '' then
  for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[i * 3 + 2])
    redis.call('ZADD', key, ARGV[1], ARGV[2])
    redis.call('PEXPIRE', key, ARGV[i * 3 + 1])
  end
end
return {1}
"""

# Give a request's counts back. KEYS: window sets of one slot. ARGV: the request's member.
RELEASE = """
local removed = 0
for _, key in ipairs(KEYS) do removed = removed + redis.call('ZREM', key, ARGV[1]) end
return removed
"""


def keyed_digest_for(service_key: bytes) -> Callable[[str], str]:
    """HMAC-SHA256 under a key derived from the service key for this use alone."""
    key = hmac.new(service_key, b"veriflow/limits", hashlib.sha256).digest()

    def keyed_digest(text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:24]

    return keyed_digest


class LimiterKeys:
    """Key names: a keyed digest of every counted value, the limits of one scope in one slot."""

    def __init__(self, keyed_digest: Callable[[str], str]) -> None:
        probe = keyed_digest("probe")
        if not isinstance(probe, str) or not probe or any(ch in probe for ch in "{}"):
            raise ValueError("keyed_digest must return a non-empty text without braces")
        self._digest = keyed_digest

    def tag(self, scope: Scope, scope_value: str) -> str:
        return f"lim:{scope}:{self._digest(scope + chr(0) + scope_value)}"

    def key(self, counted: Counted) -> str:
        key = f"vf:{{{self.tag(counted.scope, counted.scope_value)}}}:{counted.limit}"
        if counted.item:
            key += ":" + self._digest(counted.limit + chr(0) + counted.item)
        return key


@dataclass(frozen=True, slots=True)
class Held:
    """One count a grant holds: its limit and the window set its member is in."""

    limit: LimitName
    key: str


@dataclass(frozen=True, slots=True)
class Grant:
    """An allowed request's counts, one tuple per slot: what `release` gives back."""

    member: str
    groups: tuple[tuple[Held, ...], ...]

    @property
    def counted(self) -> tuple[LimitName, ...]:
        return tuple(held.limit for group in self.groups for held in group)


@dataclass(frozen=True, slots=True)
class _Group:
    """The limits of one scope: one script call, one slot."""

    held: tuple[Held, ...]
    rules: tuple[Window, ...]

    @property
    def keys(self) -> list[str]:
        return [held.key for held in self.held]

    def args(self, now_ms: int, member: str) -> list[str | int]:
        args: list[str | int] = [now_ms, member]
        for rule in self.rules:
            args += [rule.count, rule.window_ms, now_ms - rule.window_ms]
        return args

    def waits(self, reply: Sequence[Any]) -> list[tuple[LimitName, int]]:
        """The exceeded limits and their waits in ms from the script's reply ([] when allowed)."""
        if int(reply[0]) == 1:
            return []
        pairs = [int(value) for value in reply[1:]]
        # An entry counted by a process whose clock read a little later than this one's can
        # seem to wait longer than its window: no wait is longer than the window itself.
        return [(self.held[pairs[at] - 1].limit, min(pairs[at + 1], self.rules[pairs[at] - 1].window_ms))
                for at in range(0, len(pairs), 2)]


class Limiter:
    """Counts the section 9 limits in the store `redis_client` (Redis, Redis Cluster, fakeredis).

    `keyed_digest` names keys (see `keyed_digest_for`); `clock_ms` is the time a request is
    counted at unless `acquire` is given one; `on_refusal` sees each refusal (see
    `refusal_counter`)."""

    def __init__(self, redis_client: Any, settings: LimitSettings, keyed_digest: Callable[[str], str],
                 clock_ms: Callable[[], int], on_refusal: Callable[[Refusal], None] | None = None) -> None:
        self.redis = redis_client
        self.settings = settings
        self.keys = LimiterKeys(keyed_digest)
        self._clock_ms = clock_ms
        self._on_refusal = on_refusal
        self._acquire = redis_client.register_script(ACQUIRE)
        self._release = redis_client.register_script(RELEASE)

    async def acquire(self, *, client_id: str, phone: str | None, ip: str | None,
                      verification_id: str | None, kind: Kind, now_ms: int | None = None,
                      sends: bool = True) -> Grant | Refusal:
        """Count a request in every limit it is under, or in none and refuse it.

        kind "start": one start (per_ip when `ip` is given, per_prefix, per_client) and, when
        `sends`, one send (per_phone, and the cooldown of `verification_id`, the id the start
        creates). kind "send" (resend, fallback): one send of `verification_id` to `phone`.
        Returns the Grant that `release` gives back, or the Refusal with the longest wait among
        the exceeded limits."""
        now = self._clock_ms() if now_ms is None else now_ms
        found = counted_by(self.settings, kind=kind, client_id=client_id, phone=phone, ip=ip,
                           verification_id=verification_id, sends=sends)
        groups = self._groups(found)
        member = f"{now}:{secrets.token_hex(8)}"
        reserved: list[_Group] = []
        for index, group in enumerate(groups):
            try:
                reply = await self._acquire(keys=group.keys, args=group.args(now, member))
            except BaseException:
                # The script may have run: its member goes too (removing an absent one is harmless).
                await asyncio.shield(self._undo([*reserved, group], member, quiet=True))
                raise
            waits = group.waits(reply)
            if not waits:
                reserved.append(group)
                continue
            await self._undo(reserved, member)
            # Retry-After is the longest wait among all the exceeded limits: look at the rest too.
            later = await asyncio.gather(*(self._check(rest, now) for rest in groups[index + 1:]))
            refusal = refusal_of([*waits, *(wait for found_waits in later for wait in found_waits)])
            assert refusal is not None  # noqa: S101 - `waits` is not empty
            if self._on_refusal is not None:
                self._on_refusal(refusal)
            return refusal
        return Grant(member, tuple(group.held for group in reserved))

    async def release(self, grant: Grant, limits: Collection[LimitName] | None = None) -> None:
        """Give back a grant's counts (only those of `limits`, when given); again is harmless."""
        await asyncio.gather(*(
            self._release(keys=keys, args=[grant.member])
            for keys in ([held.key for held in group if limits is None or held.limit in limits]
                         for group in grant.groups)
            if keys
        ))

    async def check(self, *, client_id: str, phone: str | None, ip: str | None,
                    verification_id: str | None, kind: Kind, now_ms: int | None = None,
                    sends: bool = True) -> Refusal | None:
        """The refusal `acquire` would give now, counting nothing."""
        now = self._clock_ms() if now_ms is None else now_ms
        found = counted_by(self.settings, kind=kind, client_id=client_id, phone=phone, ip=ip,
                           verification_id=verification_id, sends=sends)
        waits = await asyncio.gather(*(self._check(group, now) for group in self._groups(found)))
        return refusal_of(wait for group_waits in waits for wait in group_waits)

    def _groups(self, found: Sequence[Counted]) -> list[_Group]:
        by_tag: dict[str, list[Counted]] = {}
        for counted in found:  # already in SCOPE_ORDER
            by_tag.setdefault(self.keys.tag(counted.scope, counted.scope_value), []).append(counted)
        return [_Group(tuple(Held(c.limit, self.keys.key(c)) for c in group), tuple(c.rule for c in group))
                for group in by_tag.values()]

    async def _check(self, group: _Group, now_ms: int) -> list[tuple[LimitName, int]]:
        return group.waits(await self._acquire(keys=group.keys, args=group.args(now_ms, "")))

    async def _undo(self, groups: Sequence[_Group], member: str, *, quiet: bool = False) -> None:
        try:
            await asyncio.gather(*(self._release(keys=group.keys, args=[member]) for group in groups))
        except Exception:
            if not quiet:
                raise
            # Left in place, a reservation only refuses more than it must, until it slides out.
            log.warning("limits.reservation_kept", groups=len(groups))


def refusal_counter(registry: CollectorRegistry) -> Callable[[Refusal], None]:
    """`veriflow_limit_refusals_total{limit}` on `registry`, as an `on_refusal` for a Limiter:
    each refused request counts once, under the limit that decided its Retry-After."""
    counter = Counter("veriflow_limit_refusals", "Requests refused by an abuse limit (3006), by limit.",
                      ["limit"], registry=registry)
    for name in ALL_LIMITS:
        counter.labels(limit=name)

    def count(refusal: Refusal) -> None:
        counter.labels(limit=refusal.limit).inc()

    return count
