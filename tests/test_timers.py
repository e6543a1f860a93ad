"""The timer worker fires claimed batches through the engine: every due session expires once,
a lost race is decided again, and a bad timer cannot hold back the others."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api


async def record_of(api: Api, verification_id: str) -> dict[bytes, bytes]:
    return dict(await api.rt.store.redis.hgetall(api.rt.store.keys.record(verification_id)))


async def started(api: Api, count: int) -> list[str]:
    return [(await api.start(phone=f"0101234{n:04d}"))["id"] for n in range(count)]


def conflicts(api: Api) -> float:
    return api.rt.metrics.registry.get_sample_value("veriflow_commit_conflicts_total") or 0.0


async def test_a_due_batch_expires_each_session_once(api: Api, clock: Any) -> None:
    ids = await started(api, 5)
    assert await api.rt.timers.run_once() == 0  # nothing is due yet
    clock.advance(api.rt.settings.sms.session_ttl_s + 1)
    assert await api.rt.timers.run_once() == 5
    for verification_id in ids:
        record = await record_of(api, verification_id)
        assert record[b"status"] == b"expired"
        assert record[b"version"] == b"2"  # created, then expired: one commit each
        assert record[b"last_code"] == b"4018"
        assert b"subject" not in record
    assert await api.rt.store.count_timers() == 0
    assert await api.rt.timers.run_once() == 0


async def test_a_timer_whose_verification_is_gone_is_dropped(api: Api, clock: Any) -> None:
    (verification_id,) = await started(api, 1)
    await api.rt.store.redis.delete(api.rt.store.keys.record(verification_id))
    clock.advance(api.rt.settings.sms.session_ttl_s + 1)
    assert await api.rt.timers.run_once() == 1
    assert await api.rt.store.count_timers() == 0


async def test_a_lost_race_is_decided_again(api: Api, clock: Any, monkeypatch: Any) -> None:
    """Another writer commits between the batch's read and its commit: that one is reloaded."""
    ids = await started(api, 3)
    clock.advance(api.rt.settings.sms.session_ttl_s + 1)
    store = api.rt.store
    load_many = store.load_many

    async def load_then_race(verification_ids: Any) -> Any:
        records = await load_many(verification_ids)
        if ids[1] in verification_ids:
            await store.redis.hincrby(api.rt.store.keys.record(ids[1]), "version", 1)
        return records

    monkeypatch.setattr(store, "load_many", load_then_race)
    before = conflicts(api)
    assert await api.rt.timers.run_once() == 3
    assert conflicts(api) == before + 1
    versions = [(await record_of(api, v))[b"version"] for v in ids]
    assert versions == [b"2", b"3", b"2"]  # the raced one: created, bumped, expired
    assert [(await record_of(api, v))[b"status"] for v in ids] == [b"expired"] * 3
    assert await api.rt.store.count_timers() == 0


async def test_a_malformed_timer_does_not_hold_back_the_batch(api: Api, clock: Any) -> None:
    (verification_id,) = await started(api, 1)
    shard = int(verification_id[:4], 16)
    await api.rt.store.redis.zadd(api.rt.store.keys.timers(shard), {"not-a-timer": 1})
    clock.advance(api.rt.settings.sms.session_ttl_s + 1)
    assert await api.rt.timers.run_once() == 2
    assert (await record_of(api, verification_id))[b"status"] == b"expired"
    # The malformed one is logged and dropped (nothing could ever fire it); the real one is gone.
    assert await api.rt.store.redis.zrange(api.rt.store.keys.timers(shard), 0, -1) == []
