"""The Redis store's atomic steps, on fakeredis and on a real redis-server."""

from __future__ import annotations

from typing import Any

from service.store.keys import Keys
from service.store.store import CommitOps, CommitStatus, Store
from tests.conftest import without_token

KEYS = Keys(4)
VID = KEYS.new_id(2)


def ops(expected: int, **extra: Any) -> CommitOps:
    base: dict[str, Any] = {
        "record_key": KEYS.record(VID), "timers_key": KEYS.timers(2), "outbox_key": KEYS.outbox(2),
        "expected_version": expected, "new_version": expected + 1, "ttl_ms": 60_000,
        "fields": {"state": f"s{expected + 1}"},
    }
    base.update(extra)
    return CommitOps(**base)


class TestCommit:
    async def test_create_then_compare_and_set(self, store_client):
        """Version 0 creates; the next commit must name version 1; a stale one is refused."""
        store = Store(store_client, KEYS)
        assert (await store.commit(ops(0))).status is CommitStatus.OK
        stale = await store.commit(ops(0, fields={"state": "stale"}))
        assert (stale.status, stale.detail) == (CommitStatus.CONFLICT, "1")
        second = ops(1)
        assert (await store.commit(second)).status is CommitStatus.OK
        raw = await store_client.hgetall(KEYS.record(VID))
        assert raw == {b"version": b"2", b"state": b"s2", b"_c": second.token.encode()}

    async def test_one_commit_writes_record_timers_outbox_and_ttl_together(self, store_client):
        """Fields, deletions, timers, outbox entries, claims and the record's expiry in one step."""
        store = Store(store_client, KEYS)
        claim = KEYS.tx_claim(2, "acme", "tx-1")
        await store.commit(ops(0, fields={"state": "a", "gone": "x"}, timers_add=[(500, "t1"), (900, "t2")],
                               outbox=[b'{"kind":"sms"}'], claims=[(claim, VID, 30_000)]))
        await store.commit(ops(1, deleted=["gone"], timers_remove=["t1"], outbox=[b'{"kind":"notify"}'],
                               releases=[(claim, VID)]))
        assert without_token(await store_client.hgetall(KEYS.record(VID))) == {b"version": b"2", b"state": b"s2"}
        assert await store_client.zrange(KEYS.timers(2), 0, -1, withscores=True) == [(b"t2", 900.0)]
        entries = await store_client.xrange(KEYS.outbox(2))
        assert [fields[b"e"] for _, fields in entries] == [b'{"kind":"sms"}', b'{"kind":"notify"}']
        assert await store_client.exists(claim) == 0
        assert 0 < await store_client.pttl(KEYS.record(VID)) <= 60_000

    async def test_a_taken_claim_writes_nothing(self, store_client):
        """Validation before the first write: a held claim aborts the whole commit."""
        store = Store(store_client, KEYS)
        claim = KEYS.tx_claim(2, "acme", "tx-1")
        await store_client.set(claim, "another-verification")
        result = await store.commit(ops(0, timers_add=[(1, "t")], outbox=[b"{}"], claims=[(claim, VID, 1000)]))
        assert (result.status, result.detail) == (CommitStatus.TAKEN, claim)
        assert await store_client.exists(KEYS.record(VID), KEYS.timers(2), KEYS.outbox(2)) == 0
        assert await store_client.get(claim) == b"another-verification"


class TestLostRace:
    async def test_a_lost_race_answers_the_record_that_won(self, store_client):
        """The caller decides again on it without another read; nothing of the loser is written."""
        store = Store(store_client, KEYS)
        won = ops(0, fields={"state": "won"})
        assert (await store.commit(won)).status is CommitStatus.OK
        lost = await store.commit(ops(0, fields={"state": "lost"}, outbox=[b"e"]))
        assert (lost.status, lost.detail) == (CommitStatus.CONFLICT, "1")
        assert lost.current == {b"version": b"1", b"state": b"won", b"_c": won.token.encode()}
        assert await store_client.xlen(KEYS.outbox(2)) == 0

    async def test_a_record_gone_answers_an_empty_one(self, store_client):
        """A commit on a record that expired meanwhile (its copy still held) creates nothing."""
        store = Store(store_client, KEYS)
        gone = await store.commit(ops(3))
        assert (gone.status, gone.detail, gone.current) == (CommitStatus.CONFLICT, "0", {})
        assert gone.current_record() is None
        assert await store_client.exists(KEYS.record(VID)) == 0


    async def test_a_server_that_lost_its_scripts_gets_the_commit_script_again(self, store_client):
        """A restarted or failed-over server answers NOSCRIPT: the script is loaded and the commit
        goes through, once."""
        store = Store(store_client, KEYS)
        await store_client.script_flush()
        assert (await store.commit(ops(0))).status is CommitStatus.OK
        await store_client.script_flush()
        assert (await store.commit(ops(1))).status is CommitStatus.OK
        assert await store_client.hget(KEYS.record(VID), "version") == b"2"


class TestTimers:
    async def test_claim_leases_due_timers(self, store_client):
        """Due timers are handed out once per lease; a dead worker's claim comes due again."""
        store = Store(store_client, KEYS)
        await store_client.zadd(KEYS.timers(1), {"due-1": 100, "due-2": 200, "later": 10_000})
        assert sorted(await store.claim_due_timers(1, now_ms=300, lease_ms=1000, batch=10)) == ["due-1", "due-2"]
        assert await store.claim_due_timers(1, now_ms=400, lease_ms=1000, batch=10) == []
        assert sorted(await store.claim_due_timers(1, now_ms=1300, lease_ms=1000, batch=10)) == ["due-1", "due-2"]
        await store.drop_timer(1, "due-1")
        assert await store_client.zscore(KEYS.timers(1), "due-1") is None
        assert await store_client.zscore(KEYS.timers(1), "later") == 10_000

    async def test_claim_respects_the_batch(self, store_client):
        """A claim takes at most `batch` timers, earliest first."""
        store = Store(store_client, KEYS)
        await store_client.zadd(KEYS.timers(0), {f"t{i}": i for i in range(10)})
        assert await store.claim_due_timers(0, now_ms=100, lease_ms=1000, batch=3) == ["t0", "t1", "t2"]
        assert await store.count_timers() == 10


class TestCommitSentAgain:
    async def test_the_same_commit_sent_twice_is_applied_once_and_answered_ok(self, store_client):
        """A client that lost the answer and sends the same call again (a retried connection)
        finds its commit applied: ok, not a lost race, and nothing written twice."""
        store = Store(store_client, KEYS)
        first = ops(0, fields={"state": "a"}, timers_add=[(500, "t1")], outbox=[b"e1"])
        assert (await store.commit(first)).status is CommitStatus.OK
        assert (await store.commit(first)).status is CommitStatus.OK
        assert await store_client.xlen(KEYS.outbox(2)) == 1
        assert await store_client.zcard(KEYS.timers(2)) == 1
        other = ops(0, fields={"state": "b"})  # another commit from the same version: a lost race
        assert (await store.commit(other)).status is CommitStatus.CONFLICT
        assert await store_client.hget(KEYS.record(VID), "state") == b"a"
        assert await store_client.hget(KEYS.record(VID), "version") == b"1"
