"""The Redis store: every read and write the service makes, each commit one atomic script call.

A commit (`CommitOps`) writes a record, its timers, its outbox entries, its unique claims and
an optional companion hash together, compare-and-set on the record's version (see scripts.COMMIT).
"""

from __future__ import annotations

import asyncio
import enum
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from machines import motp_user
from machines.motp_user import MotpUser
from machines.record import Verification, from_fields
from service.store import scripts
from service.store.client import command_lane
from service.store.keys import SERVICE_KEY, Keys, motp_user_key, motp_user_shard
from service.store.lane import hash_reply

# Extends a key's expiry only while it still holds the given value (a request's lease).
RENEW_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class CommitStatus(enum.Enum):
    OK = "ok"
    CONFLICT = "version"  # somebody else committed first: reload and decide again
    TAKEN = "taken"  # a unique claim (tx_id, event id) is held by another verification


@dataclass(slots=True)
class Companion:
    """A second hash in the record's slot, compare-and-set with it (an mOTP user). It never
    expires. `new_version == expected_version` checks its version without writing it."""

    key: str
    expected_version: int
    new_version: int
    fields: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CommitOps:
    """Everything one decision writes, in one script call."""

    record_key: str
    timers_key: str
    outbox_key: str
    expected_version: int
    new_version: int
    ttl_ms: int
    fields: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    timers_add: list[tuple[int, str]] = field(default_factory=list)
    timers_remove: list[str] = field(default_factory=list)
    outbox: list[bytes] = field(default_factory=list)
    claims: list[tuple[str, str, int]] = field(default_factory=list)  # key, value, ttl ms
    releases: list[tuple[str, str]] = field(default_factory=list)  # key, holder value
    links: list[tuple[str, str]] = field(default_factory=list)  # key, value ("": keep) living as the record
    counts: list[tuple[str, str, int, int]] = field(default_factory=list)  # key, field, delta, ttl ms
    companion: Companion | None = None
    persistent: bool = False  # the record never expires (an mOTP user written on its own)
    # Names this commit: the script keeps it in the record (`_c`), so a call the client sends again
    # after losing the answer (a retried connection) finds it applied, instead of a lost race.
    # Unique enough among the commits racing for one version; it guards nothing secret.
    token: str = field(default_factory=lambda: f"{random.getrandbits(48):012x}")
    after: Verification | None = None  # the record as this commit leaves it (not sent)

    def script_args(self) -> tuple[list[str], list[Any]]:
        keys = [self.record_key, self.timers_key, self.outbox_key]
        ttl = 0 if self.persistent else max(self.ttl_ms, 1)
        args: list[Any] = [self.expected_version, self.new_version, ttl]
        args.append(len(self.fields))
        for name, value in self.fields.items():
            args += [name, value]
        args += [len(self.deleted), *self.deleted]
        args.append(len(self.timers_add))
        for score, member in self.timers_add:
            args += [score, member]
        args += [len(self.timers_remove), *self.timers_remove]
        args += [len(self.outbox), *self.outbox]
        args.append(len(self.claims))
        for key, value, ttl_ms in self.claims:
            keys.append(key)
            args += [len(keys), value, ttl_ms]
        args.append(len(self.releases))
        for key, value in self.releases:
            keys.append(key)
            args += [len(keys), value]
        args.append(len(self.links))
        for key, value in self.links:
            keys.append(key)
            args += [len(keys), value]
        args.append(len(self.counts))
        for key, name, delta, ttl_ms in self.counts:
            keys.append(key)
            args += [len(keys), name, delta, ttl_ms]
        if self.companion is None:
            args.append(0)
        else:
            c = self.companion
            keys.append(c.key)
            args += [1, len(keys), c.expected_version, c.new_version, len(c.fields)]
            for name, value in c.fields.items():
                args += [name, value]
            args += [len(c.deleted), *c.deleted]
        args.append(self.token)  # always the last argument
        return keys, args


@dataclass(frozen=True, slots=True)
class CommitResult:
    status: CommitStatus
    detail: str | None = None  # the current version, or the key that is taken
    # A lost race on the record answers the hash that won (empty: it is gone); None when it did
    # not (the companion had changed, or a script of an older release answered).
    current: dict[Any, Any] | None = None

    def current_record(self) -> Verification | None:
        return from_fields(self.current) if self.current else None


