"""The commit's companion record (an mOTP user beside its verification), on fakeredis and on a
real redis-server: both hashes change in one step, or neither."""

from __future__ import annotations

from typing import Any

from service.store.keys import Keys, motp_user_key, motp_user_shard
from service.store.store import CommitOps, CommitStatus, Companion, Store
from tests.conftest import without_token

KEYS = Keys(4)
USER = motp_user_key(KEYS, "u" * 24)
SHARD = motp_user_shard(KEYS, "u" * 24)
VID = KEYS.new_id(SHARD)


def ops(expected: int, companion: Companion | None, **extra: Any) -> CommitOps:
    return CommitOps(
        record_key=KEYS.record(VID), timers_key=KEYS.timers(SHARD), outbox_key=KEYS.outbox(SHARD),
        expected_version=expected, new_version=expected + 1, ttl_ms=60_000,
        fields={"state": f"s{expected + 1}"}, companion=companion, **extra,
    )


class TestCompanion:
    async def test_both_records_change_together(self, store_client):
        """The companion is written with its own version, and never expires."""
        store = Store(store_client, KEYS)
        await store_client.hset(USER, mapping={"version": "4", "failures": "1", "gone": "x"})
        companion = Companion(USER, 4, 5, fields={"failures": "2"}, deleted=["gone"])
        assert (await store.commit(ops(0, companion, outbox=[b"{}"]))).status is CommitStatus.OK
        assert without_token(await store_client.hgetall(USER)) == {b"version": b"5", b"failures": b"2"}
        assert without_token(await store_client.hgetall(KEYS.record(VID))) == {b"version": b"1", b"state": b"s1"}
        assert await store_client.pttl(USER) == -1
        assert await store_client.xlen(KEYS.outbox(SHARD)) == 1

    async def test_a_stale_companion_writes_nothing(self, store_client):
        """A lost race on the companion aborts the whole commit, the record's writes included."""
        store = Store(store_client, KEYS)
        await store_client.hset(USER, mapping={"version": "5", "failures": "2"})
        stale = Companion(USER, 4, 5, fields={"failures": "1"})
        result = await store.commit(ops(0, stale, timers_add=[(1, "t")], outbox=[b"{}"]))
        assert (result.status, result.detail) == (CommitStatus.CONFLICT, "5")
        assert await store_client.exists(KEYS.record(VID), KEYS.timers(SHARD), KEYS.outbox(SHARD)) == 0
        assert without_token(await store_client.hgetall(USER)) == {b"version": b"5", b"failures": b"2"}

    async def test_a_check_only_companion_is_not_written(self, store_client):
        """Same expected and new version: the companion's version is checked, nothing written."""
        store = Store(store_client, KEYS)
        await store_client.hset(USER, mapping={"version": "2", "failures": "0"})
        assert (await store.commit(ops(0, Companion(USER, 2, 2)))).status is CommitStatus.OK
        assert without_token(await store_client.hgetall(USER)) == {b"version": b"2", b"failures": b"0"}
        result = await store.commit(ops(1, Companion(USER, 1, 1)))
        assert (result.status, result.detail) == (CommitStatus.CONFLICT, "2")
        assert await store_client.hget(KEYS.record(VID), "state") == b"s1"

    async def test_a_persistent_record_has_no_expiry(self, store_client):
        """A user written on its own (enrolment, unlock) is created and updated without a TTL."""
        store = Store(store_client, KEYS)
        base: dict[str, Any] = {"record_key": USER, "timers_key": KEYS.timers(SHARD), "outbox_key": KEYS.outbox(SHARD),
                                "ttl_ms": 0, "persistent": True}
        first = CommitOps(expected_version=0, new_version=1, fields={"device": "1"}, **base)
        assert (await store.commit(first)).status is CommitStatus.OK
        second = CommitOps(expected_version=1, new_version=2, fields={"device": "2"}, **base)
        assert (await store.commit(second)).status is CommitStatus.OK
        assert without_token(await store_client.hgetall(USER)) == {b"version": b"2", b"device": b"2"}
        assert await store_client.pttl(USER) == -1
