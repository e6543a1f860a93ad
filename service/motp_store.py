"""Reading and writing mOTP users: alone (enrolment, unlock) or as the companion of the
verification whose decision changed them (a code counted or accepted)."""

from __future__ import annotations

from machines import motp_user
from machines.motp_user import MotpUser
from service.keys import Keys, motp_user_key, motp_user_shard
from service.store import CommitOps, CommitStatus, Companion, Store


def companion(keys: Keys, before: MotpUser, after: MotpUser) -> Companion:
    fields, deleted = motp_user.changed_fields(before, after)
    return Companion(motp_user_key(keys, after.ref), before.version, before.version + 1, fields, deleted)


async def load(store: Store, ref: str) -> MotpUser | None:
    raw = await store.redis.hgetall(motp_user_key(store.keys, ref))
    return motp_user.from_fields(raw) if raw else None


async def save(store: Store, before: MotpUser | None, after: MotpUser) -> bool:
    """Compare-and-set the user on its own; False when somebody else changed it first."""
    fields, deleted = motp_user.changed_fields(before, after)
    shard = motp_user_shard(store.keys, after.ref)
    expected = before.version if before is not None else 0
    ops = CommitOps(
        record_key=motp_user_key(store.keys, after.ref), timers_key=store.keys.timers(shard),
        outbox_key=store.keys.outbox(shard), expected_version=expected, new_version=expected + 1,
        ttl_ms=0, persistent=True, fields=fields, deleted=deleted,
    )
    return (await store.commit(ops)).status is CommitStatus.OK