class Store:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.redis = client
        # A step's two commands take the lane where there is one (service/store/client.py).
        lane = command_lane(client)
        self._execute = lane.execute if lane else client.execute_command
        self._hgetall = lane.hgetall if lane else client.hgetall
        self.keys = keys
        self._commit = client.register_script(scripts.COMMIT)
        self._claim = client.register_script(scripts.CLAIM_TIMERS)
        self._release = client.register_script(scripts.RELEASE_CLAIM)
        self._renew_held = client.register_script(RENEW_HELD)

    async def load(self, verification_id: str) -> Verification | None:
        raw = await self._hgetall(self.keys.record(verification_id))
        return from_fields(raw) if raw else None

    async def commit(self, ops: CommitOps) -> CommitResult:
        keys, args = ops.script_args()
        # EVALSHA sent directly: redis-py's Script object costs an import and a Protocol isinstance
        # check per call, a few percent of a step's CPU. NOSCRIPT (a restarted or failed-over
        # server that lost its script cache) loads it again, as the Script object would.
        try:
            reply = await self._execute("EVALSHA", self._commit.sha, len(keys), *keys, *args)
        except NoScriptError:
            self._commit.sha = await self.redis.script_load(scripts.COMMIT)
            reply = await self._execute("EVALSHA", self._commit.sha, len(keys), *keys, *args)
        return _commit_result(reply, keys)

    async def load_many(self, verification_ids: Sequence[str]) -> list[Verification | None]:
        """`load` for many records in one round trip (on a cluster: one call each, concurrently)."""
        if isinstance(self.redis, RedisCluster):
            return list(await asyncio.gather(*(self.load(v) for v in verification_ids)))
        pipe = self.redis.pipeline(transaction=False)
        for verification_id in verification_ids:
            pipe.hgetall(self.keys.record(verification_id))
        return [from_fields(raw) if raw else None for raw in await pipe.execute()]

    async def commit_many(self, batch: Sequence[CommitOps]) -> list[CommitResult]:
        """`commit` for many decisions in one round trip; each is its own atomic script call. On a
        cluster, where a pipeline spans slots and nodes, one call each, concurrently."""
        if isinstance(self.redis, RedisCluster):
            return list(await asyncio.gather(*(self.commit(ops) for ops in batch)))
        if not batch:
            return []
        pipe = self.redis.pipeline(transaction=False)
        all_keys = []
        for ops in batch:
            keys, args = ops.script_args()
            all_keys.append(keys)
            await self._commit(keys=keys, args=args, client=pipe)  # queued, sent by execute()
        return [_commit_result(reply, keys) for reply, keys in zip(await pipe.execute(), all_keys, strict=True)]

    async def claim_due_timers(self, shard: int, now_ms: int, lease_ms: int, batch: int) -> list[str]:
        members = await self._claim(keys=[self.keys.timers(shard)], args=[now_ms, lease_ms, batch])
        return [as_text(m) for m in members]

    async def reserve_claim(self, key: str, value: str, ttl_ms: int) -> bool:
        """Take a claim outside any commit (one in another slot than its verification)."""
        return bool(await self.redis.set(key, value, nx=True, px=ttl_ms))

    async def release_claim(self, key: str, value: str) -> None:
        await self._release(keys=[key], args=[value])

    async def drop_timer(self, shard: int, member: str) -> None:
        await self.redis.zrem(self.keys.timers(shard), member)

    async def drop_timers(self, shard: int, members: Sequence[str]) -> None:
        if members:
            await self.redis.zrem(self.keys.timers(shard), *members)

    async def count_timers(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.all_timers():
            pipe.zcard(key)
        return sum(await pipe.execute())

    async def claim_holder(self, key: str) -> str | None:
        """The value holding a unique claim (a verification id), or None when it is free."""
        holder = await self.redis.get(key)
        return None if holder is None else as_text(holder)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def development_key(self) -> bytes:
        """The embedded store's generated service key: made once, kept for the process's life."""
        await self.redis.set(SERVICE_KEY, secrets.token_hex(32), nx=True)
        return bytes(await self.redis.get(SERVICE_KEY))

    # ---- mOTP users: one hash per (client, user id), never expiring ----

    async def load_motp_user(self, ref: str) -> MotpUser | None:
        raw = await self.redis.hgetall(motp_user_key(self.keys, ref))
        return motp_user.from_fields(raw) if raw else None

    async def save_motp_user(self, before: MotpUser | None, after: MotpUser) -> bool:
        """Compare-and-set the user on its own; False when somebody else changed it first."""
        fields, deleted = motp_user.changed_fields(before, after)
        shard = motp_user_shard(self.keys, after.ref)
        expected = before.version if before is not None else 0
        ops = CommitOps(
            record_key=motp_user_key(self.keys, after.ref), timers_key=self.keys.timers(shard),
            outbox_key=self.keys.outbox(shard), expected_version=expected, new_version=expected + 1,
            ttl_ms=0, persistent=True, fields=fields, deleted=deleted,
        )
        return (await self.commit(ops)).status is CommitStatus.OK

    # ---- idempotent replays: one value per (client, Idempotency-Key) ----

    async def hold_idempotency_key(self, key: str, pending: bytes, ttl_s: int) -> bytes | None:
        """Take the key for a first request (None), or answer what it holds already."""
        if await self.redis.set(key, pending, nx=True, ex=ttl_s):
            return None
        held = await self.redis.get(key)
        return pending if held is None else bytes(held)

    async def renew_idempotency_key(self, key: str, pending: bytes, ttl_ms: int) -> bool:
        """Extend the hold of a request still in progress; False once the key holds anything else."""
        return bool(await self._renew_held(keys=[key], args=[pending, ttl_ms]))

    async def keep_idempotent_answer(self, key: str, answer: bytes, ttl_s: int) -> None:
        await self.redis.set(key, answer, ex=ttl_s)

    async def drop_idempotency_key(self, key: str) -> None:
        await self.redis.delete(key)


def _commit_result(reply: Any, keys: list[str]) -> CommitResult:
    status = CommitStatus(as_text(reply[0]))
    if status is CommitStatus.TAKEN:
        return CommitResult(status, keys[int(as_text(reply[1])) - 1])
    if status is CommitStatus.CONFLICT and isinstance(reply[-1], list):  # the record that won
        return CommitResult(status, as_text(reply[1]), hash_reply(reply[-1]))
    return CommitResult(status, as_text(reply[1]) if len(reply) > 1 else None)


def as_text(value: Any) -> str:
    """A Redis reply as text (clients with and without decode_responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
