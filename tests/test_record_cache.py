"""A process decides on its own copy of a record and lets the commit prove it current: no read
when it is, the winner's record from the commit's answer when another process moved it on, a
read whenever nothing would be committed. Two runtimes on one store stand for two processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.api.app import build_app
from service.record_cache import RecordCache
from service.runtime import Runtime, build_runtime
from service.store.client import StoreInfo
from tests.conftest import Api, free_port

WRONG = {"code": "000000"}


def reads_of(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids whose record `rt` reads from the store from now on."""
    seen: list[str] = []
    load = rt.store.load

    async def counted(verification_id: str) -> Verification | None:
        seen.append(verification_id)
        return await load(verification_id)

    monkeypatch.setattr(rt.store, "load", counted)
    return seen


def copies(rt: Runtime, result: str) -> float:
    return rt.metrics.registry.get_sample_value("veriflow_record_cache_total", {"result": result}) or 0.0


@pytest.fixture
async def other(api: Api) -> AsyncIterator[Api]:
    """A second process: its own runtime (and copies) on the same store, behind its own server."""
    rt = await build_runtime(api.rt.settings, clock=api.rt.clock, client=api.rt.store.redis,
                             store_info=StoreInfo("test", durable=False))
    server = TestServer(build_app(rt, simulator=False), host="127.0.0.1", port=free_port())
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Api(session, str(server.make_url("")).rstrip("/"), rt, server.app)
    await server.close()
    await rt.provider_sessions.close()
    await rt.callbacks.close()


async def test_a_step_on_a_kept_copy_reads_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    started = await api.start()
    reads = reads_of(api.rt, monkeypatch)
    status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", WRONG)
    assert (status, body["error"]["code"], body["verification"]["attempts_left"]) == (422, "4013", 2)
    assert reads == []
    assert copies(api.rt, "hit") == 1
    stored = await api.rt.store.redis.hgetall(api.rt.store.keys.record(started["id"]))
    assert (stored[b"attempts_left"], stored[b"version"]) == (b"2", b"2")
    kept = api.rt.transactor.records.get(started["id"])
    assert kept is not None
    assert (kept.version, kept.attempts_left) == (2, 2)


async def test_a_copy_another_process_moved_on_costs_no_attempt(
        api: Api, other: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other process takes a wrong code; this one's copy still says 3 left: its commit loses,
    the script answers the current record, and the code is counted on it (1 left, not 2)."""
    started = await api.start()
    path = f"/v1/verifications/{started['id']}/confirm"
    assert (await other.call("POST", path, WRONG))[1]["verification"]["attempts_left"] == 2
    reads = reads_of(api.rt, monkeypatch)
    status, body = await api.call("POST", path, WRONG)
    assert (status, body["error"]["code"], body["verification"]["attempts_left"]) == (422, "4013", 1)
    assert reads == [], "the winner's record came back with the lost commit"
    assert (copies(api.rt, "stale"), copies(api.rt, "hit")) == (1, 0)
    record = await api.rt.store.load(started["id"])
    assert record is not None
    assert (record.attempts_left, record.version) == (1, 3)


async def test_a_copy_that_would_change_nothing_is_read_first(api: Api, other: Api) -> None:
    """This process's copy is pending; the other process canceled it. A read changes nothing on
    the copy, so the record is read, and the answer is the canceled one."""
    started = await api.start()
    status, _ = await other.call("POST", f"/v1/verifications/{started['id']}/cancel")
    assert status == 200
    status, body = await api.call("GET", f"/v1/verifications/{started['id']}")
    assert (status, body["status"]) == (200, "canceled")
    assert copies(api.rt, "unchanged") == 1
    assert api.rt.transactor.records.get(started["id"]) is None  # ended: nothing more to keep


async def test_simultaneous_wrong_codes_over_two_processes_count_exactly_to_the_cap(api: Api, other: Api) -> None:
    started = await api.start()
    path = f"/v1/verifications/{started['id']}/confirm"
    answers = await asyncio.gather(*((api if n % 2 else other).call("POST", path, WRONG) for n in range(30)))
    codes = sorted(body["error"]["code"] for _, body in answers)
    assert (codes.count("4013"), codes.count("4301")) == (2, 28)
    record = await api.rt.store.load(started["id"])
    assert record is not None
    assert (record.status, record.attempts_left, record.version) == (Status.FAILED, 0, 4)


async def test_a_resend_reads_the_record(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resend counts a limit before its decision: it decides on the stored record, never a copy."""
    started = await api.start()
    reads = reads_of(api.rt, monkeypatch)
    status, _ = await api.call("POST", f"/v1/verifications/{started['id']}/resend")
    assert status == 200
    assert reads == [started["id"]]


NOW = 1_000_000


def record(verification_id: str, status: Status = Status.PENDING, version: int = 1,
           expires_at: int = NOW + 60_000) -> Verification:
    return Verification(id=verification_id, client_id="acme", channel=Channel.SMS, state="code_sent",
                        status=status, version=version, definition="d", created_at=0, expires_at=expires_at)


class TestRecordCache:
    def test_keeps_the_newest_copy_of_each_live_record(self) -> None:
        cache = RecordCache(10)
        cache.keep(record("a"), NOW)
        cache.keep(replace(record("a"), version=2), NOW)
        assert cache.get("a") == record("a", version=2)
        assert len(cache) == 1

    def test_an_ended_record_is_let_go(self) -> None:
        cache = RecordCache(10)
        cache.keep(record("a"), NOW)
        cache.keep(record("a", Status.FAILED, version=2), NOW)
        assert cache.get("a") is None
        assert len(cache) == 0

    def test_the_least_recently_committed_goes_first(self) -> None:
        cache = RecordCache(2)
        for name in "abc":
            cache.keep(record(name), NOW)
        cache.keep(replace(record("b"), version=2), NOW)
        cache.keep(record("d"), NOW)
        assert [cache.get(name) is not None for name in "abcd"] == [False, True, False, True]

    def test_records_past_their_deadline_are_let_go_oldest_first(self) -> None:
        """One another process ended is forgotten once its session would have ended anyway."""
        cache = RecordCache(10)
        cache.keep(record("a", expires_at=NOW + 10), NOW)
        cache.keep(record("b", expires_at=NOW + 20), NOW)
        verified = replace(record("c", Status.VERIFIED, expires_at=NOW + 5), result_expires_at=NOW + 600)
        cache.keep(verified, NOW)
        cache.keep(record("d"), NOW + 15)
        assert [cache.get(name) is not None for name in "abcd"] == [False, True, True, True]
        cache.keep(record("e"), NOW + 100)
        assert [cache.get(name) is not None for name in "abcde"] == [False, False, True, True, True]

    def test_capacity_zero_keeps_nothing(self) -> None:
        cache = RecordCache(0)
        cache.keep(record("a"), NOW)
        assert cache.get("a") is None
